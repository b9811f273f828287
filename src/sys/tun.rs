//! A TUN device that lives exactly as long as the process holding it (issue 12 follow-up):
//! route health injection points BIRD's static routes at it (`route A/32 via "DEV"` with
//! `check link`), so the routes depend on the device rather than on carpio remembering to
//! withdraw them. The device is created without `IFF_PERSIST`: the kernel deletes it when the
//! last descriptor of it closes (tun.c `tun_chr_close` → `tun_detach` unregisters a
//! non-persistent device), i.e. when carpio dies of anything — SIGKILL, the OOM killer, a panic —
//! and BIRD's device protocol, told by netlink, takes the routes out of its table and BGP
//! withdraws them.
//!
//! No packet goes through the device: it has no address (IPv6 is turned off on it so the kernel
//! does not give it a link-local address and send MLD/DAD into a queue nobody reads), and it is
//! only a liveness and readiness flag. Its carrier is that flag's second half: the device starts
//! without carrier and [`Tun::set_carrier`] turns it on once BIRD holds carpio's current route
//! set (so a restarted carpio does not re-announce what BIRD kept from the previous run before
//! it has told BIRD what it wants). `TUNSETCARRIER` (Linux 5.0) acts on the descriptor and needs
//! no capability, so the route thread can flip it after the privilege drop.
//!
//! Opening `/dev/net/tun` and `TUNSETIFF` follow the kernel's tuntap.rst; the few ioctls are
//! written here rather than through a crate because the TUN crates on crates.io are built for
//! moving packets (async runtimes, queue handling) and this needs none of it.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;

use socket2::{Domain, Socket, Type};

/// `IFNAMSIZ` less the terminating NUL.
pub const MAX_NAME: usize = libc::IFNAMSIZ - 1;

/// Whether `name` is usable as the device's name and inside a BIRD string: 1 to 15 bytes of
/// `[A-Za-z0-9_.-]`, not `.` or `..` (the kernel's `dev_valid_name` rejects those, `/`, `:` and
/// white space; `%` would make the kernel pick a number).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    if !valid_name(name) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad interface name {name:?}"),
        ));
    }
    // SAFETY: ifreq is plain data (a name array and a union of integers, addresses and a
    // pointer); all zero is a valid value of each member.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    Ok(req)
}

