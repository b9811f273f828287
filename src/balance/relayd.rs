//! relayd's host selection, as `relay_from_table()` in usr.sbin/relayd/relay.c does it, plus
//! pf's `least-states` pool (sys/net/pf_lb.c `pf_map_addr`, PF_POOL_LEASTSTATES) that relayd
//! hands to pf for redirects.
//!
//! Hosts are the table's hosts in configuration order; `up[i]` says whether host `i` may be
//! chosen. relayd tests `!table->conf.check || host->up == HOST_UP`; carpio's control plane
//! passes all-`true` for an unchecked table, which is the same thing. Every function returns
//! `None` when no host is up (relayd: "no active hosts"), which the data plane counts as
//! `drop_no_backend`.
//!
//! relayd caps relay tables at 32 hosts (`RELAY_MAXHOSTS`), which makes its `idx >= 32` check
//! in the hash loop unreachable; carpio takes tables of any size and `p % n < n` always.
//!
//! Pure functions over slices: no allocation, no panics (all indexing is checked).

use super::Key;
use siphasher::sip::SipHasher24;
use std::hash::Hasher;
use std::net::IpAddr;

/// `RELAY_MAX_HASH_RETRIES` (relayd.h): hash candidates tried before walking the list.
pub const MAX_HASH_RETRIES: usize = 5;

fn is_up(up: &[bool], i: usize) -> bool {
    up.get(i).copied().unwrap_or(false)
}

/// relayd's fallback after the first candidate: walk forward from `from` to the end of the
/// list, then from the head (relay.c: `TAILQ_NEXT` loop, then `TAILQ_FOREACH`).
pub fn walk_forward(up: &[bool], from: usize) -> Option<usize> {
    let tail = up.get(from..).unwrap_or(&[]);
    if let Some(i) = tail.iter().position(|&u| u) {
        return Some(from + i);
    }
    up.iter().position(|&u| u)
}

/// `mode roundrobin`: start at the table's index (reset to 0 past the end), walk forward to an
/// up host, then set the index to the chosen host + 1.
pub fn roundrobin(up: &[bool], index: &mut usize) -> Option<usize> {
    if *index >= up.len() {
        *index = 0;
    }
    let chosen = walk_forward(up, *index)?;
    *index = chosen + 1;
    Some(chosen)
}

/// `mode random`: a uniform index in `0..n` (relayd: `arc4random_uniform(nhosts)`), then walk
/// forward to an up host. `uniform` is the caller's PRNG draw.
pub fn random(up: &[bool], uniform: impl FnOnce(usize) -> usize) -> Option<usize> {
    if up.is_empty() {
        return None;
    }
    walk_forward(up, uniform(up.len()))
}

/// The hash modes' selection from `p = SipHash24_End(...)`: up to `min(n, 5)` tries of
/// `idx = p % n`, taking the host if it is up, else `p >>= 1`; then walk forward from the last
/// candidate.
pub fn from_hash(up: &[bool], mut p: u64) -> Option<usize> {
    let n = up.len();
    if n == 0 {
        return None;
    }
    let mut idx = 0;
    for _ in 0..n.min(MAX_HASH_RETRIES) {
        idx = (p % n as u64) as usize;
        if is_up(up, idx) {
            return Some(idx);
        }
        p >>= 1;
    }
    walk_forward(up, idx)
}

/// Feeds an address as `relay_hash_addr()` does: the 4 or 16 address bytes, then, if given,
/// the port as an `in_port_t` in network byte order.
fn feed(h: &mut SipHasher24, addr: IpAddr, port: Option<u16>) {
    match addr {
        IpAddr::V4(a) => h.write(&a.octets()),
        IpAddr::V6(a) => h.write(&a.octets()),
    }
    if let Some(port) = port {
        h.write(&port.to_be_bytes());
    }
}

fn hasher(key: &Key) -> SipHasher24 {
    SipHasher24::new_with_key(&key.0)
}

/// `mode source-hash`: SipHash-2-4 of the client address (no port).
pub fn source_hash_value(key: &Key, client: IpAddr) -> u64 {
    let mut h = hasher(key);
    feed(&mut h, client, None);
    h.finish()
}

