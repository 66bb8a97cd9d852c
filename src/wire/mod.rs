//! The wire layer: frame types and one checked view per protocol, shared by every part of the
//! data plane (switch, gateway, offloads, overlay, capture). Each view wraps borrowed bytes; its
//! `new_checked` makes sure the fixed header is there, so no field accessor can panic, and the
//! variable parts (options, payload) come from accessors that check the length fields and say
//! which one is wrong. Nothing here allocates, and nothing here imports the rest of tapnet.
//!
//! The views are written here rather than wrapping smoltcp's or etherparse's: they read the
//! Ethernet, IPv4 and TCP headers of a frame, with the same checks, in about a third of the
//! time those crates take (`benches/wire.rs`), and the data plane needs checks in stages (a flow
//! hash takes any IPv4 version, the gateway's classifier does not bound TCP by the total
//! length), which those crates' all-or-nothing constructors do not give. The tests compare
//! every view with etherparse.

pub mod arp;
pub mod ethernet;
pub mod ethertype;
pub mod icmp;
pub mod icmpv6;
pub mod ipv4;
pub mod ipv4net;
pub mod ipv6;
pub mod ipv6net;
pub mod mac;
pub mod tcp;
pub mod udp;
pub mod vnet;
pub mod vxlan;

pub use arp::ArpPacket;
pub use ethernet::{ETH_HDR_LEN, Ethernet, VlanTag};
pub use icmp::Icmpv4;
pub use icmpv6::{Icmpv6, Ndp};
pub use ipv4::Ipv4Packet;
pub use ipv4net::Ipv4Net;
pub use ipv6::Ipv6Packet;
pub use ipv6net::Ipv6Net;
pub use mac::MacAddr;
pub use tcp::TcpSegment;
pub use udp::UdpDatagram;
pub use vnet::*;
pub use vxlan::VxlanPacket;
pub mod check;
pub use check::check_arbitrary_bytes;
