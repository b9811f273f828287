//! Host health: the pure tracker (state, retries, scheduling) and, later, the probes.

pub mod tracker;

pub use tracker::Tracker;
