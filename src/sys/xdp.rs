//! Loads `bpf/carpio_xdp.o` (built by `make bpf`, see the Makefile's bpf block) with aya, attaches
//! it to one interface in native (driver) XDP mode, falling back to generic (skb) mode, and keeps
//! its maps: the XSKMAP (one AF_XDP socket per RX queue), the virtual services and VIP
//! addresses carpio handles, and the per-CPU stats.
//!
//! Why the object is loaded from a path rather than embedded by a build.rs: `cargo build` and
//! `cargo test` stay independent of clang, and an operator can rebuild the program alone. The
//! daemon looks for it alongside its binary (or at a configured path), tests under `target/bpf/`
//! ([`find_object`]).
//!
//! aya attaches through a bpf_link, so the program is detached when [`Program`] drops, and also
//! when the process dies (feasibility.md §2), so a crashed test cannot leave XDP behind.
//!
//! Attach and map updates are control-plane operations (syscalls), never per packet.

use super::bpf::{self, SvcKey, SvcVal, VipKey, XdpStat};
use aya::Ebpf;
use aya::maps::{HashMap, MapData, PerCpuArray, XskMap};
use aya::programs::xdp::XdpLinkId;
use aya::programs::{Xdp, XdpMode};
use std::fmt;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// File name of the compiled XDP program.
pub const OBJECT_NAME: &str = "carpio_xdp.o";
/// Environment variable overriding where [`find_object`] looks first.
pub const OBJECT_ENV: &str = "CARPIO_BPF_OBJ";

/// Where to attach: native (in the driver), generic (in the stack, after the skb is built), or
/// native with a fallback to generic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    Native,
    Generic,
    Auto,
}

/// Why loading, attaching or a map update failed.
#[derive(Debug)]
pub enum Error {
    /// The ELF could not be read or loaded (includes map creation: needs CAP_BPF).
    Load(aya::EbpfError),
    /// The object has no program or map of that name (built from another abi.h?).
    Missing(&'static str),
    /// The verifier or the attach rejected the program.
    Program(aya::programs::ProgramError),
    /// A map update failed (full map, bad socket fd, ...).
    Map(aya::maps::MapError),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Load(e) => write!(f, "loading the XDP object: {e}"),
            Error::Missing(n) => write!(f, "the XDP object has no {n}"),
            Error::Program(e) => write!(f, "XDP program: {e}"),
            Error::Map(e) => write!(f, "XDP map: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Load(e) => Some(e),
            Error::Missing(_) => None,
            Error::Program(e) => Some(e),
            Error::Map(e) => Some(e),
        }
    }
}

impl From<aya::EbpfError> for Error {
    fn from(e: aya::EbpfError) -> Self {
        Error::Load(e)
    }
}
impl From<aya::programs::ProgramError> for Error {
    fn from(e: aya::programs::ProgramError) -> Self {
        Error::Program(e)
    }
}
impl From<aya::maps::MapError> for Error {
    fn from(e: aya::maps::MapError) -> Self {
        Error::Map(e)
    }
}

/// Finds `carpio_xdp.o`: `explicit` if given, then `$CARPIO_BPF_OBJ`, then next to the running
/// binary, then `bpf/carpio_xdp.o` in up to three ancestors of the binary's directory (so
/// `target/debug/carpio` and `target/debug/deps/<test>` both find `target/bpf/carpio_xdp.o`).
pub fn find_object(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return p.is_file().then(|| p.to_path_buf());
    }
    if let Some(p) = std::env::var_os(OBJECT_ENV).map(PathBuf::from)
        && p.is_file()
    {
        return Some(p);
    }
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    let here = dir.join(OBJECT_NAME);
    if here.is_file() {
        return Some(here);
    }
    dir.ancestors()
        .take(4)
        .map(|d| d.join("bpf").join(OBJECT_NAME))
        .find(|p| p.is_file())
}

/// The loaded and attached XDP program with its maps. Dropping it detaches the program.
pub struct Program {
    ebpf: Ebpf,
    link: Option<XdpLinkId>,
    mode: AttachMode,
    xsks: XskMap<MapData>,
    svcs: HashMap<MapData, SvcKey, SvcVal>,
    vips: HashMap<MapData, VipKey, u32>,
    stats: PerCpuArray<MapData, u64>,
}

