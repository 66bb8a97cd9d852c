//! Router Advertisements (RFC 4861 section 4.2): what the gateway announces about its IPv6
//! prefix, and when. Sandboxes configure their addresses from it (SLAAC, /64 prefixes only),
//! their default route (the gateway's link-local address) and their nameserver (RDNSS, RFC 8106).
//! The gateway never sends Redirects: every sandbox of the network is on-link already.

use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

use super::GatewayV6;
use super::ndp::{
    ALL_NODES, OPT_SOURCE_LL, ROUTER_ADVERT, begin_icmpv6, finish_icmpv6, link_local, multicast_mac,
};
use crate::wire::MacAddr;

/// How long sandboxes keep the gateway as their default router.
pub const ROUTER_LIFETIME: u16 = 1800;
/// Prefix lifetimes, radvd's defaults: a day valid, four hours preferred.
pub const VALID_LIFETIME: u32 = 86_400;
pub const PREFERRED_LIFETIME: u32 = 14_400;
/// How long the nameserver may be used: the router lifetime, above the 3 x MaxRtrAdvInterval
/// RFC 8106 asks for.
pub const RDNSS_LIFETIME: u32 = 1800;
/// Hop limit sandboxes use for what they send (the Linux default).
pub const CUR_HOP_LIMIT: u8 = 64;

const OPT_PREFIX_INFO: u8 = 3;
const OPT_MTU: u8 = 5;
const OPT_RDNSS: u8 = 25;
const PREFIX_ON_LINK: u8 = 0x80;
const PREFIX_AUTONOMOUS: u8 = 0x40;

/// Unsolicited advertisements: every 150 to 250 s (200 on average, jittered so that networks do
/// not advertise in step), and the first few closer together (RFC 4861 section 6.2.4 allows
/// three within 16 s of each other).
const MIN_INTERVAL: Duration = Duration::from_secs(150);
const MAX_INTERVAL: Duration = Duration::from_secs(250);
const INITIAL_ADVERTS: u8 = 3;
const INITIAL_INTERVAL: Duration = Duration::from_secs(4);
/// Multicast advertisements are at least this far apart (MIN_DELAY_BETWEEN_RAS).
const MIN_DELAY_BETWEEN: Duration = Duration::from_secs(3);
/// Unicast answers to solicitations per second, at most: a sandbox flooding solicitations gets
/// no more than this out of the gateway (hosts retry a solicitation after 4 s).
const UNICAST_PER_SECOND: u32 = 20;

/// Write the gateway's Router Advertisement into `out` (cleared), from its link-local address to
/// `dst` (`dst_mac`), hop limit 255: the router lifetime, the source link-layer option, the
/// network's MTU, the prefix (on-link; autonomous too when it is a /64, the only length SLAAC
/// takes on Ethernet) and the gateway's address as the nameserver.
pub fn router_advert(
    out: &mut Vec<u8>,
    (mac, mtu): (MacAddr, u32),
    v6: &GatewayV6,
    (dst, dst_mac): (Ipv6Addr, MacAddr),
) {
    begin_icmpv6(out, (mac, dst_mac), (link_local(mac), dst), 255);
    out.extend_from_slice(&[ROUTER_ADVERT, 0, 0, 0, CUR_HOP_LIMIT, 0]);
    out.extend_from_slice(&ROUTER_LIFETIME.to_be_bytes());
    out.extend_from_slice(&[0; 8]); // reachable time, retransmission timer: unspecified
    out.extend_from_slice(&[OPT_SOURCE_LL, 1]);
    out.extend_from_slice(&mac.0);
    out.extend_from_slice(&[OPT_MTU, 1, 0, 0]);
    out.extend_from_slice(&mtu.to_be_bytes());
    let prefix = v6.subnet.trunc();
    let mut flags = PREFIX_ON_LINK;
    if prefix.prefix == 64 {
        flags |= PREFIX_AUTONOMOUS;
    }
    out.extend_from_slice(&[OPT_PREFIX_INFO, 4, prefix.prefix, flags]);
    out.extend_from_slice(&VALID_LIFETIME.to_be_bytes());
    out.extend_from_slice(&PREFERRED_LIFETIME.to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&prefix.network().octets());
    out.extend_from_slice(&[OPT_RDNSS, 3, 0, 0]);
    out.extend_from_slice(&RDNSS_LIFETIME.to_be_bytes());
    out.extend_from_slice(&v6.ip.octets());
    finish_icmpv6(out);
}

/// Where an answer to a Router Solicitation from `asker` goes: back to it, or to all nodes
/// when it has no address yet (RFC 4861 section 6.2.6).
pub fn answer_to(asker: Ipv6Addr, asker_mac: MacAddr) -> (Ipv6Addr, MacAddr) {
    if asker.is_unspecified() {
        (ALL_NODES, multicast_mac(ALL_NODES))
    } else {
        (asker, asker_mac)
    }
}

