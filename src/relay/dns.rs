//! The DNS relay's protocol core (relayd relay_udp.c `relay_dns_*`, shuffle.c), sans-IO: it
//! never touches a socket or a clock. The worker loop (relay/worker.rs) feeds it queries from
//! the listener socket and answers from the upstream sockets, with `now` as a parameter.
//!
//! ```text
//!  DNS header (RFC 1035 4.1.1), the only part the relay reads:
//!   0  1  2  3  4  5  6  7  8  9 10 11 12 13 14 15
//!  +--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+
//!  |                      ID                       |  OFF_ID
//!  +--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+
//!  |QR|  Opcode   |AA|TC|RD|RA|   Z    |   RCODE   |  OFF_FLAGS (QR = 0x80 of its first byte)
//!  +--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+
//!  |   QDCOUNT / ANCOUNT / NSCOUNT / ARCOUNT        |  (8 bytes, untouched)
//!  +--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+
//! ```
//!
//! - A query's ID is replaced by one drawn from a shuffled permutation of 1..=65535 ([`IdShuffle`],
//!   relayd `shuffle_generate16`): 0 is never used, no ID repeats within a cycle, and the
//!   permutation is redrawn when used up. The client's ID is restored on the answer.
//! - An answer is accepted only if its ID is pending AND it came from the backend the query was
//!   sent to (spec §9 item 16: relayd checks the ID alone on an unconnected socket; carpio's
//!   upstream sockets are connected, one per backend, and the core checks the backend too).
//! - Queries not answered within the relay's `session timeout` are dropped and counted.
//! - Packets shorter than the 12-byte header are dropped and counted, like relayd's
//!   `relay_dns_validate`.
//!
//! Nothing here panics on input: every access is checked and every reject is a named
//! [`Reject`].

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

/// DNS header length: shorter packets are dropped (relayd `relay_dns_validate`).
pub const HEADER_LEN: usize = 12;
/// Offset of the 16-bit ID.
pub const OFF_ID: usize = 0;
/// Offset of the flags byte that holds QR.
pub const OFF_FLAGS: usize = 2;
/// The QR bit (response) in the byte at [`OFF_FLAGS`].
pub const FLAG_QR: u8 = 0x80;
/// Number of IDs in one permutation cycle (1..=65535).
pub const ID_SPACE: usize = 65535;

/// Why a datagram was not relayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Shorter than the DNS header.
    Short,
    /// A response (QR set) on the listener socket.
    NotQuery,
    /// An answer whose ID is not pending.
    Unmatched,
    /// An answer with a pending ID from a backend the query was not sent to.
    WrongSource,
    /// The drawn ID is still pending from a previous cycle (an answer slower than 65535
    /// queries); the query is dropped rather than the older one overwritten.
    IdBusy,
}

/// relayd shuffle.c: a permutation of 1..=65535 drawn with Fisher–Yates (Knuth's algorithm P),
/// consumed in order, redrawn when used up.
pub struct IdShuffle {
    perm: Box<[u16]>,
    next: usize,
    rng: u64,
}

impl IdShuffle {
    /// A shuffle seeded by the caller (the worker mixes its index with the start time).
    pub fn new(seed: u64) -> IdShuffle {
        let perm: Box<[u16]> = (1..=u16::MAX).collect();
        let mut s = IdShuffle {
            perm,
            next: 0,
            rng: seed,
        };
        s.reshuffle();
        s
    }

    fn next_u64(&mut self) -> u64 {
        // SplitMix64, as balance::PickState.
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn reshuffle(&mut self) {
        for i in (1..self.perm.len()).rev() {
            // Multiply-shift reduction (Lemire); the bias over 2^64 is far below any use here.
            let j = ((u128::from(self.next_u64()) * (i as u128 + 1)) >> 64) as usize;
            self.perm.swap(i, j);
        }
        self.next = 0;
    }

    /// The next ID of the permutation; never 0.
    pub fn generate(&mut self) -> u16 {
        if self.next >= self.perm.len() {
            self.reshuffle();
        }
        let id = self.perm.get(self.next).copied().unwrap_or(1);
        self.next += 1;
        id
    }
}

/// A query waiting for its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    /// Where the answer goes.
    pub client: SocketAddr,
    /// The client's own ID (relayd `outkey`).
    pub client_id: u16,
    /// The backend the query went to (the worker's upstream socket index).
    pub backend: usize,
    /// The listener socket the query came in on (the answer leaves from it).
    pub listener: usize,
    pub deadline: Duration,
}

/// Where an accepted answer goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    pub client: SocketAddr,
    pub listener: usize,
}

/// The DNS relay's pending-query table of one worker and one relay.
pub struct Table {
    ids: IdShuffle,
    /// Indexed by relay ID (`inkey`); slot 0 is never used.
    pending: Box<[Option<Pending>]>,
    /// (deadline, id) in arrival order; the timeout is constant so deadlines are sorted.
    expiry: VecDeque<(Duration, u16)>,
    timeout: Duration,
    live: usize,
}

