//! Weighted Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable Software
//! Network Load Balancer", NSDI 2016, §3.4), with weights expressed as turn frequency the way
//! Katran's `MaglevBase`/`MaglevHashV2` does: in every round each backend adds its weight to a
//! credit and takes one turn (claims its next preferred free slot) per `max_weight` of credit,
//! so a backend's share of the table is proportional to its weight.
//!
//! Determinism across nodes: a backend's permutation (`offset`, `skip`) is SipHash-2-4 of its
//! stable name under two fixed keys ([`OFFSET_KEY`], [`SKIP_KEY`]), and backends take turns in
//! byte order of their names, never in insertion or HashMap order. Two nodes given the same set
//! of (name, weight, up) build bit-identical tables (as names), whatever order the configuration
//! listed the hosts in. The keys are part of the cluster protocol: changing them reshuffles
//! every active/active table, so they never change.
//!
//! The table holds the caller's backend index per slot. Lookup is one modulo and one load, no
//! allocation. A rebuild returns exactly the slots whose backend changed, which the control
//! plane ships as a diff (DESIGN.md style rule 7).
//!
//! Nothing here parses untrusted input; configuration mistakes are named [`MaglevError`]s and
//! lookups cannot panic (out-of-range reads return `None`).

use siphasher::sip::SipHasher24;
use std::hash::Hasher;

/// The paper's and Katran's default table size: prime, ~65 slots per backend at 1000 backends.
pub const DEFAULT_TABLE_SIZE: u32 = 65537;
/// Largest accepted table size; keeps `position + skip` within `u32` and memory bounded (64 MiB).
pub const MAX_TABLE_SIZE: u32 = 1 << 24;
/// Marks a slot with no backend (every backend down or weight 0).
pub const NO_BACKEND: u32 = u32::MAX;
/// SipHash key of a backend's `offset` (fixed forever, see the module doc).
pub const OFFSET_KEY: (u64, u64) = (0x6361_7270_696f_2d6d, 0x6167_6c65_762d_6f66);
/// SipHash key of a backend's `skip` (fixed forever, see the module doc).
pub const SKIP_KEY: (u64, u64) = (0x6361_7270_696f_2d6d, 0x6167_6c65_762d_736b);

/// One backend as the Maglev builder sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member<'a> {
    /// Stable identity shared by all nodes (host name or address as configured).
    pub name: &'a str,
    /// Relative weight; 0 takes no slots.
    pub weight: u32,
    /// Down backends take no slots.
    pub up: bool,
}

/// A refused Maglev configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaglevError {
    /// The table size is not prime (the permutation needs `skip` coprime with it).
    SizeNotPrime,
    /// The table size is below 2 or above [`MAX_TABLE_SIZE`].
    SizeOutOfRange,
    /// Two members share a name, so nodes could not agree on an order.
    DuplicateName,
    /// More members than slots, or more than fit an index in a slot.
    TooManyMembers,
}

impl std::fmt::Display for MaglevError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MaglevError::SizeNotPrime => "maglev table size must be prime",
            MaglevError::SizeOutOfRange => "maglev table size out of range",
            MaglevError::DuplicateName => "duplicate backend name in maglev table",
            MaglevError::TooManyMembers => "more backends than maglev table slots",
        })
    }
}

impl std::error::Error for MaglevError {}

/// A built Maglev lookup table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Maglev {
    table: Box<[u32]>,
}

/// Deterministic primality by trial division; sizes are at most 2^24, so at most ~2000 steps.
pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    if n.is_multiple_of(2) {
        return n == 2;
    }
    let mut d = 3u32;
    while d.saturating_mul(d) <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 2;
    }
    true
}

fn sip(key: (u64, u64), name: &str) -> u64 {
    let mut h = SipHasher24::new_with_keys(key.0, key.1);
    // `write` of raw bytes only: `Hash for str` would add a terminator and the integer writers
    // depend on host byte order.
    h.write(name.as_bytes());
    h.finish()
}

