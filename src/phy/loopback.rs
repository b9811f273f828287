//! An in-memory device for tests: frames pushed in are received in order; frames transmitted
//! are kept for inspection.

use super::{Batch, DevDrop, Device, Verdict};
use crate::counters::Counters;
use crate::wire::classify::LinkType;
use std::collections::VecDeque;
use std::io;

/// A loopback device holding a receive queue and the transmitted frames.
#[derive(Default)]
pub struct Loopback {
    pub rx: VecDeque<(LinkType, u64, Vec<u8>)>,
    pub tx: Vec<Vec<u8>>,
}

impl Loopback {
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues an Ethernet frame for reception.
    pub fn inject(&mut self, frame: &[u8]) {
        self.rx.push_back((LinkType::Ethernet, 0, frame.to_vec()));
    }
}

impl Device for Loopback {
    fn recv(
        &mut self,
        batch: &mut Batch,
        drops: &mut Counters<{ DevDrop::COUNT }>,
    ) -> io::Result<usize> {
        batch.clear();
        while batch.len() < batch.capacity() {
            let Some((link, ts, frame)) = self.rx.pop_front() else {
                break;
            };
            if !batch.push(&frame, ts, link) {
                drops.add(DevDrop::Oversize.index(), 1);
            }
        }
        Ok(batch.len())
    }

    fn send(&mut self, batch: &Batch) -> io::Result<usize> {
        let before = self.tx.len();
        self.tx.extend(
            batch
                .iter()
                .filter(|p| p.verdict == Verdict::Tx)
                .map(|p| p.data().to_vec()),
        );
        Ok(self.tx.len() - before)
    }

    fn exhausted(&self) -> bool {
        self.rx.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_come_back_in_order_and_tx_keeps_only_tx() {
        let mut lo = Loopback::new();
        lo.inject(&[1, 2, 3]);
        lo.inject(&[4, 5]);
        lo.inject(&vec![0u8; crate::phy::FRAME_MAX + 1]);
        let mut b = Batch::new(8);
        let mut drops = Counters::default();
        assert_eq!(lo.recv(&mut b, &mut drops).unwrap(), 2);
        assert_eq!(drops.get(DevDrop::Oversize.index()), 1);
        let frames: Vec<_> = b.iter().map(|p| p.data().to_vec()).collect();
        assert_eq!(frames, vec![vec![1, 2, 3], vec![4, 5]]);
        b.as_mut_slice()[1].verdict = Verdict::Tx;
        assert_eq!(lo.send(&b).unwrap(), 1);
        assert_eq!(lo.tx, vec![vec![4, 5]]);
        assert!(lo.exhausted());
    }

    #[test]
    fn batch_capacity_bounds_one_receive() {
        let mut lo = Loopback::new();
        for i in 0..10u8 {
            lo.inject(&[i]);
        }
        let mut b = Batch::new(4);
        let mut drops = Counters::default();
        assert_eq!(lo.recv(&mut b, &mut drops).unwrap(), 4);
        assert_eq!(lo.recv(&mut b, &mut drops).unwrap(), 4);
        assert_eq!(lo.recv(&mut b, &mut drops).unwrap(), 2);
        assert_eq!(lo.recv(&mut b, &mut drops).unwrap(), 0);
    }
}