fn id_of(pkt: &[u8]) -> Option<u16> {
    let b = pkt.get(OFF_ID..OFF_ID + 2)?;
    Some(u16::from_be_bytes([*b.first()?, *b.get(1)?]))
}

fn set_id(pkt: &mut [u8], id: u16) {
    if let Some(b) = pkt.get_mut(OFF_ID..OFF_ID + 2) {
        b.copy_from_slice(&id.to_be_bytes());
    }
}

impl Table {
    /// `timeout` is the relay's `session timeout`.
    pub fn new(timeout: Duration, seed: u64) -> Table {
        Table {
            ids: IdShuffle::new(seed),
            pending: vec![None; ID_SPACE + 1].into_boxed_slice(),
            expiry: VecDeque::new(),
            timeout,
            live: 0,
        }
    }

    /// Queries waiting for an answer.
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// A query from `client` on `listener`, to be sent to `backend`: checks it, rewrites its
    /// ID in place and remembers it. Returns the relay ID now in the packet.
    pub fn handle_query(
        &mut self,
        now: Duration,
        client: SocketAddr,
        listener: usize,
        backend: usize,
        pkt: &mut [u8],
    ) -> Result<u16, Reject> {
        if pkt.len() < HEADER_LEN {
            return Err(Reject::Short);
        }
        let flags = pkt.get(OFF_FLAGS).copied().ok_or(Reject::Short)?;
        if flags & FLAG_QR != 0 {
            return Err(Reject::NotQuery);
        }
        let client_id = id_of(pkt).ok_or(Reject::Short)?;
        let id = self.ids.generate();
        let slot = self
            .pending
            .get_mut(usize::from(id))
            .ok_or(Reject::IdBusy)?;
        if slot.is_some() {
            return Err(Reject::IdBusy);
        }
        let deadline = now + self.timeout;
        *slot = Some(Pending {
            client,
            client_id,
            backend,
            listener,
            deadline,
        });
        self.live += 1;
        self.expiry.push_back((deadline, id));
        set_id(pkt, id);
        Ok(id)
    }

    /// Forgets a query whose send failed (so its slot does not wait for the timeout).
    pub fn cancel(&mut self, id: u16) {
        if let Some(slot) = self.pending.get_mut(usize::from(id))
            && slot.take().is_some()
        {
            self.live -= 1;
        }
    }

    /// An answer read from `backend`'s upstream socket: restores the client's ID in place and
    /// says where to send it.
    pub fn handle_answer(&mut self, backend: usize, pkt: &mut [u8]) -> Result<Answer, Reject> {
        if pkt.len() < HEADER_LEN {
            return Err(Reject::Short);
        }
        let id = id_of(pkt).ok_or(Reject::Short)?;
        let slot = self
            .pending
            .get_mut(usize::from(id))
            .ok_or(Reject::Unmatched)?;
        let p = slot.ok_or(Reject::Unmatched)?;
        if p.backend != backend {
            return Err(Reject::WrongSource);
        }
        *slot = None;
        self.live -= 1;
        set_id(pkt, p.client_id);
        Ok(Answer {
            client: p.client,
            listener: p.listener,
        })
    }

