//! AF_PACKET: a TPACKET_V3 or TPACKET_V2 receive ring (Documentation/networking/packet_mmap.rst)
//! in a PACKET_FANOUT hash group, with a classic BPF filter ([`super::cbpf`]) so only carpio's
//! traffic is copied into the ring, and transmission with sendmmsg(2).
//!
//! ```text
//!   ring = block_nr blocks of block_size bytes, mmap'ed
//!   block:  tpacket_block_desc { version, offset_to_priv, hdr.bh1 { block_status, num_pkts,
//!           offset_to_first_pkt, blk_len, seq_num, ts_first, ts_last } }
//!           then num_pkts × tpacket3_hdr { tp_next_offset, .., tp_snaplen, tp_len, tp_status,
//!           tp_mac, tp_net, .. } each followed (at tp_mac) by the frame
//! ```
//!
//! The kernel hands a whole block over by setting `block_status` to TP_STATUS_USER when it is
//! full or its retire timer fires (`tp_retire_blk_tov`, so a quiet link still delivers within
//! that many ms); we hand it back by writing TP_STATUS_KERNEL. Every offset and length read from
//! a block is checked against the block before use: a bad one ends that block
//! (`drop_packet_bad_block`), nothing panics; in V2 a slot whose frame would leave the slot is
//! handed back unread (`drop_packet_bad_frame`).
//!
//! TPACKET_V2 ([`RingVersion::V2`]) has no blocks to retire: the ring is `frame_nr` fixed slots
//! of `frame_size` bytes (never crossing a block), each starting with a `tpacket2_hdr` whose
//! `tp_status` the kernel sets to TP_STATUS_USER the moment the frame is written, and poll(2)
//! wakes on it (`tpacket_rcv` calls `sk_data_ready` per frame; `packet_poll` looks at the slot
//! before the kernel's head). So a quiet link delivers each frame at once, where V3 waits for the
//! block's retire timer (`tp_retire_blk_tov`, counted in jiffies: with HZ=250 "1 ms" is 4 ms), and
//! a loaded link still hands over whatever is ready in one batch. The price: a slot per frame
//! whatever its size, and one status word per frame to read and write back.
//!
//! ```text
//!   V2 slot i at (i / per_block) * block_size + (i % per_block) * frame_size:
//!           tpacket2_hdr { tp_status, tp_len, tp_snaplen, tp_mac, tp_net, tp_sec, tp_nsec, .. }
//!           then (at tp_mac) the frame, which must end inside the slot
//! ```
//!
//! AF_PACKET does not steal packets (feasibility.md §3): the kernel stack still sees every
//! frame, so a VIP's traffic must also be dropped after the tap — see [`super::nft`].
//!
//! libc lacks `TPACKET_V3` as a constant: it is 2 (`enum tpacket_versions` in if_packet.h).

use super::cbpf::Insn;
use crate::counters::Counters;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// `TPACKET_V3` from `enum tpacket_versions` (linux/if_packet.h); missing from libc.
pub const TPACKET_V3: libc::c_int = 2;
/// `TPACKET_V2` from `enum tpacket_versions` (linux/if_packet.h).
pub const TPACKET_V2: libc::c_int = 1;
/// ETH_P_ALL in network byte order, as socket(2) and sockaddr_ll want it.
const ETH_P_ALL_BE: u16 = (libc::ETH_P_ALL as u16).to_be();