/// A backend's permutation of the table: slot j of its preference list is
/// `(offset + j * skip) mod size` (paper §3.4, pseudocode 1).
pub fn permutation(name: &str, size: u32) -> (u32, u32) {
    let m = u64::from(size);
    let offset = sip(OFFSET_KEY, name) % m;
    let skip = sip(SKIP_KEY, name) % (m - 1).max(1) + 1;
    // Both < size <= MAX_TABLE_SIZE, so they fit.
    (offset as u32, skip as u32)
}

struct Turn {
    index: u32,
    weight: u32,
    credit: u64,
    position: u32,
    skip: u32,
}

impl Maglev {
    /// An empty table of `size` slots (every lookup misses).
    pub fn empty(size: u32) -> Result<Maglev, MaglevError> {
        check_size(size)?;
        Ok(Maglev {
            table: vec![NO_BACKEND; size as usize].into_boxed_slice(),
        })
    }

    /// Builds the table for `members`; slot values are indices into `members`.
    pub fn build(size: u32, members: &[Member<'_>]) -> Result<Maglev, MaglevError> {
        check_size(size)?;
        if members.len() >= NO_BACKEND as usize || members.len() > size as usize {
            return Err(MaglevError::TooManyMembers);
        }
        let mut order: Vec<u32> = (0..members.len() as u32).collect();
        order.sort_unstable_by(|&a, &b| name_of(members, a).cmp(name_of(members, b)));
        if order
            .windows(2)
            .any(|w| matches!(w, [a, b] if name_of(members, *a) == name_of(members, *b)))
        {
            return Err(MaglevError::DuplicateName);
        }
        let mut turns: Vec<Turn> = order
            .iter()
            .filter_map(|&i| {
                let m = members.get(i as usize)?;
                (m.up && m.weight > 0).then(|| {
                    let (offset, skip) = permutation(m.name, size);
                    Turn {
                        index: i,
                        weight: m.weight,
                        credit: 0,
                        position: offset,
                        skip,
                    }
                })
            })
            .collect();
        let mut table = vec![NO_BACKEND; size as usize].into_boxed_slice();
        let max_weight = turns.iter().map(|t| u64::from(t.weight)).max().unwrap_or(0);
        if max_weight == 0 {
            return Ok(Maglev { table });
        }
        let mut filled = 0usize;
        let total = table.len();
        // Occupancy bitmap: the probe loop touches 8 KiB (L1-resident at M = 65537) instead of
        // the 256 KiB table; most of the build time is these random probes.
        let mut taken = vec![0u64; total.div_ceil(64)];
        'fill: loop {
            for t in turns.iter_mut() {
                t.credit += u64::from(t.weight);
                while t.credit >= max_weight {
                    t.credit -= max_weight;
                    // Walk this backend's preference list to its next free slot. Because size
                    // is prime and 1 <= skip < size, the list visits every slot, so a free one
                    // is always found while filled < total.
                    loop {
                        let pos = t.position;
                        t.position += t.skip;
                        if t.position >= size {
                            t.position -= size;
                        }
                        let bit = 1u64 << (pos & 63);
                        if let Some(word) = taken.get_mut((pos >> 6) as usize)
                            && *word & bit == 0
                        {
                            *word |= bit;
                            if let Some(slot) = table.get_mut(pos as usize) {
                                *slot = t.index;
                            }
                            break;
                        }
                    }
                    filled += 1;
                    if filled == total {
                        break 'fill;
                    }
                }
            }
        }
        Ok(Maglev { table })
    }

