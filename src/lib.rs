//! carpio: a kernel-bypass, packet-level load balancer bringing OpenBSD's carp(4), pfsync(4)
//! and relayd(8) to Linux. See `DESIGN.md` in the shared folder for the architecture.
#![deny(unsafe_code)]

pub mod balance;
pub mod bench;
pub mod carp;
pub mod config;
pub mod counters;
pub mod ctl;
pub mod daemon;
pub mod dataplane;
pub mod health;
pub mod lab;
pub mod logging;
pub mod metrics;
pub mod pfsync;
pub mod phy;
pub mod relay;
pub mod replay;
pub mod route;
pub mod synth;
#[allow(unsafe_code)]
pub mod sys;
pub mod wire;