    /// When [`Table::handle_timeout`] next has work.
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.expiry.front().map(|(d, _)| *d)
    }

    /// Drops every query whose deadline has passed; returns how many were still pending.
    pub fn handle_timeout(&mut self, now: Duration) -> usize {
        let mut expired = 0;
        while let Some(&(deadline, id)) = self.expiry.front() {
            if deadline > now {
                break;
            }
            self.expiry.pop_front();
            if let Some(slot) = self.pending.get_mut(usize::from(id))
                && slot.is_some_and(|p| p.deadline == deadline)
            {
                *slot = None;
                self.live -= 1;
                expired += 1;
            }
        }
        expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> SocketAddr {
        "198.18.1.2:5353".parse().unwrap()
    }

    fn query(id: u16) -> Vec<u8> {
        let mut q = vec![0u8; 29];
        q[0..2].copy_from_slice(&id.to_be_bytes());
        q[2] = 0x01; // RD
        q[5] = 1; // QDCOUNT
        q
    }

    #[test]
    fn shuffle_is_a_permutation_without_zero_and_reshuffles() {
        let mut s = IdShuffle::new(42);
        let mut seen = vec![false; 65536];
        for _ in 0..ID_SPACE {
            let id = s.generate();
            assert_ne!(id, 0);
            assert!(!seen[usize::from(id)], "id {id} repeated within a cycle");
            seen[usize::from(id)] = true;
        }
        assert!(seen[1..].iter().all(|&b| b));
        // The second cycle is again a permutation, and a different order.
        let first: Vec<u16> = {
            let mut t = IdShuffle::new(42);
            (0..16).map(|_| t.generate()).collect()
        };
        let second: Vec<u16> = (0..16).map(|_| s.generate()).collect();
        assert_ne!(first, second);
        assert!(second.iter().all(|&i| i != 0));
    }

    #[test]
    fn shuffle_is_not_sequential() {
        let mut s = IdShuffle::new(7);
        let v: Vec<u16> = (0..8).map(|_| s.generate()).collect();
        assert_ne!(v, vec![1, 2, 3, 4, 5, 6, 7, 8]);
    }

    #[test]
    fn query_and_answer_round_trip() {
        let mut t = Table::new(Duration::from_secs(2), 1);
        let mut q = query(0xbeef);
        let id = t
            .handle_query(Duration::ZERO, client(), 3, 1, &mut q)
            .unwrap();
        assert_eq!(u16::from_be_bytes([q[0], q[1]]), id);
        assert_eq!(t.len(), 1);
        let mut a = q.clone();
        a[2] |= FLAG_QR;
        // From the wrong backend: refused, and still pending.
        assert_eq!(t.handle_answer(0, &mut a.clone()), Err(Reject::WrongSource));
        assert_eq!(
            t.handle_answer(1, &mut a),
            Ok(Answer {
                client: client(),
                listener: 3
            })
        );
        assert_eq!(&a[0..2], &[0xbe, 0xef]);
        assert!(t.is_empty());
        // A duplicate answer no longer matches.
        let mut dup = q.clone();
        assert_eq!(t.handle_answer(1, &mut dup), Err(Reject::Unmatched));
    }

    #[test]
    fn every_short_length_is_rejected() {
        let mut t = Table::new(Duration::from_secs(2), 1);
        let q = query(1);
        for len in 0..HEADER_LEN {
            let mut p = q[..len].to_vec();
            assert_eq!(
                t.handle_query(Duration::ZERO, client(), 0, 0, &mut p),
                Err(Reject::Short)
            );
            assert_eq!(t.handle_answer(0, &mut p), Err(Reject::Short));
        }
        let mut p = q[..HEADER_LEN].to_vec();
        assert!(
            t.handle_query(Duration::ZERO, client(), 0, 0, &mut p)
                .is_ok()
        );
    }

    #[test]
    fn responses_on_the_listener_are_rejected() {
        let mut t = Table::new(Duration::from_secs(2), 1);
        let mut q = query(1);
        q[2] |= FLAG_QR;
        assert_eq!(
            t.handle_query(Duration::ZERO, client(), 0, 0, &mut q),
            Err(Reject::NotQuery)
        );
    }

    #[test]
    fn unanswered_queries_time_out() {
        let mut t = Table::new(Duration::from_secs(2), 9);
        let mut ids = Vec::new();
        for i in 0..10u64 {
            let mut q = query(i as u16);
            ids.push(
                t.handle_query(Duration::from_millis(100 * i), client(), 0, 0, &mut q)
                    .unwrap(),
            );
        }
        assert_eq!(t.poll_timeout(), Some(Duration::from_secs(2)));
        // Answer the third so its expiry entry finds nothing.
        let mut a = query(ids[2]);
        a[0..2].copy_from_slice(&ids[2].to_be_bytes());
        t.handle_answer(0, &mut a).unwrap();
        assert_eq!(t.handle_timeout(Duration::from_millis(1999)), 0);
        assert_eq!(t.handle_timeout(Duration::from_millis(2450)), 4); // 0,1,3,4 (2 answered)
        assert_eq!(t.len(), 5);
        assert_eq!(t.handle_timeout(Duration::from_secs(60)), 5);
        assert!(t.is_empty());
        assert_eq!(t.poll_timeout(), None);
    }

    #[test]
    fn cancel_frees_the_slot() {
        let mut t = Table::new(Duration::from_secs(2), 1);
        let mut q = query(5);
        let id = t
            .handle_query(Duration::ZERO, client(), 0, 0, &mut q)
            .unwrap();
        t.cancel(id);
        assert!(t.is_empty());
        assert_eq!(t.handle_timeout(Duration::from_secs(5)), 0);
    }

    #[test]
    fn a_full_cycle_of_pending_ids_reports_busy() {
        let mut t = Table::new(Duration::from_secs(600), 3);
        for i in 0..ID_SPACE {
            let mut q = query(i as u16);
            t.handle_query(Duration::ZERO, client(), 0, 0, &mut q)
                .unwrap();
        }
        let mut q = query(0);
        assert_eq!(
            t.handle_query(Duration::ZERO, client(), 0, 0, &mut q),
            Err(Reject::IdBusy)
        );
        assert_eq!(t.len(), ID_SPACE);
    }
}
