//! Batched packet I/O. A worker owns a [`Batch`] of preallocated packet buffers; a [`Device`]
//! fills it on receive and transmits the packets the worker marked [`Verdict::Tx`]. Buffers are
//! allocated once, with headroom in front of every frame so encapsulation can grow a packet
//! without copying it (the AF_XDP UMEM frames have the same headroom).
//!
//! Implementations: [`pcap`] files (replay, fixtures), [`loopback`] (tests). The kernel-bypass
//! paths (AF_XDP, AF_PACKET) and pnet's datalink channel implement the same trait.

pub mod afpacket;
pub mod afxdp;
pub mod loopback;
pub mod pcap;
pub mod pnet;

use crate::wire::classify::LinkType;
use std::io;

/// Bytes reserved in front of every received frame for encapsulation headers
/// (outer IPv6 40 + UDP 8 + GUE 4 = 52; 128 leaves room for an Ethernet header and VLAN tags).
pub const HEADROOM: usize = 128;
/// Largest frame a buffer holds (a 9000-byte jumbo payload plus link headers). Longer frames are
/// counted as `drop_oversize` by the device and never reach a worker.
pub const FRAME_MAX: usize = 9216;
/// Default number of packets per batch.
pub const BATCH: usize = 64;

/// What the worker decided for a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Verdict {
    /// Not yet decided (a freshly received packet).
    #[default]
    None,
    /// Send the (possibly rewritten) frame out.
    Tx,
    /// Drop it; the worker has counted the reason.
    Drop,
    /// Not ours: leave it to the kernel (AF_PACKET: nothing to do; XDP already passed it; pcap:
    /// written to the output unchanged if the replay asks for pass-through).
    Pass,
}

/// One packet buffer: `HEADROOM + FRAME_MAX` bytes with the frame at `start..start + len`.
pub struct Packet {
    buf: Box<[u8]>,
    start: usize,
    len: usize,
    /// Receive time in nanoseconds (capture timestamp for pcap, receive time for live devices).
    pub ts_ns: u64,
    /// How the frame starts (set by the device; pcapng files may mix link types).
    pub link: LinkType,
    pub verdict: Verdict,
}

impl Default for Packet {
    fn default() -> Self {
        Self::new()
    }
}

impl Packet {
    pub fn new() -> Self {
        Self {
            buf: vec![0u8; HEADROOM + FRAME_MAX].into_boxed_slice(),
            start: HEADROOM,
            len: 0,
            ts_ns: 0,
            link: LinkType::Ethernet,
            verdict: Verdict::None,
        }
    }

    /// Replaces the content with `frame`; returns false (and leaves the packet empty) when the
    /// frame is longer than [`FRAME_MAX`].
    pub fn fill(&mut self, frame: &[u8], ts_ns: u64, link: LinkType) -> bool {
        self.start = HEADROOM;
        self.ts_ns = ts_ns;
        self.link = link;
        self.verdict = Verdict::None;
        match self.buf.get_mut(HEADROOM..HEADROOM + frame.len()) {
            Some(dst) => {
                dst.copy_from_slice(frame);
                self.len = frame.len();
                true
            }
            None => {
                self.len = 0;
                false
            }
        }
    }

    /// The frame.
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }

    /// The frame, mutable.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.start + self.len]
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Free bytes in front of the frame.
    #[inline]
    pub fn headroom(&self) -> usize {
        self.start
    }

    /// The whole buffer and the frame's position in it, for rewrites that move the frame start
    /// (encapsulation). Call [`Packet::set_bounds`] afterwards.
    #[inline]
    pub fn raw_mut(&mut self) -> (&mut [u8], usize, usize) {
        (&mut self.buf, self.start, self.len)
    }

    /// Sets the frame's position after a rewrite through [`Packet::raw_mut`]. Returns false and
    /// leaves the packet unchanged if the bounds do not fit the buffer.
    pub fn set_bounds(&mut self, start: usize, len: usize) -> bool {
        if start
            .checked_add(len)
            .is_some_and(|end| end <= self.buf.len())
        {
            self.start = start;
            self.len = len;
            true
        } else {
            false
        }
    }
}

/// A fixed set of packet buffers, allocated once per worker.
pub struct Batch {
    pkts: Vec<Packet>,
    n: usize,
}

impl Batch {
    pub fn new(capacity: usize) -> Self {
        Self {
            pkts: (0..capacity.max(1)).map(|_| Packet::new()).collect(),
            n: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.pkts.len()
    }

    /// Number of packets currently held.
    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    pub fn clear(&mut self) {
        self.n = 0;
    }

    /// The next free slot, or `None` when the batch is full. Call [`Batch::commit`] after filling it.
    pub fn slot(&mut self) -> Option<&mut Packet> {
        self.pkts.get_mut(self.n)
    }

    /// Counts the slot returned by [`Batch::slot`] as part of the batch.
    pub fn commit(&mut self) {
        if self.n < self.pkts.len() {
            self.n += 1;
        }
    }

    /// Appends a copy of `frame`; false when full or oversize.
    pub fn push(&mut self, frame: &[u8], ts_ns: u64, link: LinkType) -> bool {
        let filled = self.slot().is_some_and(|p| p.fill(frame, ts_ns, link));
        if filled {
            self.commit();
        }
        filled
    }

    pub fn iter(&self) -> impl Iterator<Item = &Packet> {
        self.pkts[..self.n].iter()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Packet> {
        self.pkts[..self.n].iter_mut()
    }

    pub fn as_mut_slice(&mut self) -> &mut [Packet] {
        &mut self.pkts[..self.n]
    }
}

crate::named_counters! {
    /// Device-level receive outcomes that never reach a worker.
    pub enum DevDrop {
        Oversize = "drop_oversize",
        LinkUnsupported = "drop_link_unsupported",
    }
}

/// Batched receive and transmit.
pub trait Device {
    /// Clears `batch` and fills it with up to its capacity of received frames. Returns the number
    /// received; 0 means nothing was available (or, for files, the end was reached — see
    /// [`Device::exhausted`]). Frames the device could not deliver are counted in `drops`.
    fn recv(
        &mut self,
        batch: &mut Batch,
        drops: &mut crate::counters::Counters<{ DevDrop::COUNT }>,
    ) -> io::Result<usize>;

    /// Transmits every packet of `batch` whose verdict is [`Verdict::Tx`]. Returns the number sent.
    fn send(&mut self, batch: &Batch) -> io::Result<usize>;

    /// True when a finite source (a file) has nothing more to deliver.
    fn exhausted(&self) -> bool {
        false
    }
}
