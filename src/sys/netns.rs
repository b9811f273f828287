//! Network namespaces: enter one on the current thread.
//!
//! setns(2) with `CLONE_NEWNET` changes the namespace of the calling *thread* only
//! (feasibility.md §6: two threads each entered a different namespace at the same time). So a
//! thread that enters a namespace should be a dedicated one; [`run_in`] spawns such a thread.
//! Sockets created by that thread live in the namespace for their whole life, and interface
//! names resolve there (if_nametoindex, netlink), but `/sys/class/net` still shows the namespace
//! sysfs was mounted in: use netlink or ioctls, not sysfs.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

/// Where `ip netns add NAME` bind-mounts the namespace (iproute2's NETNS_RUN_DIR).
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// Path of the namespace `name` as `ip netns` creates it. Rejects names with a `/` or empty.
pub fn path(name: &str) -> io::Result<PathBuf> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad namespace name {name:?}"),
        ));
    }
    Ok(PathBuf::from(NETNS_RUN_DIR).join(name))
}

/// Moves the calling thread into the network namespace `name` (created by `ip netns add`).
/// Only this thread changes namespace; the process's other threads stay where they are.
pub fn enter(name: &str) -> io::Result<()> {
    let f = File::open(path(name)?)?;
    // SAFETY: `f` is an open file descriptor for the duration of the call; setns only reads it
    // and changes the calling thread's namespace, touching no memory of ours.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Runs `f` on a new thread that first enters the namespace `name`, and returns its result.
/// The thread ends with `f`, so no other code ever runs in the wrong namespace. A panic in `f`
/// is returned as an error rather than propagated.
pub fn run_in<F, R>(name: &str, f: F) -> io::Result<R>
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    std::thread::scope(|s| {
        let h = s.spawn(|| {
            enter(name)?;
            Ok(f())
        });
        h.join()
            .unwrap_or_else(|_| Err(io::Error::other("thread in namespace panicked")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_rejects_traversal() {
        assert!(path("").is_err());
        assert!(path("..").is_err());
        assert!(path("a/b").is_err());
        assert_eq!(
            path("cio-1-x").unwrap(),
            PathBuf::from("/run/netns/cio-1-x")
        );
    }

    #[test]
    fn enter_missing_namespace_is_an_error() {
        let r = run_in("cio-does-not-exist-0", || 1);
        assert!(r.is_err());
    }
}
