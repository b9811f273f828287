//! CPU affinity: workers are pinned one per core (DESIGN.md), and on veth the AF_PACKET sender's
//! CPU picks the peer's RX queue (feasibility.md §3), which the multi-queue tests rely on.

use std::io;

/// Pins the calling thread to `cpu` (sched_setaffinity(0, ...) affects the calling thread).
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "cpu out of range",
        ));
    }
    // SAFETY: cpu_set_t is a plain bit array; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu < CPU_SETSIZE` (checked above), so the bit is inside `set`.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 = the calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Number of CPUs this thread may run on.
pub fn available() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_to_cpu0_and_reject_out_of_range() {
        let r = std::thread::spawn(|| pin_current_thread(0)).join().unwrap();
        assert!(r.is_ok());
        assert!(pin_current_thread(usize::MAX).is_err());
    }
}
