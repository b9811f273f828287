//! AF_XDP sockets over libc (Documentation/networking/af_xdp.rst; the ring protocol is
//! net/xdp/xsk_queue.h): one socket per RX queue, each with its own UMEM.
//!
//! ```text
//!   UMEM: frame_count frames of frame_size bytes, mmap'ed anonymous memory registered with the
//!   socket (XDP_UMEM_REG). A frame's address is its byte offset in the UMEM.
//!
//!            user produces            kernel produces
//!   fill ring ───────────► kernel     RX ring ─────────► user     (frames to receive into / received)
//!   TX ring   ───────────► kernel     completion ring ─► user     (frames to send / sent)
//! ```
//!
//! Every frame is owned by exactly one party at a time. [`Socket`] tracks this per frame
//! ([`FrameState`]) and keeps the frames it owns on a free list, so a frame is never handed to
//! the kernel twice or reused while the kernel still has it; a descriptor from the kernel that
//! names a frame it does not own, or lies outside the UMEM, is counted
//! (`drop_xsk_bad_desc`) and ignored rather than trusted. Nothing here panics on what the
//! kernel or the network wrote.
//!
//! Ring slots are released by scope: [`RxBatch`] returns its frames to the free list, releases
//! its RX slots and refills the fill ring on `Drop`; [`TxBatch`] submits its descriptors and
//! kicks the kernel on `Drop`.
//!
//! Zero-copy: by default the socket is bound with no mode flag, so the kernel tries zero-copy
//! and falls back to copy mode itself (net/xdp/xsk_buff_pool.c, `xp_assign_dev`); veth only
//! offers copy mode (feasibility.md §3). [`Socket::zero_copy`] tells which one was chosen.
//!
//! Hot path: no allocation, no lock; one syscall per batch at most (a need-wakeup kick).

use super::rlimit;
use crate::counters::Counters;
use std::ffi::CString;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering, fence};
use std::time::Duration;

crate::named_counters! {
    /// Frames an AF_XDP socket could not deliver or send.
    pub enum XskDrop {
        /// The kernel returned a descriptor outside the UMEM or for a frame it does not own.
        BadDesc = "drop_xsk_bad_desc",
        /// No free UMEM frame to transmit from (completions not yet returned).
        TxNoFrame = "drop_xsk_tx_no_frame",
        /// A frame to transmit was longer than a UMEM frame.
        TxOversize = "drop_xsk_tx_oversize",
    }
}

/// Who owns a UMEM frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameState {
    /// On the user's free list.
    Free,
    /// Given to the kernel through the fill ring.
    Fill,
    /// Received: held by an [`RxBatch`].
    Rx,
    /// Given to the kernel through the TX ring, not yet completed.
    Tx,
}

/// Whether to use zero-copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZeroCopy {
    /// Let the kernel try zero-copy and fall back to copy mode (no bind flag).
    Auto,
    /// Zero-copy or fail (XDP_ZEROCOPY).
    Require,
    /// Copy mode (XDP_COPY).
    Never,
}

/// Sizes of one socket's UMEM and rings. Ring sizes must be powers of two; `frame_size` a
/// power of two between 2048 and the page size (aligned chunk mode).
#[derive(Debug, Clone)]
pub struct SocketConfig {
    pub frame_size: u32,
    pub frame_count: u32,
    pub fill_size: u32,
    pub comp_size: u32,
    pub rx_size: u32,
    pub tx_size: u32,
    pub zero_copy: ZeroCopy,
    /// XDP_USE_NEED_WAKEUP: the kernel tells us when it needs a syscall to make progress, so a
    /// busy consumer makes none otherwise.
    pub need_wakeup: bool,
}

impl Default for SocketConfig {
    fn default() -> Self {
        Self {
            frame_size: 2048,
            frame_count: 4096,
            fill_size: 2048,
            comp_size: 2048,
            rx_size: 2048,
            tx_size: 2048,
            zero_copy: ZeroCopy::Auto,
            need_wakeup: true,
        }
    }
}

