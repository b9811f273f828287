//! Privilege drop (issue 7 item 4): after the sockets are open and XDP is attached, the daemon
//! becomes an unprivileged user and keeps only the capabilities its running threads still need:
//! CAP_NET_RAW (AF_PACKET sends, re-attaching socket filters) and CAP_NET_ADMIN (XDP map updates
//! on reload, removing the nftables table at shutdown). relayd does the same after forking its
//! children (`proc.c` `proc_run`: chroot, setgroups, setresgid, setresuid).
//!
//! Order matters: RLIMIT_MEMLOCK is raised first (it needs CAP_SYS_RESOURCE), then
//! PR_SET_KEEPCAPS so setuid keeps the permitted set, then setgroups/setgid/setuid, then the
//! permitted, effective, inheritable and ambient sets are cut down to the two capabilities (the
//! `caps` crate wraps capset(2) and prctl(2)). The ambient set is what lets the `nft` child
//! started at shutdown (deleting the netdev table) keep CAP_NET_ADMIN across execve.

use caps::{CapSet, Capability, CapsHashSet};
use std::ffi::CString;
use std::io;

/// A user's ids from the password database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
}

/// Looks `name` up with getpwnam_r(3).
pub fn lookup(name: &str) -> io::Result<Ids> {
    let cname = CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "user name with NUL"))?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: passwd is plain data; all-zero is a valid value to be overwritten.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut res: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call: `cname` is NUL-terminated, `pw` and `res` are
    // writable, `buf` is writable for `buf.len()` bytes; the strings getpwnam_r stores point into
    // `buf`, which we do not read (only the integer ids).
    let rc = unsafe {
        libc::getpwnam_r(
            cname.as_ptr(),
            &mut pw,
            buf.as_mut_ptr(),
            buf.len(),
            &mut res,
        )
    };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    if res.is_null() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no user {name}"),
        ));
    }
    Ok(Ids {
        uid: pw.pw_uid,
        gid: pw.pw_gid,
    })
}

fn cvt(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn caps_err(e: caps::errors::CapsError) -> io::Error {
    io::Error::other(e.to_string())
}

/// Becomes `ids` keeping only CAP_NET_RAW and CAP_NET_ADMIN. Affects every thread of the
/// process for the ids (glibc's setuid broadcasts to all threads) but capabilities only for
/// the calling thread: call it before starting threads that need fewer.
pub fn drop_to(ids: Ids) -> io::Result<()> {
    caps::securebits::set_keepcaps(true).map_err(caps_err)?;
    let groups = [ids.gid];
    // SAFETY: `groups` is a valid array of one gid_t.
    cvt(unsafe { libc::setgroups(1, groups.as_ptr()) })?;
    // SAFETY: plain syscalls on integer arguments.
    cvt(unsafe { libc::setresgid(ids.gid, ids.gid, ids.gid) })?;
    // SAFETY: as above.
    cvt(unsafe { libc::setresuid(ids.uid, ids.uid, ids.uid) })?;
    let keep: CapsHashSet = [Capability::CAP_NET_RAW, Capability::CAP_NET_ADMIN]
        .into_iter()
        .collect();
    caps::set(None, CapSet::Permitted, &keep).map_err(caps_err)?;
    caps::set(None, CapSet::Effective, &keep).map_err(caps_err)?;
    caps::set(None, CapSet::Inheritable, &keep).map_err(caps_err)?;
    // Ambient capabilities must be in both permitted and inheritable (capabilities(7)).
    caps::set(None, CapSet::Ambient, &keep).map_err(caps_err)?;
    caps::securebits::set_keepcaps(false).map_err(caps_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_root_and_missing() {
        assert_eq!(lookup("root").unwrap(), Ids { uid: 0, gid: 0 });
        assert!(lookup("carpio-no-such-user-xyz").is_err());
        assert!(lookup("a\0b").is_err());
    }
}