fn cvt(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The device; it disappears when this value (and every copy of its descriptor) is gone.
#[derive(Debug)]
pub struct Tun {
    file: File,
    name: String,
}

impl Tun {
    /// Creates the non-persistent TUN device `name` in the calling thread's network namespace,
    /// without carrier, administratively up, with IPv6 off. Needs CAP_NET_ADMIN. A device of
    /// that name held by another process (another carpio) is `EBUSY`.
    pub fn create(name: &str) -> io::Result<Tun> {
        let mut req = ifreq(name)?;
        // std opens with O_CLOEXEC: children (health-check scripts, `ip`, `nft`) must not
        // inherit the descriptor, or the device would outlive carpio in them.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
            .map_err(|e| io::Error::new(e.kind(), format!("/dev/net/tun: {e}")))?;
        req.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: `req` is a valid, NUL-terminated `struct ifreq` living across the call;
        // TUNSETIFF reads it and writes back at most `sizeof(struct ifreq)` bytes (the name the
        // kernel chose, the same here: no `%`). `file` is an open descriptor of /dev/net/tun.
        cvt(unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) }).map_err(|e| {
            let hint = if e.raw_os_error() == Some(libc::EBUSY) {
                " (in use: is another carpio running in this namespace?)"
            } else {
                ""
            };
            io::Error::new(e.kind(), format!("TUNSETIFF {name}: {e}{hint}"))
        })?;
        let tun = Tun {
            file,
            name: name.to_string(),
        };
        tun.set_carrier(false)?;
        // Best effort: without IPv6 on the host there is no such file, and nothing to turn off.
        let _ = std::fs::write(
            format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"),
            "1\n",
        );
        tun.set_admin_up()?;
        Ok(tun)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Turns the carrier on or off (what BIRD's `check link` follows).
    pub fn set_carrier(&self, on: bool) -> io::Result<()> {
        let v: libc::c_int = on.into();
        // SAFETY: TUNSETCARRIER reads one int through the pointer, which points at `v` for the
        // duration of the call; `file` is the attached tun descriptor.
        cvt(unsafe { libc::ioctl(self.file.as_raw_fd(), libc::TUNSETCARRIER, &v) })
            .map_err(|e| io::Error::new(e.kind(), format!("TUNSETCARRIER {}: {e}", self.name)))
    }

    /// `IFF_UP` by SIOCGIFFLAGS/SIOCSIFFLAGS on a socket of the calling thread's namespace (the
    /// one the device was just created in).
    fn set_admin_up(&self) -> io::Result<()> {
        let sock = Socket::new(Domain::IPV4, Type::DGRAM, None)?;
        let mut req = ifreq(&self.name)?;
        // SAFETY: `req` is a valid `struct ifreq` naming the device; SIOCGIFFLAGS writes the
        // flags into its union and keeps no pointer. `sock` is open for the call.
        cvt(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) })?;
        // SAFETY: SIOCGIFFLAGS just stored the flags member of the union.
        let flags = unsafe { req.ifr_ifru.ifru_flags };
        req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
        // SAFETY: as above; SIOCSIFFLAGS reads the name and the flags.
        cvt(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) })
            .map_err(|e| io::Error::new(e.kind(), format!("{} up: {e}", self.name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in [
            "carpio-rt",
            "cio-12345-rt",
            "a",
            "x.y_z-0",
            "fifteen-chars-x",
        ] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "sixteen-chars-xx",
            "a/b",
            "a:b",
            "a b",
            "rt%d",
            "a\"b",
            "\u{e9}",
            "a\0",
        ] {
            assert!(!valid_name(bad), "{bad:?}");
            assert!(ifreq(bad).is_err(), "{bad:?}");
        }
    }

    /// In a namespace of its own (never the root one): created up without carrier and without
    /// an address, carrier follows `set_carrier`, a second holder is refused, and the device is
    /// gone once the descriptor closes.
    #[test]
    fn lives_as_long_as_its_descriptor() {
        let mut lab = crate::lab::Lab::new("tun").unwrap();
        lab.ns("n").unwrap();
        let show = |lab: &crate::lab::Lab| {
            lab.ip("n", &["addr", "show", "dev", "cio-rt"])
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        };
        let tun = lab.run_in("n", || Tun::create("cio-rt")).unwrap().unwrap();
        assert_eq!(tun.name(), "cio-rt");
        let s = show(&lab).unwrap();
        assert!(s.contains("NO-CARRIER") && s.contains(",UP"), "{s}");
        assert!(!s.contains("inet"), "no address: {s}");
        assert!(s.contains("link/none"), "a TUN device: {s}");
        tun.set_carrier(true).unwrap();
        let s = show(&lab).unwrap();
        assert!(s.contains("LOWER_UP") && !s.contains("NO-CARRIER"), "{s}");
        let busy = lab.run_in("n", || Tun::create("cio-rt")).unwrap();
        let e = busy.expect_err("a second holder");
        assert_eq!(e.raw_os_error(), None, "wrapped with the hint");
        assert!(e.to_string().contains("another carpio"), "{e}");
        tun.set_carrier(false).unwrap();
        assert!(show(&lab).unwrap().contains("NO-CARRIER"));
        drop(tun);
        // The kernel unregisters it when the last descriptor closes (bounded wait: the
        // netdevice teardown is asynchronous).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while show(&lab).is_ok() {
            assert!(
                std::time::Instant::now() < deadline,
                "device outlived its descriptor"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}
