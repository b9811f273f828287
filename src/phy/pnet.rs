//! [`Device`] over pnet's datalink channel: portable (any interface pnet supports), slow on
//! Linux (one recvfrom per packet, no ring, no kernel filter: 0.38 Mpps with loss in
//! feasibility.md §3). For development and for platforms without AF_XDP / AF_PACKET rings.
//! It sees every frame of the interface, including frames the host stack sends (pnet sets
//! neither a filter nor PACKET_IGNORE_OUTGOING; only its own transmissions are skipped by the
//! kernel), so the worker must classify and pass what is not ours.

use super::{Batch, DevDrop, Device, Verdict};
use crate::counters::Counters;
use crate::wire::classify::LinkType;
use pnet_datalink::{self as datalink, Channel, DataLinkReceiver, DataLinkSender};
use std::io;
use std::time::Duration;

/// A pnet Ethernet channel on one interface.
pub struct Port {
    tx: Box<dyn DataLinkSender>,
    rx: Box<dyn DataLinkReceiver>,
}

impl Port {
    /// Opens `ifname` (looked up in the calling thread's network namespace). `poll` bounds how
    /// long one [`Device::recv`] waits for its first frame.
    pub fn new(ifname: &str, poll: Duration) -> io::Result<Self> {
        let iface = datalink::interfaces()
            .into_iter()
            .find(|i| i.name == ifname)
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, format!("no interface {ifname}"))
            })?;
        let cfg = datalink::Config {
            read_timeout: Some(poll),
            ..Default::default()
        };
        match datalink::channel(&iface, cfg)? {
            Channel::Ethernet(tx, rx) => Ok(Self { tx, rx }),
            _ => Err(io::Error::other("pnet returned a non-Ethernet channel")),
        }
    }
}

impl Device for Port {
    fn recv(
        &mut self,
        batch: &mut Batch,
        drops: &mut Counters<{ DevDrop::COUNT }>,
    ) -> io::Result<usize> {
        batch.clear();
        let ts = super::afxdp::now_ns();
        while batch.len() < batch.capacity() {
            match self.rx.next() {
                Ok(frame) => {
                    if !batch.push(frame, ts, LinkType::Ethernet) {
                        drops.add(DevDrop::Oversize.index(), 1);
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
                    ) =>
                {
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(batch.len())
    }

    fn send(&mut self, batch: &Batch) -> io::Result<usize> {
        let mut sent = 0;
        for p in batch.iter().filter(|p| p.verdict == Verdict::Tx) {
            match self.tx.send_to(p.data(), None) {
                Some(Ok(())) => sent += 1,
                Some(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                Some(Err(e)) => return Err(e),
                None => break,
            }
        }
        Ok(sent)
    }
}