impl SocketConfig {
    fn validate(&self) -> io::Result<()> {
        let pow2 = |v: u32| v.is_power_of_two();
        let ok = pow2(self.frame_size)
            && (2048..=4096).contains(&self.frame_size)
            && self.frame_count >= 2
            && pow2(self.fill_size)
            && pow2(self.comp_size)
            && pow2(self.rx_size)
            && pow2(self.tx_size)
            && (self.frame_size as u64) * (self.frame_count as u64) <= (1 << 32);
        if ok {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "AF_XDP sizes must be powers of two, frame_size 2048..=4096",
            ))
        }
    }
}

/// Kernel statistics of one socket (XDP_STATISTICS).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub rx_dropped: u64,
    pub rx_invalid_descs: u64,
    pub tx_invalid_descs: u64,
    pub rx_ring_full: u64,
    pub rx_fill_ring_empty_descs: u64,
    pub tx_ring_empty_descs: u64,
}

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// An owned memory mapping, unmapped on drop.
struct Mmap {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; moving it between threads is fine.
// Concurrent access is governed by the ring protocol (atomics), not by this type.
unsafe impl Send for Mmap {}

impl Mmap {
    /// Anonymous, private, pre-faulted memory for a UMEM.
    fn anon(len: usize) -> io::Result<Self> {
        // SAFETY: a fresh anonymous mapping aliases nothing; the result is checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        Self::from_raw(p, len)
    }

