//! The CLI commands besides the daemon: clients of its state directory
//! (`status`, `observe`), the policy tools and the lab.

pub mod lab;
pub mod observe;
pub mod policy;
pub mod status;

#[cfg(test)]
mod tests;
