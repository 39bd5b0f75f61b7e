//! The CLI commands besides the daemon: clients of its state directory
//! (`status`, `observe`) and the policy tools.

pub mod observe;
pub mod policy;
pub mod status;

#[cfg(test)]
mod tests;