    /// A ring of socket `fd` at page offset `pgoff` (XDP_PGOFF_RX_RING and friends).
    fn ring(fd: RawFd, len: usize, pgoff: u64) -> io::Result<Self> {
        // SAFETY: maps the kernel's ring memory of an open socket; aliases nothing of ours.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                pgoff as libc::off_t,
            )
        };
        Self::from_raw(p, len)
    }

    fn from_raw(p: *mut libc::c_void, len: usize) -> io::Result<Self> {
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        NonNull::new(p.cast::<u8>())
            .map(|ptr| Self { ptr, len })
            .ok_or_else(|| io::Error::other("mmap returned null"))
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned and nothing borrows the mapping
        // any more (borrows of it are tied to `&self` of its owner).
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// One mmap'ed ring: producer and consumer indices, flags, and `size` entries of `E`.
struct Ring {
    map: Mmap,
    producer: usize,
    consumer: usize,
    flags: usize,
    desc: usize,
    size: u32,
    mask: u32,
    /// Our copy of the index we own (producer for fill/TX, consumer for RX/completion) and our
    /// last view of the other side's.
    cached_prod: u32,
    cached_cons: u32,
}

impl Ring {
    fn new(
        fd: RawFd,
        off: &libc::xdp_ring_offset,
        size: u32,
        elem: usize,
        pgoff: u64,
    ) -> io::Result<Self> {
        let len = (off.desc as usize)
            .checked_add(size as usize * elem)
            .ok_or_else(|| io::Error::other("ring too large"))?;
        let map = Mmap::ring(fd, len, pgoff)?;
        let fits = |o: u64, l: usize| (o as usize).checked_add(l).is_some_and(|e| e <= len);
        let aligned = |o: u64, a: u64| o.is_multiple_of(a);
        if !(fits(off.producer, 4)
            && fits(off.consumer, 4)
            && fits(off.flags, 4)
            && aligned(off.producer, 4)
            && aligned(off.consumer, 4)
            && aligned(off.flags, 4)
            && aligned(off.desc, 8))
        {
            return Err(io::Error::other("AF_XDP ring offsets out of range"));
        }
        Ok(Self {
            map,
            producer: off.producer as usize,
            consumer: off.consumer as usize,
            flags: off.flags as usize,
            desc: off.desc as usize,
            size,
            mask: size - 1,
            cached_prod: 0,
            cached_cons: 0,
        })
    }

    fn atomic(&self, off: usize) -> &AtomicU32 {
        // SAFETY: `off` was checked in `new` to be 4-byte aligned and inside the mapping, which
        // lives as long as `self`; AtomicU32 has the layout of u32, and the kernel accesses the
        // word only atomically (READ_ONCE/WRITE_ONCE, smp_load_acquire/smp_store_release).
        unsafe { &*self.map.ptr.as_ptr().add(off).cast::<AtomicU32>() }
    }

    fn producer(&self) -> &AtomicU32 {
        self.atomic(self.producer)
    }

    fn consumer(&self) -> &AtomicU32 {
        self.atomic(self.consumer)
    }

    /// True when the kernel asked for a syscall to make progress on this ring.
    fn needs_wakeup(&self) -> bool {
        // Relaxed: a hint only; the callers fence before reading it (see `kick_tx`).
        self.atomic(self.flags).load(Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0
    }

    /// Pointer to entry `idx` (masked) of element size `elem`.
    fn slot(&self, idx: u32, elem: usize) -> *mut u8 {
        // SAFETY: `idx & mask < size` and the mapping holds `desc + size * elem` bytes (`new`).
        unsafe {
            self.map
                .ptr
                .as_ptr()
                .add(self.desc + (idx & self.mask) as usize * elem)
        }
    }

    // --- user-as-producer side (fill, TX) ---

    /// Free slots, refreshing our view of the consumer only when needed.
    fn prod_free(&mut self, want: u32) -> u32 {
        let free = self.size - self.cached_prod.wrapping_sub(self.cached_cons);
        if free >= want {
            return free;
        }
        // Acquire: pairs with the kernel's smp_store_release of `consumer` after it has read
        // those descriptors (xsk_queue.h, `__xskq_cons_release`), so our writes into the freed
        // slots cannot be reordered before its reads.
        self.cached_cons = self.consumer().load(Ordering::Acquire);
        self.size - self.cached_prod.wrapping_sub(self.cached_cons)
    }

    /// Publishes `n` entries written at `cached_prod..`.
    fn prod_submit(&mut self, n: u32) {
        self.cached_prod = self.cached_prod.wrapping_add(n);
        // Release: pairs with the kernel's smp_load_acquire of `producer`
        // (`__xskq_cons_peek`), so it sees the descriptors written before this store.
        self.producer().store(self.cached_prod, Ordering::Release);
    }

    // --- user-as-consumer side (RX, completion) ---

    /// Entries available to read, refreshing our view of the producer only when needed.
    fn cons_avail(&mut self, want: u32) -> u32 {
        let avail = self.cached_prod.wrapping_sub(self.cached_cons);
        if avail >= want {
            return avail;
        }
        // Acquire: pairs with the kernel's smp_store_release of `producer` after writing the
        // descriptors (`__xskq_prod_submit`), so our reads of them see its writes.
        self.cached_prod = self.producer().load(Ordering::Acquire);
        self.cached_prod.wrapping_sub(self.cached_cons)
    }

    /// Gives `n` read entries back.
    fn cons_release(&mut self, n: u32) {
        self.cached_cons = self.cached_cons.wrapping_add(n);
        // Release: pairs with the kernel's smp_load_acquire of `consumer` (`xskq_prod_is_full`
        // refresh), so our reads of those slots complete before it overwrites them.
        self.consumer().store(self.cached_cons, Ordering::Release);
    }

    fn read_addr(&self, idx: u32) -> u64 {
        // SAFETY: `slot` is in bounds and 8-byte aligned (desc offset checked); the entry was
        // published by the kernel before the Acquire load in `cons_avail`.
        unsafe { self.slot(idx, 8).cast::<u64>().read() }
    }

    fn write_addr(&mut self, idx: u32, addr: u64) {
        // SAFETY: in bounds and aligned; the slot is ours (counted free by `prod_free`).
        unsafe { self.slot(idx, 8).cast::<u64>().write(addr) }
    }

    fn read_desc(&self, idx: u32) -> libc::xdp_desc {
        // SAFETY: as `read_addr`; xdp_desc is 16 bytes, 8-aligned, any bit pattern valid.
        unsafe {
            self.slot(idx, size_of::<libc::xdp_desc>())
                .cast::<libc::xdp_desc>()
                .read()
        }
    }

    fn write_desc(&mut self, idx: u32, d: libc::xdp_desc) {
        // SAFETY: as `write_addr`.
        unsafe {
            self.slot(idx, size_of::<libc::xdp_desc>())
                .cast::<libc::xdp_desc>()
                .write(d)
        }
    }
}

/// An AF_XDP socket bound to one RX queue of one interface, with its own UMEM.
pub struct Socket {
    // Field order is drop order: rings are unmapped before the socket closes, the UMEM last.
    fill: Ring,
    comp: Ring,
    rx: Ring,
    tx: Ring,
    fd: OwnedFd,
    umem: Mmap,
    frame_size: u32,
    frame_shift: u32,
    free: Vec<u64>,
    state: Vec<FrameState>,
    /// Frames kept in the fill ring at most; the rest stay free for TX.
    fill_target: u32,
    in_fill: u32,
    zero_copy: bool,
    need_wakeup: bool,
    ifindex: u32,
    queue: u32,
    /// Frames this socket dropped, by reason.
    pub drops: Counters<{ XskDrop::COUNT }>,
}

fn setsockopt<T>(fd: RawFd, opt: libc::c_int, v: &T) -> io::Result<()> {
    // SAFETY: `v` points to a live `T` of the size passed.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_XDP,
            opt,
            (v as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// Reads a socket option of type `T`.
///
/// # Safety
/// `T` must be a plain C struct for which every bit pattern is valid (the kernel fills it).
unsafe fn getsockopt<T>(fd: RawFd, opt: libc::c_int) -> io::Result<T> {
    let mut v = std::mem::MaybeUninit::<T>::zeroed();
    let mut len = size_of::<T>() as libc::socklen_t;
    // SAFETY: `v` is writable for `len` bytes.
    cvt(unsafe { libc::getsockopt(fd, libc::SOL_XDP, opt, v.as_mut_ptr().cast(), &mut len) })?;
    // SAFETY: zero-initialised and possibly overwritten by the kernel; any pattern is valid (caller).
    Ok(unsafe { v.assume_init() })
}

/// Interface index of `ifname` in the calling thread's network namespace.
pub fn ifindex(ifname: &str) -> io::Result<u32> {
    let c = CString::new(ifname)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name has a NUL"))?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(i)
    }
}

impl Socket {
    /// Creates a socket, registers its UMEM (after raising RLIMIT_MEMLOCK), maps its four rings
    /// and binds it to `queue` of `ifname` (resolved in the calling thread's namespace). The fill
    /// ring is primed with half the frames; the other half is kept for TX.
    pub fn new(ifname: &str, queue: u32, cfg: &SocketConfig) -> io::Result<Self> {
        cfg.validate()?;
        let ifindex = ifindex(ifname)?;
        let umem_len = cfg.frame_size as usize * cfg.frame_count as usize;
        // Best effort: root has CAP_IPC_LOCK anyway; without it, registration reports ENOBUFS.
        let _ = rlimit::raise_memlock(umem_len as u64 + (1 << 20));
        // SAFETY: plain socket(2) call; the result is checked and owned right away.
        let raw =
            cvt(unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) })?;
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let umem = Mmap::anon(umem_len)?;
        let reg = libc::xdp_umem_reg {
            addr: umem.ptr.as_ptr() as u64,
            len: umem_len as u64,
            chunk_size: cfg.frame_size,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        setsockopt(raw, libc::XDP_UMEM_REG, &reg)?;
        setsockopt(raw, libc::XDP_UMEM_FILL_RING, &cfg.fill_size)?;
        setsockopt(raw, libc::XDP_UMEM_COMPLETION_RING, &cfg.comp_size)?;
        setsockopt(raw, libc::XDP_RX_RING, &cfg.rx_size)?;
        setsockopt(raw, libc::XDP_TX_RING, &cfg.tx_size)?;
        // SAFETY: xdp_mmap_offsets is plain u64 fields.
        let off: libc::xdp_mmap_offsets = unsafe { getsockopt(raw, libc::XDP_MMAP_OFFSETS)? };
        let desc = size_of::<libc::xdp_desc>();
        let rx = Ring::new(
            raw,
            &off.rx,
            cfg.rx_size,
            desc,
            libc::XDP_PGOFF_RX_RING as u64,
        )?;
        let tx = Ring::new(
            raw,
            &off.tx,
            cfg.tx_size,
            desc,
            libc::XDP_PGOFF_TX_RING as u64,
        )?;
        let fill = Ring::new(
            raw,
            &off.fr,
            cfg.fill_size,
            8,
            libc::XDP_UMEM_PGOFF_FILL_RING,
        )?;
        let comp = Ring::new(
            raw,
            &off.cr,
            cfg.comp_size,
            8,
            libc::XDP_UMEM_PGOFF_COMPLETION_RING,
        )?;

        let mut flags = match cfg.zero_copy {
            ZeroCopy::Auto => 0,
            ZeroCopy::Require => libc::XDP_ZEROCOPY,
            ZeroCopy::Never => libc::XDP_COPY,
        };
        if cfg.need_wakeup {
            flags |= libc::XDP_USE_NEED_WAKEUP;
        }
        let sa = libc::sockaddr_xdp {
            sxdp_family: libc::AF_XDP as u16,
            sxdp_flags: flags,
            sxdp_ifindex: ifindex,
            sxdp_queue_id: queue,
            sxdp_shared_umem_fd: 0,
        };
        // SAFETY: `sa` is a valid sockaddr_xdp of the size passed.
        cvt(unsafe {
            libc::bind(
                raw,
                (&sa as *const libc::sockaddr_xdp).cast(),
                size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
            )
        })?;
        // SAFETY: xdp_options is one u32.
        let opts: libc::xdp_options = unsafe { getsockopt(raw, libc::XDP_OPTIONS)? };

        let n = cfg.frame_count;
        let mut s = Self {
            fill,
            comp,
            rx,
            tx,
            fd,
            umem,
            frame_size: cfg.frame_size,
            frame_shift: cfg.frame_size.trailing_zeros(),
            // Highest addresses last so pop() hands out frame 0 first (easier to read in a trace).
            free: (0..n as u64)
                .rev()
                .map(|i| i * cfg.frame_size as u64)
                .collect(),
            state: vec![FrameState::Free; n as usize],
            fill_target: (n / 2).min(cfg.fill_size).max(1),
            in_fill: 0,
            zero_copy: opts.flags & libc::XDP_OPTIONS_ZEROCOPY != 0,
            need_wakeup: cfg.need_wakeup,
            ifindex,
            queue,
            drops: Counters::default(),
        };
        s.refill();
        Ok(s)
    }

    /// True if the kernel bound the socket in zero-copy mode.
    pub fn zero_copy(&self) -> bool {
        self.zero_copy
    }

    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    pub fn queue(&self) -> u32 {
        self.queue
    }

    /// Frames currently on the free list (neither in the kernel nor in a batch).
    pub fn free_frames(&self) -> usize {
        self.free.len()
    }

    /// Ownership of the frame at UMEM address `addr`, if it names a frame.
    pub fn frame_state(&self, addr: u64) -> Option<FrameState> {
        self.state.get((addr >> self.frame_shift) as usize).copied()
    }

    /// Frame index of a kernel-supplied address, if inside the UMEM (aligned mode: the frame
    /// is the address rounded down to the chunk size, whatever offset the kernel added).
    fn frame_of(&self, addr: u64) -> Option<usize> {
        let i = (addr >> self.frame_shift) as usize;
        (i < self.state.len()).then_some(i)
    }

    /// Tops the fill ring up to `fill_target` frames from the free list.
    fn refill(&mut self) {
        let want = self
            .fill_target
            .saturating_sub(self.in_fill)
            .min(self.free.len() as u32);
        if want == 0 {
            return;
        }
        let n = self.fill.prod_free(want).min(want);
        let base = self.fill.cached_prod;
        let mut done = 0;
        while done < n {
            let Some(addr) = self.free.pop() else { break };
            if let Some(st) = self.state.get_mut((addr >> self.frame_shift) as usize) {
                *st = FrameState::Fill;
            }
            self.fill.write_addr(base.wrapping_add(done), addr);
            done += 1;
        }
        if done > 0 {
            self.fill.prod_submit(done);
            self.in_fill += done;
        }
    }

    /// Takes completed TX frames back onto the free list.
    pub fn complete(&mut self) -> usize {
        let n = self.comp.cons_avail(self.comp.size);
        let base = self.comp.cached_cons;
        for i in 0..n {
            let addr = self.comp.read_addr(base.wrapping_add(i));
            match self.frame_of(addr) {
                Some(f) if self.state.get(f) == Some(&FrameState::Tx) => {
                    if let Some(st) = self.state.get_mut(f) {
                        *st = FrameState::Free;
                    }
                    self.free.push((f as u64) << self.frame_shift);
                }
                _ => self.drops.add(XskDrop::BadDesc.index(), 1),
            }
        }
        if n > 0 {
            self.comp.cons_release(n);
        }
        n as usize
    }

    /// Receives up to `max` frames. The returned batch borrows the socket; dropping it gives
    /// the frames back to the fill ring.
    pub fn rx(&mut self, max: u32) -> RxBatch<'_> {
        if self.need_wakeup && self.fill.needs_wakeup() {
            self.kick_rx();
        }
        let n = self.rx.cons_avail(max).min(max);
        let start = self.rx.cached_cons;
        for i in 0..n {
            let d = self.rx.read_desc(start.wrapping_add(i));
            let f = self.frame_of(d.addr);
            match f.and_then(|f| self.state.get_mut(f)) {
                Some(st) if *st == FrameState::Fill => {
                    *st = FrameState::Rx;
                    self.in_fill = self.in_fill.saturating_sub(1);
                }
                _ => self.drops.add(XskDrop::BadDesc.index(), 1),
            }
        }
        RxBatch {
            sock: self,
            start,
            n,
        }
    }

    /// Reserves up to `max` TX slots (after reclaiming completions). Push frames into the
    /// batch; dropping it submits them and kicks the kernel if it asked for it.
    pub fn tx(&mut self, max: u32) -> TxBatch<'_> {
        self.complete();
        let cap = self.tx.prod_free(max).min(max);
        TxBatch {
            sock: self,
            n: 0,
            cap,
        }
    }

    /// Waits up to `timeout` for received frames (poll(2) on the socket).
    pub fn wait_rx(&mut self, timeout: Duration) -> io::Result<bool> {
        let mut p = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
        // SAFETY: one valid pollfd.
        let n = cvt(unsafe { libc::poll(&mut p, 1, ms) })?;
        Ok(n > 0)
    }

    /// The kernel's counters for this socket.
    pub fn stats(&self) -> io::Result<Stats> {
        // SAFETY: xdp_statistics is plain u64 fields.
        let s: libc::xdp_statistics =
            unsafe { getsockopt(self.fd.as_raw_fd(), libc::XDP_STATISTICS)? };
        Ok(Stats {
            rx_dropped: s.rx_dropped,
            rx_invalid_descs: s.rx_invalid_descs,
            tx_invalid_descs: s.tx_invalid_descs,
            rx_ring_full: s.rx_ring_full,
            rx_fill_ring_empty_descs: s.rx_fill_ring_empty_descs,
            tx_ring_empty_descs: s.tx_ring_empty_descs,
        })
    }

    /// recvfrom(fd, NULL, 0, MSG_DONTWAIT): lets the driver refill from the fill ring.
    fn kick_rx(&self) {
        // SAFETY: a zero-length receive with null buffers is how AF_XDP is woken
        // (af_xdp.rst, "XDP_USE_NEED_WAKEUP"); it reads no memory of ours.
        unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                std::ptr::null_mut(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            );
        }
    }

    /// sendto(fd, NULL, 0, MSG_DONTWAIT): makes the kernel transmit the TX ring (in copy mode
    /// it is the only thing that does, via xsk_generic_xmit). EAGAIN/EBUSY/ENOBUFS just mean
    /// "try again later" and are ignored: the descriptors stay queued.
    fn kick_tx(&self) {
        if self.need_wakeup {
            // SeqCst fence: orders our producer store before the flags load, as af_xdp.rst's
            // need_wakeup protocol requires, so we never miss a flag set after the store.
            fence(Ordering::SeqCst);
            if !self.tx.needs_wakeup() {
                return;
            }
        }
        // SAFETY: as `kick_rx`: zero-length, null buffers.
        unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                std::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null(),
                0,
            );
        }
    }

    /// The bytes of a received descriptor, if it lies inside the UMEM and within one frame.
    fn rx_bytes(&self, d: &libc::xdp_desc) -> Option<&[u8]> {
        let frame = self.frame_of(d.addr)?;
        let end = d.addr.checked_add(d.len as u64)?;
        let frame_end = ((frame as u64) + 1) << self.frame_shift;
        if end > frame_end || end > self.umem.len as u64 {
            return None;
        }
        // SAFETY: `addr..end` is inside the UMEM mapping (checked above), which lives as long as
        // `self`; the frame is owned by user space (state Rx, set in `rx`) so the kernel does
        // not write it while this borrow of the socket lasts.
        Some(unsafe {
            std::slice::from_raw_parts(self.umem.ptr.as_ptr().add(d.addr as usize), d.len as usize)
        })
    }
}

