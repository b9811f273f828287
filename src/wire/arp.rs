//! ARP for IPv4 over Ethernet (RFC 826).
//!
//! ```text
//!  0        2        4    5    6        8                 14       18                24       28
//!  +--------+--------+----+----+--------+-----------------+--------+-----------------+--------+
//!  | htype  | ptype  |hlen|plen| oper   | sender MAC      | sender | target MAC      | target |
//!  | 0x0001 | 0x0800 | 6  | 4  |        |                 | IPv4   |                 | IPv4   |
//!  +--------+--------+----+----+--------+-----------------+--------+-----------------+--------+
//! ```
//!
//! Only the Ethernet/IPv4 shape is accepted (carp(4) answers ARP for its virtual addresses,
//! OpenBSD `netinet/if_ether.c` `in_arpinput` checks the same); fields are read through
//! `pnet_packet`'s `ArpPacket`. Parsing never panics: a short packet is [`Error::Truncated`],
//! another hardware/protocol shape is [`Error::Malformed`].

use std::net::Ipv4Addr;

use pnet_packet::arp::{ArpHardwareType, ArpOperation, ArpPacket, MutableArpPacket};
use pnet_packet::ethernet::EtherType;

use super::Error;

/// Length of an Ethernet/IPv4 ARP packet.
pub const PACKET_LEN: usize = 28;
pub const HTYPE_ETHERNET: u16 = 1;
pub const PTYPE_IPV4: u16 = 0x0800;
pub const HLEN_ETHERNET: u8 = 6;
pub const PLEN_IPV4: u8 = 4;
pub const OP_REQUEST: u16 = 1;
pub const OP_REPLY: u16 = 2;

/// A validated Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Operation: [`OP_REQUEST`], [`OP_REPLY`] or another value carried as is.
    pub op: u16,
    pub sender_mac: [u8; 6],
    pub sender_ip: Ipv4Addr,
    pub target_mac: [u8; 6],
    pub target_ip: Ipv4Addr,
}

impl Repr {
    pub fn parse(buf: &[u8]) -> Result<Repr, Error> {
        let arp = ArpPacket::new(buf).ok_or(Error::Truncated)?;
        if arp.get_hardware_type().0 != HTYPE_ETHERNET
            || arp.get_protocol_type().0 != PTYPE_IPV4
            || arp.get_hw_addr_len() != HLEN_ETHERNET
            || arp.get_proto_addr_len() != PLEN_IPV4
        {
            return Err(Error::Malformed);
        }
        Ok(Repr {
            op: arp.get_operation().0,
            sender_mac: arp.get_sender_hw_addr().octets(),
            sender_ip: arp.get_sender_proto_addr(),
            target_mac: arp.get_target_hw_addr().octets(),
            target_ip: arp.get_target_proto_addr(),
        })
    }

    pub fn buffer_len(&self) -> usize {
        PACKET_LEN
    }

    pub fn emit(&self, buf: &mut [u8]) -> Result<(), Error> {
        let mut arp = MutableArpPacket::new(buf).ok_or(Error::BufferTooSmall)?;
        arp.set_hardware_type(ArpHardwareType(HTYPE_ETHERNET));
        arp.set_protocol_type(EtherType(PTYPE_IPV4));
        arp.set_hw_addr_len(HLEN_ETHERNET);
        arp.set_proto_addr_len(PLEN_IPV4);
        arp.set_operation(ArpOperation(self.op));
        arp.set_sender_hw_addr(self.sender_mac.into());
        arp.set_sender_proto_addr(self.sender_ip);
        arp.set_target_hw_addr(self.target_mac.into());
        arp.set_target_proto_addr(self.target_ip);
        Ok(())
    }
}
