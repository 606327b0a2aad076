//! Health: passive outlier detection fed by live traffic, and active
//! checks run in the background. Both only flip per-backend atomics that
//! selection reads; neither ever blocks a pick.

pub mod active;
pub mod passive;