impl AsRawFd for Socket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Received frames, borrowed from the socket's UMEM until the batch drops.
pub struct RxBatch<'a> {
    sock: &'a mut Socket,
    start: u32,
    n: u32,
}

impl RxBatch<'_> {
    pub fn len(&self) -> usize {
        self.n as usize
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Frame `i` of the batch; `None` if out of range or if the kernel's descriptor was bad
    /// (counted as `drop_xsk_bad_desc` when the batch was taken).
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        if i >= self.n as usize {
            return None;
        }
        let d = self.sock.rx.read_desc(self.start.wrapping_add(i as u32));
        match self
            .sock
            .frame_of(d.addr)
            .and_then(|f| self.sock.state.get(f))
        {
            Some(FrameState::Rx) => self.sock.rx_bytes(&d),
            _ => None,
        }
    }

    /// Iterates over the batch's good frames.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        (0..self.len()).filter_map(|i| self.get(i))
    }
}

impl Drop for RxBatch<'_> {
    fn drop(&mut self) {
        let s = &mut *self.sock;
        for i in 0..self.n {
            let d = s.rx.read_desc(self.start.wrapping_add(i));
            if let Some(f) = s.frame_of(d.addr)
                && let Some(st) = s.state.get_mut(f)
            {
                // Only Rx -> Free: a duplicate descriptor cannot free a frame twice.
                if *st == FrameState::Rx {
                    *st = FrameState::Free;
                    s.free.push((f as u64) << s.frame_shift);
                }
            }
        }
        if self.n > 0 {
            s.rx.cons_release(self.n);
        }
        s.refill();
    }
}

