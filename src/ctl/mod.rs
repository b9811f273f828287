//! The control socket: protocol ([`proto`]), relayctl-compatible output ([`render`]), and the
//! client used by `carpioctl` ([`client`]).

pub mod client;
pub mod proto;
pub mod render;
pub mod server;