// Offsets in a block (struct tpacket_block_desc, hdr.bh1 = struct tpacket_hdr_v1).
const BLK_OFF_STATUS: usize = 8;
const BLK_OFF_NUM_PKTS: usize = 12;
const BLK_OFF_FIRST_PKT: usize = 16;
// Offsets in a packet header (struct tpacket3_hdr).
const PKT_OFF_NEXT: usize = 0;
const PKT_OFF_SEC: usize = 4;
const PKT_OFF_NSEC: usize = 8;
const PKT_OFF_SNAPLEN: usize = 12;
const PKT_OFF_MAC: usize = 24;
// Offsets in a V2 frame slot (struct tpacket2_hdr) and its size.
const V2_OFF_STATUS: usize = 0;
const V2_OFF_LEN: usize = 4;
const V2_OFF_SNAPLEN: usize = 8;
const V2_OFF_MAC: usize = 12;
const V2_OFF_SEC: usize = 16;
const V2_OFF_NSEC: usize = 20;
const V2_HDR_LEN: usize = 32;
/// The kernel's TPACKET_ALIGNMENT: V2 slots are multiples of it.
const TPACKET_ALIGNMENT: u32 = 16;

crate::named_counters! {
    /// Frames an AF_PACKET ring could not deliver.
    pub enum PacketDrop {
        /// A block header or packet header pointed outside its block (rest of block skipped).
        BadBlock = "drop_packet_bad_block",
        /// A V2 frame slot whose header put the frame outside the slot (slot skipped).
        BadFrame = "drop_packet_bad_frame",
        /// A V2 frame longer than its slot, cut by the kernel (tp_len > tp_snaplen): never
        /// forwarded cut.
        Truncated = "drop_packet_truncated",
    }
}

/// Which TPACKET layout the receive ring uses (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RingVersion {
    /// Per-frame slots, each handed over as soon as it is written.
    V2,
    /// Packed blocks, handed over when full or when the retire timer fires.
    #[default]
    V3,
}

/// Ring geometry and membership.
#[derive(Debug, Clone)]
pub struct RingConfig {
    /// Bytes per block: a multiple of the page size.
    pub block_size: u32,
    pub block_nr: u32,
    /// Upper bound of one packet slot (frames are packed in V3; this bounds tp_snaplen). In V2
    /// every frame takes a whole slot of this size (a multiple of 16).
    pub frame_size: u32,
    /// Milliseconds after which the kernel hands over a partly filled block (V3 only).
    pub retire_ms: u32,
    pub version: RingVersion,
    /// PACKET_FANOUT group id shared by the workers of one interface (hash mode); `None` = no
    /// fanout.
    pub fanout_group: Option<u16>,
}

impl Default for RingConfig {
    fn default() -> Self {
        Self {
            block_size: 1 << 20,
            block_nr: 16,
            frame_size: 2048,
            retire_ms: 10,
            version: RingVersion::V3,
            fanout_group: None,
        }
    }
}