/// Reserved TX slots; frames pushed are sent when the batch drops.
pub struct TxBatch<'a> {
    sock: &'a mut Socket,
    n: u32,
    cap: u32,
}

impl TxBatch<'_> {
    /// Slots left in this batch.
    pub fn remaining(&self) -> u32 {
        self.cap - self.n
    }

    /// Number of frames pushed so far.
    pub fn len(&self) -> usize {
        self.n as usize
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Copies `frame` into a free UMEM frame and queues it. False (and counted) when the batch
    /// is full, no frame is free, or the frame is too long.
    pub fn push(&mut self, frame: &[u8]) -> bool {
        if self.n >= self.cap {
            return false;
        }
        let s = &mut *self.sock;
        if frame.len() > s.frame_size as usize {
            s.drops.add(XskDrop::TxOversize.index(), 1);
            return false;
        }
        let Some(addr) = s.free.pop() else {
            s.drops.add(XskDrop::TxNoFrame.index(), 1);
            return false;
        };
        let f = (addr >> s.frame_shift) as usize;
        if let Some(st) = s.state.get_mut(f) {
            *st = FrameState::Tx;
        }
        // SAFETY: `addr` is a frame base on our free list (so inside the UMEM and not owned by
        // the kernel), and `frame.len() <= frame_size`, so the copy stays inside that frame.
        unsafe {
            std::ptr::copy_nonoverlapping(
                frame.as_ptr(),
                s.umem.ptr.as_ptr().add(addr as usize),
                frame.len(),
            );
        }
        let idx = s.tx.cached_prod.wrapping_add(self.n);
        s.tx.write_desc(
            idx,
            libc::xdp_desc {
                addr,
                len: frame.len() as u32,
                options: 0,
            },
        );
        self.n += 1;
        true
    }
}

impl Drop for TxBatch<'_> {
    fn drop(&mut self) {
        if self.n > 0 {
            self.sock.tx.prod_submit(self.n);
            self.sock.kick_tx();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_validation() {
        assert!(SocketConfig::default().validate().is_ok());
        let bad = SocketConfig {
            frame_size: 3000,
            ..SocketConfig::default()
        };
        assert!(bad.validate().is_err());
        let bad = SocketConfig {
            rx_size: 1000,
            ..SocketConfig::default()
        };
        assert!(bad.validate().is_err());
        let bad = SocketConfig {
            frame_size: 1024,
            ..SocketConfig::default()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn unknown_interface_is_an_error() {
        assert!(ifindex("cio-nope-0").is_err());
        assert!(ifindex("a\0b").is_err());
    }
}