/// `mode loadbalance`: client address, then listen address and listen port.
pub fn loadbalance_value(key: &Key, client: IpAddr, listen: IpAddr, listen_port: u16) -> u64 {
    let mut h = hasher(key);
    feed(&mut h, client, None);
    feed(&mut h, listen, Some(listen_port));
    h.finish()
}

/// `mode hash`: listen address and listen port only (every client of one listener gets the
/// same host, unless an HTTP `hash` rule fed more data first, which layer 3 cannot do).
pub fn hash_value(key: &Key, listen: IpAddr, listen_port: u16) -> u64 {
    let mut h = hasher(key);
    feed(&mut h, listen, Some(listen_port));
    h.finish()
}

/// `mode least-states` (redirects; pf's PF_POOL_LEASTSTATES over the table of up hosts): from
/// the pool counter, iterate once over the up hosts and keep the first with strictly fewer
/// states, stopping early once a host with 0 states is the minimum; the counter is left where
/// the iteration stopped, so equal loads rotate like round-robin. relayd sets no pf weights,
/// so the load is the plain state count. `states[i]` missing counts as 0.
pub fn least_states(up: &[bool], states: &[u32], counter: &mut usize) -> Option<usize> {
    let n = up.len();
    let load = |i: usize| states.get(i).copied().unwrap_or(0);
    // pfr_pool_get: the entry at the counter, or the next one (the counter resets to the head
    // when its entry left the pool).
    let start = if *counter < n && is_up(up, *counter) {
        *counter
    } else {
        walk_forward(up, *counter)?
    };
    let mut best = start;
    let mut best_load = load(start);
    let mut cur = start;
    loop {
        cur = next_up(up, cur)?;
        if load(cur) < best_load {
            best = cur;
            best_load = load(cur);
        }
        if cur == start || best_load == 0 {
            break;
        }
    }
    *counter = cur;
    Some(best)
}

/// The next up host after `i`, wrapping.
fn next_up(up: &[bool], i: usize) -> Option<usize> {
    let after = i.checked_add(1)?;
    if let Some(j) = up.get(after..).and_then(|t| t.iter().position(|&u| u)) {
        return Some(after + j);
    }
    up.iter().position(|&u| u)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walk() {
        assert_eq!(walk_forward(&[false, true, false, true], 2), Some(3));
        assert_eq!(walk_forward(&[true, false, false, false], 2), Some(0));
        assert_eq!(walk_forward(&[false, false], 0), None);
        assert_eq!(walk_forward(&[true], 9), Some(0));
    }

    #[test]
    fn roundrobin_index_semantics() {
        let up = [true, false, true];
        let mut idx = 0;
        assert_eq!(roundrobin(&up, &mut idx), Some(0));
        assert_eq!(idx, 1);
        // Index 1 is down: walk to 2, index becomes 3.
        assert_eq!(roundrobin(&up, &mut idx), Some(2));
        assert_eq!(idx, 3);
        // Past the end: reset to 0.
        assert_eq!(roundrobin(&up, &mut idx), Some(0));
        assert_eq!(roundrobin(&[false, false], &mut idx), None);
    }

    #[test]
    fn hash_tries_then_walks() {
        // n = 3, p = 5: idx 2 (down), p = 2: idx 2 (down), p = 1: idx 1 (up).
        assert_eq!(from_hash(&[false, true, false], 5), Some(1));
        // n = 2, p = 3: idx 1 down, p = 1: idx 1 down; walk forward from 1 to the end (down),
        // then from the head: 0.
        assert_eq!(from_hash(&[true, false], 3), Some(0));
        assert_eq!(from_hash(&[], 3), None);
    }

    #[test]
    fn least_states_rotates_on_ties() {
        let up = [true, true, true];
        let mut c = 0;
        // All zero: the start host wins and the counter moves one on.
        assert_eq!(least_states(&up, &[0, 0, 0], &mut c), Some(0));
        assert_eq!(c, 1);
        assert_eq!(least_states(&up, &[0, 0, 0], &mut c), Some(1));
        // Full pass: minimum 1 at host 2, counter back at the start (2).
        assert_eq!(least_states(&up, &[5, 3, 1], &mut c), Some(2));
        assert_eq!(c, 2);
        // Down host skipped even with fewer states.
        assert_eq!(
            least_states(&[true, false, true], &[4, 0, 2], &mut c),
            Some(2)
        );
        assert_eq!(least_states(&[false; 3], &[], &mut c), None);
    }
}