/// When the gateway advertises: the unsolicited schedule, and the limits on answers.
pub struct RaTimer {
    next: Instant,
    initial_left: u8,
    last_multicast: Option<Instant>,
    window: Instant,
    unicast_in_window: u32,
}

impl RaTimer {
    /// The first advertisement is due at `now`.
    pub fn new(now: Instant) -> Self {
        RaTimer {
            next: now,
            initial_left: INITIAL_ADVERTS,
            last_multicast: None,
            window: now,
            unicast_in_window: 0,
        }
    }

    /// Is an unsolicited advertisement due? Then it is counted as sent, and the next one is
    /// scheduled.
    pub fn due(&mut self, now: Instant) -> bool {
        if now < self.next {
            return false;
        }
        let interval = if self.initial_left > 0 {
            self.initial_left -= 1;
            INITIAL_INTERVAL
        } else {
            let spread = (MAX_INTERVAL - MIN_INTERVAL).as_millis() as u64;
            let jitter = getrandom::u64().unwrap_or(0) % (spread + 1);
            MIN_INTERVAL + Duration::from_millis(jitter)
        };
        self.next = now + interval;
        self.last_multicast = Some(now);
        true
    }

    /// How long until the next unsolicited advertisement.
    pub fn until_next(&self, now: Instant) -> Duration {
        self.next.saturating_duration_since(now)
    }

