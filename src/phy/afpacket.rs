//! [`Device`] over AF_PACKET ([`crate::sys::afpacket`]): a TPACKET_V2 or V3 ring (one per
//! worker, in a PACKET_FANOUT hash group) filtered by a cBPF program, and sendmmsg transmit. Pair
//! it with [`crate::sys::nft::IngressDrop`] so the host stack ignores the services carpio handles.

use super::{Batch, DevDrop, Device, FRAME_MAX, Verdict};
use crate::counters::Counters;
use crate::sys::afpacket::{Ring, RingConfig, SEND_BATCH, Sender};
use crate::sys::cbpf::Insn;
use crate::wire::classify::LinkType;
use std::io;
use std::time::Duration;

/// A receive ring and a transmit socket on one interface.
pub struct Port {
    ring: Ring,
    tx: Sender,
}

impl Port {
    pub fn new(ifname: &str, filter: &[Insn], cfg: &RingConfig) -> io::Result<Self> {
        Ok(Self {
            ring: Ring::new(ifname, filter, cfg)?,
            tx: Sender::new(ifname)?,
        })
    }

    /// Waits up to `timeout` for received frames.
    pub fn wait(&self, timeout: Duration) -> io::Result<bool> {
        self.ring.wait(timeout)
    }

    pub fn ring(&self) -> &Ring {
        &self.ring
    }
}

impl Device for Port {
    fn recv(
        &mut self,
        batch: &mut Batch,
        drops: &mut Counters<{ DevDrop::COUNT }>,
    ) -> io::Result<usize> {
        batch.clear();
        let cap = batch.capacity();
        self.ring.recv_with(cap, |frame, ts| {
            if frame.len() > FRAME_MAX {
                // Consumed and counted: it can never fit.
                drops.add(DevDrop::Oversize.index(), 1);
                return true;
            }
            // The batch has room: recv_with delivers at most `cap` frames.
            batch.push(frame, ts, LinkType::Ethernet)
        });
        Ok(batch.len())
    }

    fn send(&mut self, batch: &Batch) -> io::Result<usize> {
        let mut frames = [&[][..]; SEND_BATCH];
        let mut n = 0;
        let mut sent = 0;
        for p in batch.iter().filter(|p| p.verdict == Verdict::Tx) {
            if let Some(slot) = frames.get_mut(n) {
                *slot = p.data();
                n += 1;
            }
            if n == SEND_BATCH {
                sent += self.tx.send(frames.iter().copied())?;
                n = 0;
            }
        }
        if n > 0 {
            sent += self.tx.send(frames[..n].iter().copied())?;
        }
        Ok(sent)
    }
}
