//! pfsync(4) replication of carpio's flow table in OpenBSD's wire format.
//!
//! - [`state`]: carpio's [`FlowState`] and its documented mapping onto `pfsync_state`.
//! - [`replicator`]: the sans-IO [`Replicator`] (queues, coalescing, update requests, bulk
//!   update, carp demotion, deferral).
//! - [`convert`]: data-plane flows ↔ [`FlowState`], VIPs and backends mapped by address
//!   through each node's snapshot, creator ids ↔ the flow table's creator index.
//! - [`shell`]: the I/O thread (raw IP protocol 240 socket, TTL and source checks, optional
//!   HMAC) that connects the replicator to the workers' event and command queues.
//!
//! The wire format itself is `crate::wire::pfsync`. Nothing here but [`shell`]'s thread reads
//! a clock or touches a socket: time is a `Duration` since the caller's epoch, passed in.

pub mod convert;
pub mod replicator;
pub mod shell;
pub mod state;

pub use replicator::{BulkReq, Event, LocalEvent, Replicator, ReplicatorConfig, Stat};
pub use state::{FlowId, FlowState, Forward, Peer};
