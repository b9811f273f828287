//! RLIMIT_MEMLOCK: an AF_XDP UMEM is pinned memory and counts against it (feasibility.md §3:
//! 8 MiB by default here; a 32 MiB UMEM failed with ENOBUFS after a privilege drop). Raise it
//! while still privileged.

use std::io;

/// Raises the soft and hard RLIMIT_MEMLOCK to at least `bytes` (`u64::MAX` = unlimited). Never
/// lowers it. Needs CAP_SYS_RESOURCE to raise the hard limit.
pub fn raise_memlock(bytes: u64) -> io::Result<()> {
    let mut cur = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `cur` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut cur) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let want = if bytes == u64::MAX {
        libc::RLIM_INFINITY
    } else {
        bytes as libc::rlim_t
    };
    if cur.rlim_cur >= want && cur.rlim_max >= want {
        return Ok(());
    }
    let new = libc::rlimit {
        rlim_cur: cur.rlim_cur.max(want),
        rlim_max: cur.rlim_max.max(want),
    };
    // SAFETY: `new` is a valid rlimit read by the kernel during the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &new) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
