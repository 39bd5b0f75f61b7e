//! Layer-7 rule matchers: pure functions over parsed requests.

pub mod dns;
pub mod http;
pub mod kafka;