    /// May a solicitation be answered now (`multicast`: to all nodes)? A multicast answer that
    /// comes too soon after the last one is not refused but moved: the next unsolicited
    /// advertisement is brought forward to the earliest allowed time.
    pub fn may_answer(&mut self, now: Instant, multicast: bool) -> bool {
        if multicast {
            if let Some(last) = self.last_multicast {
                let earliest = last + MIN_DELAY_BETWEEN;
                if now < earliest {
                    self.next = self.next.min(earliest);
                    return false;
                }
            }
            self.last_multicast = Some(now);
            return true;
        }
        if now.duration_since(self.window) >= Duration::from_secs(1) {
            self.window = now;
            self.unicast_in_window = 0;
        }
        if self.unicast_in_window >= UNICAST_PER_SECOND {
            return false;
        }
        self.unicast_in_window += 1;
        true
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::wire::ETH_HDR_LEN;
    use smoltcp::wire::{
        EthernetAddress, EthernetFrame, Icmpv6Packet, Ipv6Packet, NdiscOption, NdiscOptionRepr,
        NdiscPrefixInfoFlags, NdiscRepr, NdiscRouterFlags, RawHardwareAddress,
    };

    const GW: MacAddr = MacAddr([2, 0x42, 0xac, 0x12, 0, 1]);

    fn v6(subnet: &str, ip: &str) -> GatewayV6 {
        GatewayV6 {
            subnet: subnet.parse().unwrap(),
            ip: ip.parse().unwrap(),
        }
    }

    /// Decode `frame` with smoltcp and check every field of the advertisement; returns the
    /// prefix flags.
    pub(crate) fn check_advert(
        frame: &[u8],
        v6: &GatewayV6,
        mtu: u32,
        dst: (Ipv6Addr, [u8; 6]),
    ) -> NdiscPrefixInfoFlags {
        let eth = EthernetFrame::new_checked(frame).unwrap();
        assert_eq!(eth.src_addr(), EthernetAddress(GW.0));
        assert_eq!(eth.dst_addr(), EthernetAddress(dst.1));
        let ip = Ipv6Packet::new_checked(eth.payload()).unwrap();
        assert_eq!(ip.src_addr(), link_local(GW));
        assert_eq!(ip.dst_addr(), dst.0);
        assert_eq!(ip.hop_limit(), 255);
        assert_eq!(
            usize::from(ip.payload_len()),
            frame.len() - ETH_HDR_LEN - 40
        );
        let icmp = Icmpv6Packet::new_checked(ip.payload()).unwrap();
        assert!(icmp.verify_checksum(&ip.src_addr(), &ip.dst_addr()));
        assert_eq!(icmp.msg_code(), 0);
        let NdiscRepr::RouterAdvert {
            hop_limit,
            flags,
            router_lifetime,
            reachable_time,
            retrans_time,
            lladdr,
            mtu: advertised_mtu,
            prefix_info,
        } = NdiscRepr::parse(&icmp).unwrap()
        else {
            panic!("not a router advertisement");
        };
        assert_eq!(hop_limit, CUR_HOP_LIMIT);
        assert_eq!(flags, NdiscRouterFlags::empty(), "no DHCPv6");
        assert_eq!(router_lifetime.secs(), 1800);
        assert_eq!((reachable_time.millis(), retrans_time.millis()), (0, 0));
        assert_eq!(lladdr, Some(RawHardwareAddress::from_bytes(&GW.0)));
        assert_eq!(advertised_mtu, Some(mtu));
        let prefix = prefix_info.expect("prefix information");
        assert_eq!(prefix.prefix_len, v6.subnet.prefix);
        assert_eq!(prefix.prefix, v6.subnet.network());
        assert_eq!(prefix.valid_lifetime.secs(), u64::from(VALID_LIFETIME));
        assert_eq!(
            prefix.preferred_lifetime.secs(),
            u64::from(PREFERRED_LIFETIME)
        );
        // RDNSS, which smoltcp does not interpret: walk the options for it.
        let options = &ip.payload()[16..];
        let mut at = 0;
        let mut rdnss = None;
        while at < options.len() {
            let option = NdiscOption::new_checked(&options[at..]).unwrap();
            if let Ok(NdiscOptionRepr::Unknown {
                type_: 25, data, ..
            }) = NdiscOptionRepr::parse(&option)
            {
                rdnss = Some(data.to_vec());
            }
            at += usize::from(option.data_len()) * 8;
        }
        let rdnss = rdnss.expect("RDNSS option");
        assert_eq!(rdnss.len(), 2 + 4 + 16, "one address");
        assert_eq!(rdnss[..2], [0, 0]);
        assert_eq!(rdnss[2..6], RDNSS_LIFETIME.to_be_bytes());
        assert_eq!(rdnss[6..], v6.ip.octets());
        prefix.flags
    }

    #[test]
    fn advert_for_a_64_is_on_link_and_autonomous() {
        let v6 = v6("fd00:1:2:3::/64", "fd00:1:2:3::1");
        let mut out = Vec::new();
        let all = (ALL_NODES, [0x33, 0x33, 0, 0, 0, 1]);
        router_advert(&mut out, (GW, 1500), &v6, (all.0, MacAddr(all.1)));
        let flags = check_advert(&out, &v6, 1500, all);
        assert_eq!(
            flags,
            NdiscPrefixInfoFlags::ON_LINK | NdiscPrefixInfoFlags::ADDRCONF
        );
    }

    #[test]
    fn advert_for_a_longer_prefix_is_on_link_only_and_names_the_network() {
        // The configured subnet may carry host bits; the prefix announced has none.
        let v6 = v6("fd00:1:2:3::40/112", "fd00:1:2:3::1");
        let mut out = Vec::new();
        let to = ("fd00:1:2:3::7".parse().unwrap(), [2, 0x42, 0, 0, 0, 7]);
        router_advert(&mut out, (GW, 9000), &v6, (to.0, MacAddr(to.1)));
        let trunc = GatewayV6 {
            subnet: v6.subnet.trunc(),
            ..v6
        };
        let flags = check_advert(&out, &trunc, 9000, to);
        assert_eq!(flags, NdiscPrefixInfoFlags::ON_LINK);
    }

    #[test]
    fn answers_go_back_to_the_asker_or_to_all_nodes() {
        let mac = MacAddr([2, 0, 0, 0, 0, 9]);
        let asker: Ipv6Addr = "fe80::9".parse().unwrap();
        assert_eq!(answer_to(asker, mac), (asker, mac));
        assert_eq!(
            answer_to(Ipv6Addr::UNSPECIFIED, mac),
            (ALL_NODES, MacAddr([0x33, 0x33, 0, 0, 0, 1]))
        );
    }

    #[test]
    fn schedule_sends_a_few_early_then_every_150_to_250_s() {
        let start = Instant::now();
        let mut timer = RaTimer::new(start);
        let mut now = start;
        for _ in 0..INITIAL_ADVERTS {
            assert!(timer.due(now));
            assert!(!timer.due(now), "once");
            assert_eq!(timer.until_next(now), INITIAL_INTERVAL);
            now += INITIAL_INTERVAL;
        }
        for _ in 0..20 {
            assert!(timer.due(now));
            let wait = timer.until_next(now);
            assert!((MIN_INTERVAL..=MAX_INTERVAL).contains(&wait), "{wait:?}");
            assert!(!timer.due(now + wait - Duration::from_millis(1)));
            now += wait;
        }
    }

    #[test]
    fn answers_are_rate_limited() {
        let start = Instant::now();
        let mut timer = RaTimer::new(start);
        assert!(timer.due(start));
        // Multicast: not within 3 s of the last multicast one; the periodic one moves up.
        let soon = start + Duration::from_secs(1);
        assert!(!timer.may_answer(soon, true));
        assert_eq!(timer.until_next(soon), Duration::from_secs(2));
        let later = start + Duration::from_secs(3);
        assert!(timer.may_answer(later, true));
        // Unicast: UNICAST_PER_SECOND per second.
        let granted = (0..100).filter(|_| timer.may_answer(later, false)).count();
        assert_eq!(granted, UNICAST_PER_SECOND as usize);
        assert!(timer.may_answer(later + Duration::from_secs(1), false));
    }
}