    /// Rebuilds in place for a new member list (set, weights or up/down changed) and returns
    /// the slots whose value changed, ascending. Same size as before.
    pub fn rebuild(&mut self, members: &[Member<'_>]) -> Result<Vec<u32>, MaglevError> {
        let next = Maglev::build(self.size(), members)?;
        let changed = diff(self, &next);
        *self = next;
        Ok(changed)
    }

    /// Backend index for a flow hash: `table[hash % size]`. O(1), no allocation.
    #[inline]
    pub fn lookup(&self, hash: u64) -> Option<usize> {
        let slot = hash % (self.table.len() as u64).max(1);
        match self.table.get(slot as usize) {
            Some(&b) if b != NO_BACKEND => Some(b as usize),
            _ => None,
        }
    }

    /// Number of slots.
    pub fn size(&self) -> u32 {
        self.table.len() as u32
    }

    /// The raw slots ([`NO_BACKEND`] for empty), for diffs, tests and `carpioctl`.
    pub fn slots(&self) -> &[u32] {
        &self.table
    }

    /// Overwrites one slot: how a receiver applies a shipped diff. Out-of-range slots are
    /// ignored and reported as `false`.
    pub fn set_slot(&mut self, slot: u32, backend: u32) -> bool {
        match self.table.get_mut(slot as usize) {
            Some(s) => {
                *s = backend;
                true
            }
            None => false,
        }
    }
}

/// Slots (ascending) whose value differs between two tables; slots present in only one table
/// (different sizes) count as changed.
pub fn diff(old: &Maglev, new: &Maglev) -> Vec<u32> {
    let len = old.table.len().max(new.table.len());
    (0..len)
        .filter(|&i| old.table.get(i) != new.table.get(i))
        .map(|i| i as u32)
        .collect()
}

fn name_of<'a>(members: &[Member<'a>], i: u32) -> &'a str {
    members.get(i as usize).map_or("", |m| m.name)
}

fn check_size(size: u32) -> Result<(), MaglevError> {
    if !(2..=MAX_TABLE_SIZE).contains(&size) {
        return Err(MaglevError::SizeOutOfRange);
    }
    if !is_prime(size) {
        return Err(MaglevError::SizeNotPrime);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(names: &[String]) -> Vec<Member<'_>> {
        names
            .iter()
            .map(|n| Member {
                name: n,
                weight: 1,
                up: true,
            })
            .collect()
    }

    #[test]
    fn primes() {
        assert!(is_prime(2) && is_prime(3) && is_prime(65537) && is_prime(251));
        assert!(!is_prime(0) && !is_prime(1) && !is_prime(4) && !is_prime(65535));
        assert!(!is_prime(65539 * 3));
    }

    #[test]
    fn size_checks() {
        assert_eq!(Maglev::empty(65536), Err(MaglevError::SizeNotPrime));
        assert_eq!(Maglev::empty(1), Err(MaglevError::SizeOutOfRange));
        assert_eq!(
            Maglev::empty(MAX_TABLE_SIZE + 1),
            Err(MaglevError::SizeOutOfRange)
        );
        assert_eq!(Maglev::empty(13).map(|m| m.size()), Ok(13));
    }

    #[test]
    fn small_table_is_full_and_even() {
        let names: Vec<String> = (0..3).map(|i| format!("b{i}")).collect();
        let m = Maglev::build(13, &members(&names)).unwrap();
        assert!(m.slots().iter().all(|&s| s < 3));
        let mut count = [0; 3];
        for &s in m.slots() {
            count[s as usize] += 1;
        }
        // 13 slots over 3 equal backends taking turns: 5, 4, 4 in some order.
        count.sort();
        assert_eq!(count, [4, 4, 5]);
    }

    #[test]
    fn duplicate_names_rejected() {
        let names = vec!["a".to_string(), "a".to_string()];
        assert_eq!(
            Maglev::build(13, &members(&names)),
            Err(MaglevError::DuplicateName)
        );
        let many: Vec<String> = (0..14).map(|i| format!("b{i}")).collect();
        assert_eq!(
            Maglev::build(13, &members(&many)),
            Err(MaglevError::TooManyMembers)
        );
    }

    #[test]
    fn all_down_misses() {
        let names = vec!["a".to_string()];
        let mut ms = members(&names);
        ms[0].up = false;
        let m = Maglev::build(7, &ms).unwrap();
        assert!(m.slots().iter().all(|&s| s == NO_BACKEND));
        assert_eq!(m.lookup(3), None);
    }

    #[test]
    fn lookup_is_modulo() {
        let names: Vec<String> = (0..5).map(|i| format!("b{i}")).collect();
        let m = Maglev::build(101, &members(&names)).unwrap();
        for h in [0u64, 1, 100, 101, 12345, u64::MAX] {
            assert_eq!(m.lookup(h), Some(m.slots()[(h % 101) as usize] as usize));
        }
    }
}
