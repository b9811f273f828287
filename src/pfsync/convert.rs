//! The data plane's flows ↔ pfsync's [`FlowState`]s.
//!
//! A data-plane [`Flow`] is compact and node-local: its VIP and backend are *indices* into this
//! node's [`Snapshot`], and its creator is a small index (0 = this node). A [`FlowState`] is
//! what travels: addresses, ports and the pf `(creatorid, id)`. Indices differ between nodes
//! (each node's snapshot numbers VIPs and hosts in its own config order and keeps holes of
//! removed hosts), so the receiving side maps VIP and backend **by address** through its own
//! snapshot; a state whose VIP, service or backend the receiver does not know is rejected with a
//! named reason ([`Reject`]) and the caller counts and skips it.
//!
//! | [`FlowState`] | from the data plane |
//! |---|---|
//! | `id` | `(creators.id_of(flow.id().creator), flow.id().id)` ([`Creators`]) |
//! | `proto`, `client` | the flow key (client stored v4-mapped for IPv4) |
//! | `vip` | `snapshot.vips[key.vip]`, `key.vip_port` |
//! | `backend` | `snapshot.host(flow.backend()).addr`, `flow.backend_port()` |
//! | `forward` | [`Forward::Route`] for one-sided flows (DSR, IPIP, GUE: pf's route-to), else [`Forward::Nat`] |
//! | `src`, `dst` peers | the pf peer states of [`Flow::track`]; sequence numbers are not tracked (zero) |
//! | `timeout` | the pf timeout class index of the flow |
//! | `created` | the flow's last-seen time (the table keeps no creation time; pf only uses `creation` for display) |
//! | `expire` | the flow's absolute expiry |
//! | `packets`, `bytes` | zero (the data plane does not count per flow) |
//!
//! Times: data-plane times are whole seconds since an epoch the caller chooses (the `now_secs`
//! passed to `Worker::process`); [`FlowState`] times are [`Duration`]s since the *same* epoch,
//! which is the contract between the pfsync shell and the workers.
//!
//! The reverse direction builds a `(Key, NewFlow)` with `Origin::Sync`, so the receiving
//! worker's flow table does not announce it back (pf's `pfsync_in_ins`). Nothing here panics on
//! any input: every lookup is checked and every failure is a [`Reject`].

use std::collections::HashMap;
use std::time::Duration;

use super::state::{FlowId, FlowState, Forward, Peer};
use crate::dataplane::flow::{self, Flow, Key, NewFlow, Origin};
use crate::dataplane::hash;
use crate::dataplane::snapshot::Snapshot;
use crate::dataplane::state::{Pftm, Track};

crate::named_counters! {
    /// Why a flow could not be converted (in either direction).
    pub enum Reject {
        /// The flow's VIP index or the state's VIP address is not in this node's snapshot.
        UnknownVip = "sync_unknown_vip",
        /// No service of this node listens on the state's VIP, protocol and port.
        UnknownService = "sync_unknown_service",
        /// The flow's backend index or the state's backend address is not in the snapshot.
        UnknownBackend = "sync_unknown_backend",
        /// The flow's creator index has no creator id (never given out by [`Creators`]).
        UnknownCreator = "sync_unknown_creator",
        /// All 255 peer creator indices are taken.
        CreatorsFull = "sync_creators_full",
        /// Client, VIP and backend addresses are not all of one family.
        AfMismatch = "sync_af_mismatch",
        /// The state's timeout index is not a class the data plane tracks.
        BadTimeout = "sync_bad_timeout",
        /// A peer state does not fit the flow table's 4-bit peer state.
        BadPeerState = "sync_bad_peer_state",
    }
}

/// Creator id ↔ creator index table (the flow table stores a `u8` creator; 0 is this node).
///
/// Indices are handed out on first sight and never reused, so an index stored in a flow
/// always names the same peer. 255 peers is far beyond a carp cluster (OpenBSD's carp has
/// at most 32 load-balancing nodes).
#[derive(Debug, Clone)]
pub struct Creators {
    /// `ids[i]` is the creator id of index `i`; `ids[0]` is ours.
    ids: Vec<u32>,
    by_id: HashMap<u32, u8>,
}

impl Creators {
    /// A table with only this node, whose pfsync creator id (pf's hostid) is `local`.
    pub fn new(local: u32) -> Self {
        let mut by_id = HashMap::new();
        by_id.insert(local, 0);
        Self {
            ids: vec![local],
            by_id,
        }
    }

    /// This node's creator id.
    pub fn local(&self) -> u32 {
        self.ids.first().copied().unwrap_or(0)
    }

    /// The creator id behind a stored index.
    pub fn id_of(&self, index: u8) -> Option<u32> {
        self.ids.get(usize::from(index)).copied()
    }

    /// The index of a creator id, if it has one.
    pub fn index_of(&self, creatorid: u32) -> Option<u8> {
        self.by_id.get(&creatorid).copied()
    }

    /// The index of a creator id, giving it the next free one on first sight.
    pub fn intern(&mut self, creatorid: u32) -> Result<u8, Reject> {
        if let Some(i) = self.index_of(creatorid) {
            return Ok(i);
        }
        let i = u8::try_from(self.ids.len()).map_err(|_| Reject::CreatorsFull)?;
        self.ids.push(creatorid);
        self.by_id.insert(creatorid, i);
        Ok(i)
    }

