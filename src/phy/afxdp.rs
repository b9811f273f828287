//! [`Device`] over an AF_XDP socket ([`crate::sys::afxdp`]): receive copies each frame from the
//! UMEM into the worker's [`Batch`] (so UMEM frames go straight back to the fill ring and the
//! worker keeps its headroom), transmit copies `Verdict::Tx` packets into free UMEM frames.
//! The XDP program that steers traffic to the socket is [`crate::sys::xdp::Program`]; this type
//! only owns the socket. One `Port` per RX queue, each driven by its own worker thread.

use super::{Batch, DevDrop, Device, Verdict};
use crate::counters::Counters;
use crate::sys::afxdp::{Socket, SocketConfig};
use crate::wire::classify::LinkType;
use std::io;
use std::os::fd::{AsRawFd, RawFd};

/// One AF_XDP socket as a batched device.
pub struct Port {
    sock: Socket,
}

/// Receive time for a batch: one clock read per batch, not per packet (the device is the I/O
/// shell; protocol logic gets time as a parameter).
pub(crate) fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

impl Port {
    /// Opens a socket on `queue` of `ifname` (in the calling thread's network namespace).
    pub fn new(ifname: &str, queue: u32, cfg: &SocketConfig) -> io::Result<Self> {
        Ok(Self {
            sock: Socket::new(ifname, queue, cfg)?,
        })
    }

    /// The socket, e.g. to register it in the XSKMAP or read its stats and drops.
    pub fn socket(&self) -> &Socket {
        &self.sock
    }

    pub fn socket_mut(&mut self) -> &mut Socket {
        &mut self.sock
    }
}

impl AsRawFd for Port {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

impl Device for Port {
    fn recv(
        &mut self,
        batch: &mut Batch,
        drops: &mut Counters<{ DevDrop::COUNT }>,
    ) -> io::Result<usize> {
        batch.clear();
        let cap = batch.capacity().min(u32::MAX as usize) as u32;
        let rx = self.sock.rx(cap);
        if rx.is_empty() {
            return Ok(0);
        }
        let ts = now_ns();
        for frame in rx.iter() {
            if !batch.push(frame, ts, LinkType::Ethernet) {
                drops.add(DevDrop::Oversize.index(), 1);
            }
        }
        Ok(batch.len())
    }

    fn send(&mut self, batch: &Batch) -> io::Result<usize> {
        let mut pending = batch.iter().filter(|p| p.verdict == Verdict::Tx).peekable();
        let mut sent = 0;
        // Two rounds at most: the second after reclaiming completions; whatever still does not
        // fit is left unsent (counted by the socket as drop_xsk_tx_no_frame) — never spin.
        for _ in 0..2 {
            if pending.peek().is_none() {
                break;
            }
            let mut tx = self.sock.tx(batch.len() as u32);
            while tx.remaining() > 0 {
                let Some(p) = pending.peek() else { break };
                if !tx.push(p.data()) {
                    break;
                }
                pending.next();
                sent += 1;
            }
            drop(tx);
            self.sock.complete();
        }
        Ok(sent)
    }
}

#[cfg(test)]
mod tests {
    /// Each worker thread owns its ports: they must be movable to it.
    #[test]
    fn ports_are_send() {
        fn send<T: Send>() {}
        send::<super::Port>();
        send::<crate::phy::afpacket::Port>();
        send::<crate::phy::pnet::Port>();
        send::<crate::sys::xdp::Program>();
    }
}
