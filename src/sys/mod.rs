//! The only place in carpio with `unsafe` code (DESIGN.md, style rule 4): syscalls, mmap'ed
//! rings, UMEM, BPF loading. Every `unsafe fn` has a `# Safety` section and every `unsafe` block
//! a `SAFETY:` comment; everything exported from here is a safe API.
//!
//! - [`netns`]: enter a network namespace on the current thread (setns(2)).
//! - [`bpf`]: the XDP program's map layouts, mirrored from `bpf/abi.h`.
//! - [`xdp`]: load `carpio_xdp.o` with aya, attach it (native, else generic), fill its maps.
//! - [`afxdp`]: AF_XDP sockets over libc: UMEM, fill/completion/RX/TX rings.
//! - [`afpacket`]: TPACKET_V3 receive ring in a fanout group, sendmmsg transmit.
//! - [`cbpf`]: classic BPF filter compiled from the virtual services (safe code).
//! - [`cpu`]: pin the calling thread to a CPU.
//! - [`ifinfo`]: an interface's link state and MTU (ioctl), for the pfsync shell.
//! - [`nft`]: the nftables netdev ingress drop that goes with AF_PACKET.
//! - [`rlimit`]: raise RLIMIT_MEMLOCK before registering a UMEM.
//! - [`rawip`]: poll(2) over several sockets, recvmsg(2) with the IPv6 hop limit, link flags
//!   (carp).
//! - [`privdrop`]: become the configured `user`, keeping CAP_NET_RAW and CAP_NET_ADMIN.
//! - [`splice`]: splice(2) through 1 MiB pipes for the TCP relay, IP_MINTTL, RLIMIT_NOFILE.
//! - [`tun`]: the non-persistent TUN device route injection's BIRD routes depend on.

pub mod afpacket;
pub mod afxdp;
pub mod bpf;
pub mod cbpf;
pub mod cpu;
pub mod ifinfo;
pub mod netns;
pub mod nft;
pub mod privdrop;
pub mod rawip;
pub mod rlimit;
pub mod splice;
pub mod tun;
pub mod xdp;
