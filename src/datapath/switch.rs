//! The forwarding decision of a learning switch, apart from any I/O so that it can be unit-tested
//! and benchmarked on byte arrays.

use super::fdb::{Fdb, Learned, PortId};
use super::frame::FrameInfo;
use crate::wire::MacAddr;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Egress {
    /// The destination is known behind this port.
    Unicast(PortId),
    /// Broadcast, multicast or unknown unicast: every other port of the network.
    Flood,
    /// The destination sits behind the ingress port itself: nothing to send.
    Filter,
}

/// Learn the source of `info` on `ingress`, then pick where the frame goes.
pub fn decide(fdb: &Fdb, info: &FrameInfo, ingress: PortId, now: u32) -> Egress {
    learn_and_decide(fdb, info, ingress, now).0
}

/// `decide`, also telling what learning did (the worker counts refusals).
pub fn learn_and_decide(
    fdb: &Fdb,
    info: &FrameInfo,
    ingress: PortId,
    now: u32,
) -> (Egress, Learned) {
    let learned = fdb.learn(info.src, ingress, now);
    (peek(fdb, info.dst, ingress, now), learned)
}

/// Where a frame to `dst` from `ingress` goes, without learning anything: `tapnet trace`
/// explains with the very decision the workers take.
pub fn peek(fdb: &Fdb, dst: MacAddr, ingress: PortId, now: u32) -> Egress {
    if dst.is_multicast() {
        return Egress::Flood;
    }
    match fdb.lookup(dst, now) {
        Some(port) if port == ingress => Egress::Filter,
        Some(port) => Egress::Unicast(port),
        None => Egress::Flood,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::VirtioNetHdr;

    fn info(src: u8, dst: MacAddr) -> FrameInfo {
        FrameInfo {
            src: MacAddr([2, 0x42, 0, 0, 0, src]),
            dst,
            ethertype: 0x0800,
            vnet: VirtioNetHdr::default(),
        }
    }
    fn station(n: u8) -> MacAddr {
        MacAddr([2, 0x42, 0, 0, 0, n])
    }

    #[test]
    fn floods_unknown_then_forwards_learned() {
        let fdb = Fdb::new(300);
        assert_eq!(decide(&fdb, &info(1, station(2)), 10, 0), Egress::Flood);
        assert_eq!(
            decide(&fdb, &info(2, station(1)), 20, 0),
            Egress::Unicast(10)
        );
        assert_eq!(
            decide(&fdb, &info(1, station(2)), 10, 0),
            Egress::Unicast(20)
        );
    }

    #[test]
    fn broadcast_and_multicast_flood_even_when_learned() {
        let fdb = Fdb::new(300);
        decide(&fdb, &info(1, station(2)), 10, 0);
        assert_eq!(
            decide(&fdb, &info(2, MacAddr::BROADCAST), 20, 0),
            Egress::Flood
        );
        let mcast = MacAddr([0x01, 0x00, 0x5e, 0, 0, 1]);
        assert_eq!(decide(&fdb, &info(2, mcast), 20, 0), Egress::Flood);
        // IPv6 multicast (33:33:...): all-nodes, and the solicited-node groups NDP asks in.
        for group in [[0x33, 0x33, 0, 0, 0, 1], [0x33, 0x33, 0xff, 0, 0, 2]] {
            assert_eq!(decide(&fdb, &info(2, MacAddr(group)), 20, 0), Egress::Flood);
        }
    }

    #[test]
    fn filters_frames_back_to_their_own_port() {
        let fdb = Fdb::new(300);
        decide(&fdb, &info(1, station(9)), 10, 0);
        decide(&fdb, &info(2, station(9)), 10, 0);
        assert_eq!(decide(&fdb, &info(1, station(2)), 10, 0), Egress::Filter);
    }

    #[test]
    fn peek_decides_without_learning() {
        let fdb = Fdb::new(300);
        assert_eq!(peek(&fdb, station(2), 10, 0), Egress::Flood);
        assert!(fdb.is_empty(), "peek learned nothing");
        decide(&fdb, &info(2, station(1)), 20, 0);
        assert_eq!(peek(&fdb, station(2), 10, 0), Egress::Unicast(20));
        assert_eq!(peek(&fdb, station(2), 20, 0), Egress::Filter);
        assert_eq!(peek(&fdb, MacAddr::BROADCAST, 10, 0), Egress::Flood);
    }

    #[test]
    fn follows_a_station_that_moves() {
        let fdb = Fdb::new(300);
        decide(&fdb, &info(1, station(2)), 10, 0);
        decide(&fdb, &info(1, station(2)), 30, 1);
        assert_eq!(
            decide(&fdb, &info(2, station(1)), 20, 1),
            Egress::Unicast(30)
        );
    }
}
