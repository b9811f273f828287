//! Packet views and `Repr`s with symmetric parse/emit.
//!
//! Standard headers are read and written through `pnet_packet` views; each protocol module adds
//! a validated `Repr` (plain data) with `parse` and `emit`. Parsing validates lengths once, at
//! the boundary; after that nothing in carpio indexes a frame out of bounds or panics on input
//! from the network.

pub mod carp;
pub mod checksum;
pub mod classify;
pub mod pfsync;