/// A V2 slot size (a multiple of 16, at least 2048) that holds a whole frame of an interface of
/// `mtu`: Ethernet header and two VLAN tags beyond the MTU, and the kernel's room before the
/// frame (tpacket2_hdr + sockaddr_ll, aligned: tp_mac is 66 for Ethernet in `tpacket_rcv`),
/// rounded up to 128.
pub fn v2_frame_size(mtu: u32) -> u32 {
    let need = mtu.saturating_add(14 + 8 + 128);
    need.div_ceil(TPACKET_ALIGNMENT)
        .saturating_mul(TPACKET_ALIGNMENT)
        .max(2048)
}

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn setsockopt<T>(fd: RawFd, level: libc::c_int, opt: libc::c_int, v: &T) -> io::Result<()> {
    // SAFETY: `v` points to a live `T` of the size passed.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (v as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// Opens an AF_PACKET SOCK_RAW socket receiving nothing yet (protocol 0 until bound).
fn packet_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the result is checked and owned right away.
    let raw =
        cvt(unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: `raw` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

fn bind(fd: RawFd, ifindex: u32) -> io::Result<()> {
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
    let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sa.sll_family = libc::AF_PACKET as u16;
    sa.sll_protocol = ETH_P_ALL_BE;
    sa.sll_ifindex = ifindex as libc::c_int;
    // SAFETY: `sa` is a valid sockaddr_ll of the size passed.
    cvt(unsafe {
        libc::bind(
            fd,
            (&sa as *const libc::sockaddr_ll).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// Attaches a classic BPF program (SO_ATTACH_FILTER).
pub fn attach_filter(fd: &impl AsRawFd, prog: &[Insn]) -> io::Result<()> {
    let insns: Vec<libc::sock_filter> = prog
        .iter()
        .map(|i| libc::sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect();
    let len = u16::try_from(insns.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "cBPF program too long"))?;
    let fprog = libc::sock_fprog {
        len,
        filter: insns.as_ptr().cast_mut(),
    };
    // `insns` outlives the call; the kernel copies the program.
    setsockopt(
        fd.as_raw_fd(),
        libc::SOL_SOCKET,
        libc::SO_ATTACH_FILTER,
        &fprog,
    )
}

/// A TPACKET_V3 or V2 receive ring bound to one interface.
pub struct Ring {
    // Unmapped before the socket closes (field order is drop order).
    map: NonNull<u8>,
    map_len: usize,
    fd: OwnedFd,
    block_size: usize,
    block_nr: usize,
    /// Cursor: current block, packets left in it, offset of the next packet.
    block: usize,
    left: u32,
    next: usize,
    held: bool,
    version: RingVersion,
    /// V2: slot size, slots per block, slot count, and the cursor (next slot to look at).
    frame_size: usize,
    per_block: usize,
    frame_nr: usize,
    frame: usize,
    pub drops: Counters<{ PacketDrop::COUNT }>,
}

// SAFETY: the mapping is owned by this value; the ring protocol (block_status) governs sharing
// with the kernel, not threads.
unsafe impl Send for Ring {}

impl Ring {
    /// Opens the ring on `ifname` (resolved in the calling thread's namespace): the filter is
    /// attached before bind so no unfiltered frame is ever queued; then the fanout group is
    /// joined if configured.
    pub fn new(ifname: &str, filter: &[Insn], cfg: &RingConfig) -> io::Result<Self> {
        let page = 4096u32;
        if cfg.block_size == 0
            || !cfg.block_size.is_multiple_of(page)
            || cfg.block_nr == 0
            || cfg.frame_size < 128
            || cfg.frame_size > cfg.block_size
            || (cfg.version == RingVersion::V2 && !cfg.frame_size.is_multiple_of(TPACKET_ALIGNMENT))
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "TPACKET geometry: block_size a page multiple, 128 <= frame_size <= block_size \
                 (V2: frame_size a multiple of 16)",
            ));
        }
        let ifindex = super::afxdp::ifindex(ifname)?;
        let fd = packet_socket()?;
        let raw = fd.as_raw_fd();
        attach_filter(&fd, filter)?;
        // A packet socket also taps frames the host sends (PACKET_OUTGOING), e.g. carpio's own
        // CARP advertisements sent through a raw socket; carpio wants only what arrives.
        let one: libc::c_int = 1;
        setsockopt(raw, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, &one)?;
        let frame_nr = (cfg.block_size / cfg.frame_size) * cfg.block_nr;
        match cfg.version {
            RingVersion::V3 => {
                setsockopt(raw, libc::SOL_PACKET, libc::PACKET_VERSION, &TPACKET_V3)?;
                let req = libc::tpacket_req3 {
                    tp_block_size: cfg.block_size,
                    tp_block_nr: cfg.block_nr,
                    tp_frame_size: cfg.frame_size,
                    tp_frame_nr: frame_nr,
                    tp_retire_blk_tov: cfg.retire_ms,
                    tp_sizeof_priv: 0,
                    tp_feature_req_word: 0,
                };
                setsockopt(raw, libc::SOL_PACKET, libc::PACKET_RX_RING, &req)?;
            }
            RingVersion::V2 => {
                setsockopt(raw, libc::SOL_PACKET, libc::PACKET_VERSION, &TPACKET_V2)?;
                // `packet_set_ring` wants tp_frame_nr = frames per block × blocks exactly.
                let req = libc::tpacket_req {
                    tp_block_size: cfg.block_size,
                    tp_block_nr: cfg.block_nr,
                    tp_frame_size: cfg.frame_size,
                    tp_frame_nr: frame_nr,
                };
                setsockopt(raw, libc::SOL_PACKET, libc::PACKET_RX_RING, &req)?;
            }
        }
        let map_len = cfg.block_size as usize * cfg.block_nr as usize;
        // SAFETY: maps the kernel's ring of an open packet socket; aliases nothing of ours.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_LOCKED,
                raw,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let map = NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap null"))?;
        let ring = Self {
            map,
            map_len,
            fd,
            block_size: cfg.block_size as usize,
            block_nr: cfg.block_nr as usize,
            block: 0,
            left: 0,
            next: 0,
            held: false,
            version: cfg.version,
            frame_size: cfg.frame_size as usize,
            per_block: (cfg.block_size / cfg.frame_size) as usize,
            frame_nr: frame_nr as usize,
            frame: 0,
            drops: Counters::default(),
        };
        bind(raw, ifindex)?;
        if let Some(g) = cfg.fanout_group {
            // The group has its own packet hook, which does not inherit the socket's
            // PACKET_IGNORE_OUTGOING: the group must ask for it too (net/packet/af_packet.c,
            // `fanout_add`).
            let typ = libc::PACKET_FANOUT_HASH | libc::PACKET_FANOUT_FLAG_IGNORE_OUTGOING;
            let arg: u32 = u32::from(g) | (typ << 16);
            setsockopt(raw, libc::SOL_PACKET, libc::PACKET_FANOUT, &arg)?;
        }
        Ok(ring)
    }

    /// The ring's bytes.
    fn bytes(&self) -> &[u8] {
        // SAFETY: `map`/`map_len` is our live mapping. The kernel writes only blocks whose
        // status is TP_STATUS_KERNEL; we read packet bytes only from blocks it handed over
        // (status TP_STATUS_USER, observed with Acquire in `status`).
        unsafe { std::slice::from_raw_parts(self.map.as_ptr(), self.map_len) }
    }

    fn status(&self, block: usize) -> &AtomicU32 {
        // SAFETY: block < block_nr, so the word at block*block_size + 8 is inside the mapping
        // and 4-aligned (blocks are page aligned); the kernel accesses it as a u32 with barriers.
        unsafe {
            &*self
                .map
                .as_ptr()
                .add(block * self.block_size + BLK_OFF_STATUS)
                .cast::<AtomicU32>()
        }
    }

    /// Offset of V2 slot `i` (< frame_nr): slots never cross a block.
    fn slot(&self, i: usize) -> usize {
        (i / self.per_block) * self.block_size + (i % self.per_block) * self.frame_size
    }

    fn slot_status(&self, i: usize) -> &AtomicU32 {
        let off = self.slot(i) + V2_OFF_STATUS;
        // An invariant of the cursor (kept below frame_nr by `recv_v2`), not input.
        assert!(i < self.frame_nr && off + 4 <= self.map_len);
        // SAFETY: i < frame_nr, so the slot lies inside the mapping (checked above); the slot
        // starts at a page-aligned block plus a multiple of frame_size (a multiple of 16), so
        // tp_status is 4-aligned; the kernel accesses it as a u32 with barriers.
        unsafe { &*self.map.as_ptr().add(off).cast::<AtomicU32>() }
    }

    fn u32_at(&self, off: usize) -> Option<u32> {
        let b = self.bytes().get(off..off.checked_add(4)?)?;
        Some(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u16_at(&self, off: usize) -> Option<u16> {
        let b = self.bytes().get(off..off.checked_add(2)?)?;
        Some(u16::from_ne_bytes([b[0], b[1]]))
    }

    /// Returns the current block to the kernel and moves to the next one.
    fn release_block(&mut self) {
        if self.held {
            // Release: pairs with the kernel's read of block_status before it refills the
            // block (`prb_lookup_block`/`smp_rmb`), so our reads of the block happen before.
            self.status(self.block)
                .store(libc::TP_STATUS_KERNEL, Ordering::Release);
            self.held = false;
            self.block = (self.block + 1) % self.block_nr;
        }
    }

    /// Calls `f(frame, ts_ns)` for up to `max` received frames; stops early when `f` returns
    /// false (the frame it was given is then delivered again on the next call). Returns the
    /// number of frames `f` accepted. Never blocks.
    pub fn recv_with(&mut self, max: usize, f: impl FnMut(&[u8], u64) -> bool) -> usize {
        match self.version {
            RingVersion::V3 => self.recv_v3(max, f),
            RingVersion::V2 => self.recv_v2(max, f),
        }
    }

    /// The ring's layout.
    pub fn version(&self) -> RingVersion {
        self.version
    }

    /// V2: walks the slots from the cursor while they are the user's, handing each back
    /// (TP_STATUS_KERNEL) once `f` took it. A slot whose header puts the frame outside the slot
    /// is handed back unread and counted.
    fn recv_v2(&mut self, max: usize, mut f: impl FnMut(&[u8], u64) -> bool) -> usize {
        let mut n = 0;
        // Bad slots are skipped without counting towards `max`: bound the walk by the ring.
        let mut looked = 0;
        while n < max && looked < self.frame_nr {
            looked += 1;
            // Acquire: pairs with the kernel's smp_wmb + `__packet_set_status` in
            // `tpacket_rcv`, so the frame it wrote is visible to our reads.
            let st = self.slot_status(self.frame).load(Ordering::Acquire);
            if st & libc::TP_STATUS_USER == 0 {
                break;
            }
            let slot = self.slot(self.frame);
            let hdr = (
                self.u32_at(slot + V2_OFF_SNAPLEN),
                self.u16_at(slot + V2_OFF_MAC),
                self.u32_at(slot + V2_OFF_SEC),
                self.u32_at(slot + V2_OFF_NSEC),
                self.u32_at(slot + V2_OFF_LEN),
            );
            let frame = match hdr {
                (Some(snap), Some(mac), Some(sec), Some(nsec), Some(len))
                    if usize::from(mac) >= V2_HDR_LEN
                        && usize::from(mac) + snap as usize <= self.frame_size =>
                {
                    let start = slot + usize::from(mac);
                    let ts = u64::from(sec) * 1_000_000_000 + u64::from(nsec);
                    // The kernel cuts a frame that does not fit its slot to the slot
                    // (`tpacket_rcv`: snaplen = frame_size - macoff) and says so in tp_len.
                    Some((start..start + snap as usize, ts, len > snap))
                }
                _ => None,
            };
            match frame {
                Some((_, _, true)) => self.drops.add(PacketDrop::Truncated.index(), 1),
                Some((range, ts, false)) => {
                    let ok = match self.bytes().get(range) {
                        Some(frame) => f(frame, ts),
                        None => true,
                    };
                    if !ok {
                        break;
                    }
                    n += 1;
                }
                None => self.drops.add(PacketDrop::BadFrame.index(), 1),
            }
            // Release: our reads of the slot happen before the kernel may refill it (it
            // checks tp_status == TP_STATUS_KERNEL in `packet_current_frame`).
            self.slot_status(self.frame)
                .store(libc::TP_STATUS_KERNEL, Ordering::Release);
            self.frame = (self.frame + 1) % self.frame_nr;
        }
        n
    }

    fn recv_v3(&mut self, max: usize, mut f: impl FnMut(&[u8], u64) -> bool) -> usize {
        let mut n = 0;
        while n < max {
            if !self.held {
                // Acquire: pairs with the kernel's smp_wmb + status store in
                // `prb_close_block`, so the packets it wrote are visible to our reads.
                let st = self.status(self.block).load(Ordering::Acquire);
                if st & libc::TP_STATUS_USER == 0 {
                    break;
                }
                let base = self.block * self.block_size;
                let (Some(num), Some(first)) = (
                    self.u32_at(base + BLK_OFF_NUM_PKTS),
                    self.u32_at(base + BLK_OFF_FIRST_PKT),
                ) else {
                    break;
                };
                self.held = true;
                self.left = num;
                self.next = first as usize;
            }
            if self.left == 0 {
                self.release_block();
                continue;
            }
            let base = self.block * self.block_size;
            let pkt = base + self.next;
            let hdr = (
                self.u32_at(pkt + PKT_OFF_NEXT),
                self.u32_at(pkt + PKT_OFF_SNAPLEN),
                self.u16_at(pkt + PKT_OFF_MAC),
                self.u32_at(pkt + PKT_OFF_SEC),
                self.u32_at(pkt + PKT_OFF_NSEC),
            );
            let (Some(next), Some(snap), Some(mac), Some(sec), Some(nsec)) = hdr else {
                self.drops.add(PacketDrop::BadBlock.index(), 1);
                self.left = 0;
                continue;
            };
            let start = pkt + mac as usize;
            let end = start + snap as usize;
            if self.next >= self.block_size || end > base + self.block_size {
                self.drops.add(PacketDrop::BadBlock.index(), 1);
                self.left = 0;
                continue;
            }
            let ts = u64::from(sec) * 1_000_000_000 + u64::from(nsec);
            let ok = match self.bytes().get(start..end) {
                Some(frame) => f(frame, ts),
                None => true,
            };
            if !ok {
                break;
            }
            n += 1;
            self.left -= 1;
            if self.left > 0 {
                // A zero next offset with packets left would loop on one packet: treat as bad.
                if next == 0 {
                    self.drops.add(PacketDrop::BadBlock.index(), 1);
                    self.left = 0;
                } else {
                    self.next += next as usize;
                }
            }
        }
        n
    }

    /// Waits up to `timeout` for a block (V3) or a frame (V2) (poll(2)).
    pub fn wait(&self, timeout: Duration) -> io::Result<bool> {
        let mut p = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN | libc::POLLERR,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
        // SAFETY: one valid pollfd.
        Ok(cvt(unsafe { libc::poll(&mut p, 1, ms) })? > 0)
    }
}

impl AsRawFd for Ring {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: exactly the mapping made in `new`; no borrow of it outlives `&self`.
        unsafe {
            libc::munmap(self.map.as_ptr().cast(), self.map_len);
        }
    }
}

/// Most frames one [`Sender::send`] call hands to sendmmsg.
pub const SEND_BATCH: usize = 64;

/// Transmits whole Ethernet frames on one interface with sendmmsg(2), bypassing the qdisc
/// (PACKET_QDISC_BYPASS: carpio's frames are already scheduled by the worker).
pub struct Sender {
    fd: OwnedFd,
}

impl Sender {
    pub fn new(ifname: &str) -> io::Result<Self> {
        let ifindex = super::afxdp::ifindex(ifname)?;
        let fd = packet_socket()?;
        // Receive nothing on this socket: it is bound with protocol 0.
        // SAFETY: sockaddr_ll is plain data; all-zero is valid.
        let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sa.sll_family = libc::AF_PACKET as u16;
        sa.sll_protocol = 0;
        sa.sll_ifindex = ifindex as libc::c_int;
        // SAFETY: valid sockaddr_ll of the size passed.
        cvt(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        })?;
        let one: libc::c_int = 1;
        setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_QDISC_BYPASS,
            &one,
        )?;
        Ok(Self { fd })
    }

    /// Sends up to [`SEND_BATCH`] frames in one sendmmsg; returns how many the kernel took
    /// (0 when its queue is full: EAGAIN/ENOBUFS are not errors). No allocation.
    pub fn send<'a>(&self, frames: impl IntoIterator<Item = &'a [u8]>) -> io::Result<usize> {
        // SAFETY: iovec and mmsghdr are plain C structs; all-zero is a valid value for both.
        let mut iov: [libc::iovec; SEND_BATCH] = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut msgs: [libc::mmsghdr; SEND_BATCH] = unsafe { std::mem::zeroed() };
        let mut n = 0;
        for (f, (v, m)) in frames.into_iter().zip(iov.iter_mut().zip(msgs.iter_mut())) {
            v.iov_base = f.as_ptr().cast_mut().cast();
            v.iov_len = f.len();
            m.msg_hdr.msg_iov = v;
            m.msg_hdr.msg_iovlen = 1;
            n += 1;
        }
        if n == 0 {
            return Ok(0);
        }
        // SAFETY: `msgs[..n]` point at `iov[..n]`, which point at frames borrowed for 'a; all
        // outlive the call, and the kernel only reads them (send direction).
        let rc = unsafe {
            libc::sendmmsg(
                self.fd.as_raw_fd(),
                msgs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::ENOBUFS) => Ok(0),
                _ => Err(e),
            };
        }
        Ok(rc as usize)
    }
}

