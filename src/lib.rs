//! carpio: a kernel-bypass, packet-level load balancer bringing OpenBSD's carp(4), pfsync(4)
//! and relayd(8) to Linux. See `DESIGN.md` in the shared folder for the architecture.
#![deny(unsafe_code)]

pub mod balance;
pub mod counters;
pub mod health;
pub mod wire;
