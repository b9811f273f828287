//! carpio's L4 data plane building blocks: the per-core flow table, pf-like protocol state
//! and timeouts, packet rewrites (NAT, DSR, IPIP/GUE encapsulation, ICMP errors that follow
//! a flow) and flow hashes. See DESIGN.md "How a packet flows".
//!
//! Everything here is sans-IO and per core: no clock is read (time is a parameter), nothing
//! locks, and nothing allocates after construction. Input from the network never panics
//! these functions: frames are accessed with checked slicing and every reject is a named
//! counter ([`flow::Counter`], [`rewrite::Error`]).

pub mod encap;
pub mod flow;
pub mod hash;
pub mod rewrite;
pub mod snapshot;
pub mod state;
pub mod worker;

pub use flow::{FlowTable, FlowTableConfig};
pub use snapshot::{Snapshot, SnapshotCell};
pub use worker::{Worker, WorkerConfig};