impl Program {
    /// Loads the object at `path` and attaches it to `ifname` (resolved in the calling thread's
    /// network namespace). With [`AttachMode::Auto`], native mode is tried first and generic
    /// mode on any error; [`Program::mode`] says which one held.
    pub fn load(path: &Path, ifname: &str, mode: AttachMode) -> Result<Self, Error> {
        let mut ebpf = Ebpf::load_file(path)?;
        let xsks = XskMap::try_from(take(&mut ebpf, bpf::MAP_XSKS)?)?;
        let svcs = HashMap::try_from(take(&mut ebpf, bpf::MAP_SVCS)?)?;
        let vips = HashMap::try_from(take(&mut ebpf, bpf::MAP_VIPS)?)?;
        let stats = PerCpuArray::try_from(take(&mut ebpf, bpf::MAP_STATS)?)?;
        let prog: &mut Xdp = ebpf
            .program_mut(bpf::PROG)
            .ok_or(Error::Missing("program carpio_xdp"))?
            .try_into()?;
        prog.load()?;
        let (link, mode) = match mode {
            AttachMode::Native => (prog.attach(ifname, XdpMode::Driver)?, AttachMode::Native),
            AttachMode::Generic => (prog.attach(ifname, XdpMode::Skb)?, AttachMode::Generic),
            AttachMode::Auto => match prog.attach(ifname, XdpMode::Driver) {
                Ok(l) => (l, AttachMode::Native),
                Err(_) => (prog.attach(ifname, XdpMode::Skb)?, AttachMode::Generic),
            },
        };
        Ok(Self {
            ebpf,
            link: Some(link),
            mode,
            xsks,
            svcs,
            vips,
            stats,
        })
    }

    /// The mode the program is attached in (never `Auto`).
    pub fn mode(&self) -> AttachMode {
        self.mode
    }

    /// Steers RX queue `queue`'s matching traffic to the AF_XDP socket `xsk` (bound to that
    /// queue of the same interface).
    pub fn register_xsk(&mut self, queue: u32, xsk: &impl AsRawFd) -> Result<(), Error> {
        self.xsks.set(queue, xsk.as_raw_fd(), 0)?;
        Ok(())
    }

    /// Empties queue `queue`'s slot: its traffic goes back to the kernel (XDP_PASS).
    pub fn unregister_xsk(&mut self, queue: u32) -> Result<(), Error> {
        self.xsks.unset(queue)?;
        Ok(())
    }

    /// Adds or replaces a virtual service. `port` 0 with `range` `None` means any port;
    /// `Some((lo, hi))` (host order, inclusive) a port range.
    pub fn insert_service(&mut self, key: SvcKey, range: Option<(u16, u16)>) -> Result<(), Error> {
        let (port_lo, port_hi) = range.unwrap_or((0, 0));
        let val = SvcVal {
            port_lo,
            port_hi,
            flags: 0,
        };
        self.svcs.insert(key, val, 0)?;
        Ok(())
    }

    /// Adds or replaces a map entry with explicit match flags ([`bpf::SVC_F_SRC`] for the NAT
    /// return path: packets *from* `key`'s address and port; with [`bpf::SVC_F_NODST`] the entry
    /// does not match as a destination).
    pub fn insert_entry(
        &mut self,
        key: SvcKey,
        range: Option<(u16, u16)>,
        flags: u32,
    ) -> Result<(), Error> {
        let (port_lo, port_hi) = range.unwrap_or((0, 0));
        self.svcs.insert(
            key,
            SvcVal {
                port_lo,
                port_hi,
                flags,
            },
            0,
        )?;
        Ok(())
    }

    pub fn remove_service(&mut self, key: &SvcKey) -> Result<(), Error> {
        self.svcs.remove(key)?;
        Ok(())
    }

    /// Adds a VIP address: ARP / neighbour solicitations for it and fragments to it go to carpio.
    pub fn insert_vip(&mut self, key: VipKey) -> Result<(), Error> {
        self.vips.insert(key, 0, 0)?;
        Ok(())
    }

    pub fn remove_vip(&mut self, key: &VipKey) -> Result<(), Error> {
        self.vips.remove(key)?;
        Ok(())
    }

    /// The stats counters summed over all CPUs, indexed by [`XdpStat::index`].
    pub fn stats(&self) -> Result<[u64; XdpStat::COUNT], Error> {
        let mut out = [0u64; XdpStat::COUNT];
        for (i, o) in out.iter_mut().enumerate() {
            let per_cpu = self.stats.get(&(i as u32), 0)?;
            *o = per_cpu.iter().sum();
        }
        Ok(out)
    }

    /// Detaches the program now (also done on drop).
    pub fn detach(&mut self) -> Result<(), Error> {
        if let Some(link) = self.link.take() {
            let prog: &mut Xdp = self
                .ebpf
                .program_mut(bpf::PROG)
                .ok_or(Error::Missing("program carpio_xdp"))?
                .try_into()?;
            prog.detach(link)?;
        }
        Ok(())
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        // Dropping `ebpf` would detach too (aya's links detach on drop); doing it explicitly keeps
        // the order obvious: program off the interface before its maps close.
        let _ = self.detach();
    }
}

fn take(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, Error> {
    ebpf.take_map(name).ok_or(Error::Missing(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_object_explicit_missing_is_none() {
        assert_eq!(
            find_object(Some(Path::new("/nonexistent/carpio_xdp.o"))),
            None
        );
    }
}