    /// Number of known creators, this node included.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// The replicated form of a data-plane flow, on this node's `snap` (see the module doc).
pub fn to_state(flow: &Flow, snap: &Snapshot, creators: &Creators) -> Result<FlowState, Reject> {
    let key = flow.key();
    let vip = snap
        .vips
        .get(usize::from(key.vip))
        .copied()
        .flatten()
        .ok_or(Reject::UnknownVip)?;
    let backend = snap
        .host(flow.backend())
        .map(|h| h.addr)
        .ok_or(Reject::UnknownBackend)?;
    let client = flow.client_addr();
    if client.is_ipv4() != vip.is_ipv4()
        || (!flow.one_sided() && backend.is_ipv4() != vip.is_ipv4())
    {
        return Err(Reject::AfMismatch);
    }
    let creatorid = creators
        .id_of(flow.id().creator)
        .ok_or(Reject::UnknownCreator)?;
    let track = flow.track();
    Ok(FlowState {
        id: FlowId {
            creatorid,
            id: flow.id().id,
        },
        proto: key.proto,
        client: (client, key.client_port),
        vip: (vip, key.vip_port),
        backend: (backend, flow.backend_port()),
        forward: if flow.one_sided() {
            Forward::Route
        } else {
            Forward::Nat
        },
        src: Peer {
            state: track.src,
            ..Peer::default()
        },
        dst: Peer {
            state: track.dst,
            ..Peer::default()
        },
        timeout: track.class as u8,
        created: secs(flow.last_seen()),
        expire: secs(flow.expire()),
        packets: [0, 0],
        bytes: [0, 0],
        state_flags: 0,
    })
}

/// The flow-table insert for a received state on this node's `snap`: VIP, service and backend
/// found by address, the creator id interned into `creators`, `Origin::Sync` so it is not
/// announced back.
pub fn to_flow(
    state: &FlowState,
    snap: &Snapshot,
    creators: &mut Creators,
) -> Result<(Key, NewFlow), Reject> {
    let (client, client_port) = state.client;
    let (vip, vip_port) = state.vip;
    let (backend, backend_port) = state.backend;
    if client.is_ipv4() != vip.is_ipv4() {
        return Err(Reject::AfMismatch);
    }
    let vip_index = snap
        .by_vip
        .get(&vip)
        .map(|e| e.index)
        .ok_or(Reject::UnknownVip)?;
    let (service, svc) = snap
        .service_for(vip, state.proto, vip_port)
        .ok_or(Reject::UnknownService)?;
    let backend_index = *snap.by_host.get(&backend).ok_or(Reject::UnknownBackend)?;
    let class = Pftm::from_index(state.timeout).ok_or(Reject::BadTimeout)?;
    // The flow table keeps each peer state in 4 bits (flow.rs `peers`).
    if state.src.state > 0x0f || state.dst.state > 0x0f {
        return Err(Reject::BadPeerState);
    }
    let creator = creators.intern(state.id.creatorid)?;
    let key = Key {
        proto: state.proto,
        client: hash::addr16(client),
        client_port,
        vip: vip_index,
        vip_port,
    };
    let new = NewFlow {
        service,
        backend: backend_index,
        backend_port,
        tcp_flags: 0,
        // The receiving VIP's configuration decides how a route-to flow is forwarded.
        one_sided: svc.forward.one_sided(),
        session_timeout: Some(svc.session_timeout),
        origin: Origin::Sync(
            flow::FlowId {
                creator,
                id: state.id.id,
            },
            Track {
                src: state.src.state,
                dst: state.dst.state,
                class,
            },
        ),
    };
    Ok((key, new))
}

/// The flow-table key of a state on this node's `snap` (to remove it; no backend needed).
pub fn key_of(state: &FlowState, snap: &Snapshot) -> Result<Key, Reject> {
    let (client, client_port) = state.client;
    let (vip, vip_port) = state.vip;
    if client.is_ipv4() != vip.is_ipv4() {
        return Err(Reject::AfMismatch);
    }
    let vip_index = snap
        .by_vip
        .get(&vip)
        .map(|e| e.index)
        .ok_or(Reject::UnknownVip)?;
    Ok(Key {
        proto: state.proto,
        client: hash::addr16(client),
        client_port,
        vip: vip_index,
        vip_port,
    })
}

fn secs(s: u32) -> Duration {
    Duration::from_secs(u64::from(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creators_intern_and_look_up() {
        let mut c = Creators::new(0xaabb_ccdd);
        assert_eq!(c.local(), 0xaabb_ccdd);
        assert_eq!(c.index_of(0xaabb_ccdd), Some(0));
        assert_eq!(c.intern(7), Ok(1));
        assert_eq!(c.intern(9), Ok(2));
        assert_eq!(c.intern(7), Ok(1));
        assert_eq!(c.id_of(2), Some(9));
        assert_eq!(c.id_of(3), None);
        assert_eq!(c.len(), 3);
        for id in 100..100 + 253 {
            assert!(c.intern(id).is_ok());
        }
        assert_eq!(c.len(), 256);
        assert_eq!(c.intern(5000), Err(Reject::CreatorsFull));
        assert_eq!(c.id_of(255), Some(352));
    }
}
