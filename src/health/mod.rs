//! Host health: relayd's health-check engine (usr.sbin/relayd/hce.c). The pure tracker
//! (state, retries, scheduling), the probes (thin non-blocking I/O shells around pure verdict
//! functions) and the engine thread that runs both on one `mio` event loop.

pub mod engine;
pub mod probe;
pub mod tracker;

pub use engine::{Command, Handle, Update, spawn};
pub use tracker::Tracker;
