//! What the gateway's classifiers (`classify` for IPv4 and ARP, `classify_v6`) decide a frame
//! is: the one type both return, in a file of its own so that neither imports the other's.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV6};

use super::tcp_nat::FlowKey;
use crate::wire::MacAddr;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inbound {
    /// For smoltcp: ARP for the gateway address, ping of it, TCP segments of known flows, and
    /// TCP it must refuse (smoltcp answers RST where no socket listens).
    Stack,
    /// A TCP SYN (without ACK) that may open a NAT flow.
    TcpSyn(FlowKey),
    /// A TCP SYN over IPv6 that may open a NAT flow; `src_mac` is the sandbox's, so that
    /// smoltcp knows where to answer.
    TcpSyn6 {
        tuple: super::udp_nat::FlowKey6,
        src_mac: MacAddr,
    },
    /// A UDP datagram for NAT or the gateway's DNS; `payload` is its byte range in the frame.
    Udp {
        tuple: FlowKey,
        src_mac: MacAddr,
        payload: (usize, usize),
    },
    /// An ICMP echo request to ping through the host; `icmp` is its byte range in the frame.
    Echo {
        key: (Ipv4Addr, u16, Ipv4Addr),
        src_mac: MacAddr,
        icmp: (usize, usize),
    },
    /// An ICMPv6 echo request to ping through the host; `icmp` is its byte range.
    EchoOut6 {
        key: super::icmp_nat::EchoKey6,
        src_mac: MacAddr,
        icmp: (usize, usize),
    },
    /// A Neighbour Solicitation for one of the gateway's IPv6 addresses (`target`).
    NeighborSolicit {
        src_mac: MacAddr,
        src: Ipv6Addr,
        target: Ipv6Addr,
    },
    /// A Router Solicitation (`src` is :: from a host with no address yet).
    RouterSolicit {
        src_mac: MacAddr,
        src: Ipv6Addr,
    },
    /// An ICMPv6 echo request to the gateway's address `dst`; `icmp` is its byte range.
    Echo6 {
        src_mac: MacAddr,
        src: Ipv6Addr,
        dst: Ipv6Addr,
        icmp: (usize, usize),
    },
    /// IPv6 the gateway cannot carry: answered with Destination Unreachable quoting `packet`
    /// (the IPv6 packet's byte range).
    Refuse6 {
        src_mac: MacAddr,
        src: Ipv6Addr,
        packet: (usize, usize),
    },
    /// A UDP datagram over IPv6 for NAT (to the gateway's address: the host's loopback).
    Udp6 {
        tuple: super::udp_nat::FlowKey6,
        src_mac: MacAddr,
        payload: (usize, usize),
    },
    /// A UDP query to the gateway's IPv6 address, port 53; `payload` is its byte range.
    Dns6 {
        src: SocketAddrV6,
        src_mac: MacAddr,
        payload: (usize, usize),
    },
    /// A DHCPv4 client's message to the gateway's server (UDP 68 → 67, broadcast or to the
    /// gateway); `payload` is its byte range in the frame.
    Dhcp {
        src_mac: MacAddr,
        payload: (usize, usize),
    },
    Ignore,
}