impl AsRawFd for Sender {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;

    #[test]
    fn offsets_match_if_packet_h() {
        let bh1 = offset_of!(libc::tpacket_block_desc, hdr);
        assert_eq!(
            BLK_OFF_STATUS,
            bh1 + offset_of!(libc::tpacket_hdr_v1, block_status)
        );
        assert_eq!(
            BLK_OFF_NUM_PKTS,
            bh1 + offset_of!(libc::tpacket_hdr_v1, num_pkts)
        );
        assert_eq!(
            BLK_OFF_FIRST_PKT,
            bh1 + offset_of!(libc::tpacket_hdr_v1, offset_to_first_pkt)
        );
        assert_eq!(PKT_OFF_NEXT, offset_of!(libc::tpacket3_hdr, tp_next_offset));
        assert_eq!(PKT_OFF_SEC, offset_of!(libc::tpacket3_hdr, tp_sec));
        assert_eq!(PKT_OFF_NSEC, offset_of!(libc::tpacket3_hdr, tp_nsec));
        assert_eq!(PKT_OFF_SNAPLEN, offset_of!(libc::tpacket3_hdr, tp_snaplen));
        assert_eq!(PKT_OFF_MAC, offset_of!(libc::tpacket3_hdr, tp_mac));
        assert_eq!(
            TPACKET_V3,
            libc::tpacket_versions::TPACKET_V3 as libc::c_int
        );
        assert_eq!(
            TPACKET_V2,
            libc::tpacket_versions::TPACKET_V2 as libc::c_int
        );
        assert_eq!(V2_OFF_STATUS, offset_of!(libc::tpacket2_hdr, tp_status));
        assert_eq!(V2_OFF_LEN, offset_of!(libc::tpacket2_hdr, tp_len));
        assert_eq!(V2_OFF_SNAPLEN, offset_of!(libc::tpacket2_hdr, tp_snaplen));
        assert_eq!(V2_OFF_MAC, offset_of!(libc::tpacket2_hdr, tp_mac));
        assert_eq!(V2_OFF_SEC, offset_of!(libc::tpacket2_hdr, tp_sec));
        assert_eq!(V2_OFF_NSEC, offset_of!(libc::tpacket2_hdr, tp_nsec));
        assert_eq!(V2_HDR_LEN, size_of::<libc::tpacket2_hdr>());
    }

    #[test]
    fn geometry_is_checked() {
        let bad = RingConfig {
            block_size: 1000,
            ..RingConfig::default()
        };
        assert!(Ring::new("lo", &[], &bad).is_err());
        assert_eq!(v2_frame_size(1500), 2048);
        assert_eq!(v2_frame_size(9000), 9152);
        assert!(v2_frame_size(9000).is_multiple_of(TPACKET_ALIGNMENT));
        let unaligned = RingConfig {
            frame_size: 2000,
            version: RingVersion::V2,
            ..RingConfig::default()
        };
        assert!(Ring::new("lo", &[], &unaligned).is_err());
    }
}
