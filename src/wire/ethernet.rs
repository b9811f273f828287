//! Ethernet II with up to two VLAN tags (IEEE 802.1Q, 802.1ad "QinQ").
//!
//! ```text
//!  0                 6                 12       14
//!  +-----------------+-----------------+--------+----------------
//!  | destination MAC | source MAC      | type   | payload ...
//!  +-----------------+-----------------+--------+----------------
//!
//!  tagged:           12       14       16       18       20       22
//!  | dst | src | TPID 0x88a8 | TCI | TPID 0x8100 | TCI | type | payload
//!  TCI: PCP (3 bits) | DEI (1 bit) | VID (12 bits)
//! ```
//!
//! The header fields are read through `pnet_packet`'s `EthernetPacket` and `VlanPacket` views.
//! Parsing never panics: a short frame is [`Error::Truncated`], a third tag is
//! [`Error::TooManyTags`].

use pnet_packet::ethernet::{EtherType, EthernetPacket, MutableEthernetPacket};
use pnet_packet::vlan::{ClassOfService, MutableVlanPacket, VlanPacket};

use super::Error;

/// Untagged header length: two MACs and the ethertype.
pub const HEADER_LEN: usize = 14;
/// Offset of the (first) ethertype / TPID field.
pub const TYPE_OFFSET: usize = 12;
/// Length a VLAN tag adds (TCI + the next ethertype).
pub const TAG_LEN: usize = 4;
/// Tags carpio accepts: 802.1ad outer plus 802.1Q inner.
pub const MAX_TAGS: usize = 2;

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// IEEE 802.1Q customer tag.
pub const ETHERTYPE_VLAN: u16 = 0x8100;
/// IEEE 802.1ad service tag (QinQ outer).
pub const ETHERTYPE_QINQ: u16 = 0x88a8;

/// Whether `ethertype` announces a VLAN tag.
#[inline]
pub fn is_tag(ethertype: u16) -> bool {
    ethertype == ETHERTYPE_VLAN || ethertype == ETHERTYPE_QINQ
}

/// One VLAN tag: the TPID that announced it and its TCI fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Tag {
    /// 0x8100 or 0x88a8.
    pub tpid: u16,
    /// Priority code point (3 bits).
    pub pcp: u8,
    /// Drop eligible indicator.
    pub dei: bool,
    /// VLAN id (12 bits).
    pub vid: u16,
}

/// A validated Ethernet header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    /// Tags, outer first; `None`s only after the present ones.
    pub tags: [Option<Tag>; MAX_TAGS],
    /// Ethertype of the payload (after the tags).
    pub ethertype: u16,
}

impl Repr {
    /// Parses the header at the start of `frame`.
    pub fn parse(frame: &[u8]) -> Result<Repr, Error> {
        let eth = EthernetPacket::new(frame).ok_or(Error::Truncated)?;
        let mut repr = Repr {
            dst: eth.get_destination().octets(),
            src: eth.get_source().octets(),
            tags: [None; MAX_TAGS],
            ethertype: eth.get_ethertype().0,
        };
        let mut off = HEADER_LEN;
        let mut n = 0;
        while is_tag(repr.ethertype) {
            let slot = repr.tags.get_mut(n).ok_or(Error::TooManyTags)?;
            // The VLAN view starts at the TCI, right after the TPID that announced it.
            let vlan = frame
                .get(off..)
                .and_then(VlanPacket::new)
                .ok_or(Error::Truncated)?;
            *slot = Some(Tag {
                tpid: repr.ethertype,
                pcp: vlan.get_priority_code_point().0,
                dei: vlan.get_drop_eligible_indicator() != 0,
                vid: vlan.get_vlan_identifier(),
            });
            repr.ethertype = vlan.get_ethertype().0;
            off += TAG_LEN;
            n += 1;
        }
        Ok(repr)
    }

    /// Number of tags present.
    pub fn tag_count(&self) -> usize {
        self.tags.iter().filter(|t| t.is_some()).count()
    }

    /// Header length including tags: the offset of the payload.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + TAG_LEN * self.tag_count()
    }

    /// Writes the header (with its tags) to the start of `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), Error> {
        if buf.len() < self.buffer_len() {
            return Err(Error::BufferTooSmall);
        }
        let mut eth = MutableEthernetPacket::new(buf).ok_or(Error::BufferTooSmall)?;
        eth.set_destination(self.dst.into());
        eth.set_source(self.src.into());
        let tags = self.tags.iter().flatten();
        let mut next_type = self.ethertype;
        if let Some(first) = self.tags.iter().flatten().next() {
            next_type = first.tpid;
        }
        eth.set_ethertype(EtherType(next_type));
        let mut off = HEADER_LEN;
        let mut rest = self.tags.iter().flatten().skip(1);
        for tag in tags {
            let inner = rest.next().map_or(self.ethertype, |t| t.tpid);
            let mut vlan = buf
                .get_mut(off..)
                .and_then(MutableVlanPacket::new)
                .ok_or(Error::BufferTooSmall)?;
            vlan.set_priority_code_point(ClassOfService(tag.pcp & 0x7));
            vlan.set_drop_eligible_indicator(u8::from(tag.dei));
            vlan.set_vlan_identifier(tag.vid & 0x0fff);
            vlan.set_ethertype(EtherType(inner));
            off += TAG_LEN;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qinq_round_trip() {
        let frame = [
            2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x88, 0xa8, 0xa0, 0x64, 0x81, 0x00, 0x00, 0xc8,
            0x08, 0x00,
        ];
        let r = Repr::parse(&frame).unwrap();
        assert_eq!(r.ethertype, ETHERTYPE_IPV4);
        assert_eq!(r.tags[0].unwrap().vid, 100);
        assert_eq!(r.tags[0].unwrap().pcp, 5);
        assert_eq!(r.tags[1].unwrap().vid, 200);
        assert_eq!(r.buffer_len(), 22);
        let mut out = [0u8; 22];
        r.emit(&mut out).unwrap();
        assert_eq!(out, frame);
    }
}
