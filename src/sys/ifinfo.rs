//! Link state and MTU of an interface by name: `SIOCGIFFLAGS` and `SIOCGIFMTU` (netdevice(7)),
//! in the calling thread's network namespace. The pfsync shell uses them for the sync link's
//! state (pfsync's `pfsync_syncdev_state` hook) and its MTU (the pfsync packet size).
//!
//! sysfs would be simpler but shows the namespace it was mounted in, not the thread's (see
//! [`super::netns`]); an ioctl on a socket created by the calling thread asks the right one.

use std::io;
use std::os::fd::AsRawFd;

use socket2::{Domain, Socket, Type};

/// `IFNAMSIZ`.
const IFNAMSIZ: usize = 16;
/// Size of the union in `struct ifreq` on Linux (its largest member is a `struct ifmap`).
const IFRU_LEN: usize = 24;

/// `struct ifreq` as bytes: the name, then the union the kernel fills in.
#[repr(C)]
struct IfReq {
    name: [u8; IFNAMSIZ],
    ifru: [u8; IFRU_LEN],
}

fn query(ifname: &str, request: libc::c_ulong) -> io::Result<[u8; IFRU_LEN]> {
    let bytes = ifname.as_bytes();
    if bytes.is_empty() || bytes.len() >= IFNAMSIZ || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad interface name {ifname:?}"),
        ));
    }
    let mut req = IfReq {
        name: [0; IFNAMSIZ],
        ifru: [0; IFRU_LEN],
    };
    req.name
        .get_mut(..bytes.len())
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?
        .copy_from_slice(bytes);
    let sock = Socket::new(Domain::IPV4, Type::DGRAM, None)?;
    // SAFETY: `req` is a properly laid out, NUL-terminated `struct ifreq` that lives across the
    // call; SIOCGIFFLAGS and SIOCGIFMTU write at most `sizeof(struct ifreq)` bytes into it and
    // keep no pointer to it. `sock` is an open descriptor for the duration of the call.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), request as _, &mut req as *mut IfReq) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(req.ifru)
}

/// Whether the interface is administratively up and has carrier (`IFF_UP | IFF_RUNNING`).
pub fn link_running(ifname: &str) -> io::Result<bool> {
    let u = query(ifname, libc::SIOCGIFFLAGS as libc::c_ulong)?;
    let flags = i32::from(i16::from_ne_bytes([u[0], u[1]]));
    let want = libc::IFF_UP | libc::IFF_RUNNING;
    Ok(flags & want == want)
}

/// The interface's MTU.
pub fn mtu(ifname: &str) -> io::Result<u32> {
    let u = query(ifname, libc::SIOCGIFMTU as libc::c_ulong)?;
    let m = i32::from_ne_bytes([u[0], u[1], u[2], u[3]]);
    u32::try_from(m).map_err(|_| io::Error::other(format!("negative MTU on {ifname}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_up_with_its_mtu() {
        assert!(link_running("lo").unwrap());
        assert!(mtu("lo").unwrap() >= 1500);
    }

    #[test]
    fn bad_and_missing_names_are_errors() {
        assert!(mtu("").is_err());
        assert!(mtu("a-name-that-is-too-long").is_err());
        assert!(mtu("nul\0x").is_err());
        assert!(link_running("cio-nonexist0").is_err());
    }
}
