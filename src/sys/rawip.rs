//! Raw IP socket helpers for the carp shell: wait on several descriptors (poll(2)) and receive
//! an IPv6 datagram with its hop limit (recvmsg(2) with `IPV6_RECVHOPLIMIT`'s ancillary data,
//! RFC 3542 §6.3), which carp needs because an IPv6 raw socket never shows the IP header.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

/// At most this many descriptors per [`readable`] call.
pub const MAX_FDS: usize = 8;

/// Waits until one of `fds` is readable or `timeout` passes; bit i of the result is set when
/// `fds[i]` is readable (or in error, so the caller's read reports it). EINTR is "none ready".
pub fn readable(fds: &[RawFd], timeout: Duration) -> io::Result<u32> {
    if fds.len() > MAX_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "too many descriptors",
        ));
    }
    let mut p = [libc::pollfd {
        fd: -1,
        events: 0,
        revents: 0,
    }; MAX_FDS];
    for (slot, fd) in p.iter_mut().zip(fds) {
        slot.fd = *fd;
        slot.events = libc::POLLIN;
    }
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: `p` is a live array of `fds.len()` initialised pollfd structs (<= MAX_FDS).
    let rc = unsafe { libc::poll(p.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(0)
        } else {
            Err(e)
        };
    }
    let mut mask = 0u32;
    for (i, slot) in p.iter().take(fds.len()).enumerate() {
        if slot.revents & (libc::POLLIN | libc::POLLERR | libc::POLLHUP) != 0 {
            mask |= 1 << i;
        }
    }
    Ok(mask)
}

/// Receives one datagram into `buf` without blocking (MSG_DONTWAIT); returns its length and the
/// hop limit from the `IPV6_HOPLIMIT` control message (`None` if the socket did not enable
/// `IPV6_RECVHOPLIMIT`). `WouldBlock` when nothing is queued.
pub fn recv_hoplimit(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, Option<u8>)> {
    // Room for one cmsghdr + int, 8-byte aligned.
    let mut control = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data; all-zero is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = size_of_val(&control) as _;
    // SAFETY: `msg` points at `iov` (over `buf`) and `control`, both live and writable for the
    // lengths given, for the duration of the call.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut hops = None;
    // SAFETY: `msg` was filled by recvmsg; CMSG_FIRSTHDR/NXTHDR stay within msg_controllen and
    // return null at the end; the data of an IPV6_HOPLIMIT message is one int (RFC 3542 §6.3),
    // read unaligned.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::IPPROTO_IPV6 && (*c).cmsg_type == libc::IPV6_HOPLIMIT {
                let v = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
                hops = u8::try_from(v).ok();
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok((n as usize, hops))
}

/// Whether `ifname` is up with carrier (`IFF_UP` and `IFF_RUNNING` from SIOCGIFFLAGS), asked
/// through any socket `fd` of the namespace. carp's parent-link check (`carp_carpdev_state`).
pub fn link_running(fd: RawFd, ifname: &str) -> io::Result<bool> {
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let name = ifname.as_bytes();
    if name.is_empty() || name.len() >= req.ifr_name.len() || name.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "bad interface name",
        ));
    }
    for (d, s) in req.ifr_name.iter_mut().zip(name) {
        *d = *s as libc::c_char;
    }
    // SAFETY: `req` is a live, NUL-terminated ifreq; SIOCGIFFLAGS only writes ifr_flags in it.
    let rc = unsafe { libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    let flags = i32::from(unsafe { req.ifr_ifru.ifru_flags });
    Ok(flags & libc::IFF_UP != 0 && flags & libc::IFF_RUNNING != 0)
}
