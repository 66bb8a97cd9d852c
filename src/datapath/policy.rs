//! Inter-sandbox policy in the switch: `icc=false` (sandboxes reach only the network's service
//! ports: the gateway, the VTEP) and ordered allow/deny rules over addresses, protocol and
//! port, first match wins, then the network's default. Stateful: an admitted flow enters the
//! network's connection table (`conntrack.rs`) and its later frames, both ways, pass without
//! the rules. The control plane builds a `PolicyTable` and swaps it into the workers (an
//! `Arc`, by `Command::SetPolicy`); a frame's check allocates nothing.
//!
//! Which frames are checked: IP frames a sandbox's port sends (to another sandbox, or through
//! the gateway, matched on the real destination), except neighbour discovery and MLD, and
//! DNS to the gateway's own addresses (the network's DNS server stays reachable). Frames from
//! a service port (the gateway's published ports and NAT replies, the VTEP's frames, checked
//! at their ingress host) are not checked: they enter or refresh the connection table so the
//! sandbox's reply passes.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::conntrack::{ConnTable, FlowKey, Track};
use crate::wire::ethertype::{IPV4 as ETHERTYPE_IPV4, IPV6 as ETHERTYPE_IPV6};
use crate::wire::{ETH_HDR_LEN, Ipv4Packet, Ipv6Packet};

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;
const DNS_PORT: u16 = 53;

/// An address of either family, IPv4 mapped into IPv6 (`::ffff:a.b.c.d`), so one comparison
/// serves both.
pub type Addr = u128;

pub fn addr_v4(ip: Ipv4Addr) -> Addr {
    u128::from(ip.to_ipv6_mapped())
}
pub fn addr_v6(ip: Ipv6Addr) -> Addr {
    u128::from(ip)
}
/// The address as it is written: IPv4 unmapped.
pub fn addr_ip(a: Addr) -> std::net::IpAddr {
    let v6 = Ipv6Addr::from(a);
    match v6.to_ipv4_mapped() {
        Some(v4) => v4.into(),
        None => v6.into(),
    }
}

/// A prefix of either family (IPv4 as its mapped /96+n).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: Addr,
    mask: Addr,
}

impl Cidr {
    pub fn v4(ip: Ipv4Addr, prefix: u8) -> Self {
        Self::of(addr_v4(ip), 96 + u32::from(prefix.min(32)))
    }
    pub fn v6(ip: Ipv6Addr, prefix: u8) -> Self {
        Self::of(addr_v6(ip), u32::from(prefix.min(128)))
    }
    pub fn host(a: Addr) -> Self {
        Self::of(a, 128)
    }
    fn of(addr: Addr, bits: u32) -> Self {
        let mask = if bits == 0 {
            0
        } else {
            u128::MAX << (128 - bits)
        };
        Cidr {
            addr: addr & mask,
            mask,
        }
    }
    #[inline]
    pub fn contains(&self, a: Addr) -> bool {
        a & self.mask == self.addr
    }
}

/// A rule's protocol.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    #[default]
    Any,
    Tcp,
    Udp,
    /// ICMP or ICMPv6.
    Icmp,
}

impl Proto {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "any" => Some(Proto::Any),
            "tcp" => Some(Proto::Tcp),
            "udp" => Some(Proto::Udp),
            "icmp" => Some(Proto::Icmp),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Proto::Any => "any",
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Icmp => "icmp",
        }
    }
    #[inline]
    fn matches(self, proto: u8) -> bool {
        match self {
            Proto::Any => true,
            Proto::Tcp => proto == PROTO_TCP,
            Proto::Udp => proto == PROTO_UDP,
            Proto::Icmp => proto == PROTO_ICMP || proto == PROTO_ICMPV6,
        }
    }
}

/// A rule with its selectors resolved to prefixes. `None`: any address; an empty list: a
/// selector that names nothing on the network now (the rule matches nothing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleSpec {
    pub name: String,
    pub from: Option<Vec<Cidr>>,
    pub to: Option<Vec<Cidr>>,
    pub proto: Proto,
    /// Destination ports, inclusive (TCP and UDP only).
    pub ports: Option<(u16, u16)>,
    pub allow: bool,
}

/// What the control plane asks of a network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicySpec {
    /// Sandboxes may talk to each other (`icc`, on by default).
    pub icc: bool,
    /// What a flow no rule matches gets (`policy_default`).
    pub default_allow: bool,
    pub rules: Vec<RuleSpec>,
    /// The gateway's addresses: DNS to them is never checked.
    pub gateways: Vec<Addr>,
    /// The connection table's bound (`policy_flows`).
    pub max_flows: usize,
}

impl PolicySpec {
    /// Nothing to check: every frame passes as if there were no policy.
    pub fn is_open(&self) -> bool {
        self.icc && self.default_allow && self.rules.is_empty()
    }
    /// Rules or a deny default: frames are tracked.
    pub fn tracks(&self) -> bool {
        !self.default_allow || !self.rules.is_empty()
    }
}

/// Frames and bytes a rule decided (the first frame of each flow it admitted, every frame it
/// refused: as iptables counts a rule behind an ESTABLISHED accept).
#[derive(Debug, Default)]
pub struct RuleCounters {
    pub packets: AtomicU64,
    pub bytes: AtomicU64,
}

impl RuleCounters {
    fn count(&self, bytes: usize) {
        self.packets.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

pub struct Rule {
    pub spec: RuleSpec,
    pub counters: Arc<RuleCounters>,
}

impl Rule {
    #[inline]
    fn matches(&self, f: &Flow) -> bool {
        let s = &self.spec;
        s.proto.matches(f.proto)
            && s.ports.is_none_or(|(lo, hi)| {
                (f.proto == PROTO_TCP || f.proto == PROTO_UDP) && (lo..=hi).contains(&f.dport)
            })
            && s.from
                .as_ref()
                .is_none_or(|c| c.iter().any(|c| c.contains(f.src)))
            && s.to
                .as_ref()
                .is_none_or(|c| c.iter().any(|c| c.contains(f.dst)))
    }
}

/// A network's policy as the workers hold it.
pub struct PolicyTable {
    /// What it was built from: an unchanged spec is not pushed again.
    pub spec: PolicySpec,
    pub spec_icc: bool,
    pub default_allow: bool,
    pub rules: Vec<Rule>,
    pub gateways: Vec<Addr>,
    /// Rules or a deny default: IP frames are checked and tracked.
    pub tracks: bool,
}

impl PolicyTable {
    /// Build from `spec`, keeping the counters of `previous`'s rules of the same name.
    pub fn build(spec: &PolicySpec, previous: Option<&PolicyTable>) -> Self {
        let rules = spec
            .rules
            .iter()
            .map(|r| Rule {
                counters: previous
                    .and_then(|p| p.rules.iter().find(|o| o.spec.name == r.name))
                    .map(|o| o.counters.clone())
                    .unwrap_or_default(),
                spec: r.clone(),
            })
            .collect();
        PolicyTable {
            spec: spec.clone(),
            spec_icc: spec.icc,
            default_allow: spec.default_allow,
            rules,
            gateways: spec.gateways.clone(),
            tracks: spec.tracks(),
        }
    }

    /// Do sandbox ports reach only service ports?
    #[inline]
    pub fn isolates(&self) -> bool {
        !self.spec_icc
    }

    /// The first rule matching `f`, else `None` (the default decides).
    pub fn first_match(&self, f: &Flow) -> Option<usize> {
        self.rules.iter().position(|r| r.matches(f))
    }
}

/// Policy drops of a network, by reason (`policy_drops{reason=...}`).
#[derive(Debug, Default)]
pub struct PolicyCounters {
    pub icc: AtomicU64,
    pub rule: AtomicU64,
    pub default: AtomicU64,
    pub table_full: AtomicU64,
}

/// A copy of `PolicyCounters`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyDrops {
    pub icc: u64,
    pub rule: u64,
    pub default: u64,
    pub table_full: u64,
}

impl PolicyCounters {
    pub fn snapshot(&self) -> PolicyDrops {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        PolicyDrops {
            icc: get(&self.icc),
            rule: get(&self.rule),
            default: get(&self.default),
            table_full: get(&self.table_full),
        }
    }
}

/// The fields of an IP frame the policy looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    pub src: Addr,
    pub dst: Addr,
    pub proto: u8,
    /// TCP/UDP ports; an ICMP echo's identifier in both; zero otherwise.
    pub sport: u16,
    pub dport: u16,
    /// TCP flags (zero for other protocols).
    pub tcp_flags: u8,
    /// Neighbour discovery or MLD: never checked (a station must find its neighbours).
    pub exempt: bool,
}

impl Flow {
    pub fn key(&self) -> FlowKey {
        FlowKey::new(self.src, self.sport, self.dst, self.dport, self.proto)
    }
}

/// Read the flow of an Ethernet frame (no virtio-net header): `None` for anything but
/// untagged IPv4 and IPv6, or a header too short to say. Never panics on any bytes.
pub fn flow_of(eth: &[u8]) -> Option<Flow> {
    let ethertype = u16::from_be_bytes([*eth.get(12)?, *eth.get(13)?]);
    let l3 = eth.get(ETH_HDR_LEN..)?;
    match ethertype {
        ETHERTYPE_IPV4 => {
            let ip = Ipv4Packet::new_checked(l3).ok()?;
            let (start, end) = ip.payload_range().ok()?;
            let proto = ip.protocol();
            let l4 = if ip.is_first_fragment() {
                l3.get(start..end)?
            } else {
                &[]
            };
            Some(transport(addr_v4(ip.src()), addr_v4(ip.dst()), proto, l4))
        }
        ETHERTYPE_IPV6 => {
            let ip = Ipv6Packet::new_checked(l3).ok()?;
            let (_, end) = ip.payload_range().ok()?;
            let up = ip.upper_layer().ok()?;
            let l4 = if up.later_fragment {
                &[]
            } else {
                l3.get(up.offset..end)?
            };
            let mut f = transport(addr_v6(ip.src()), addr_v6(ip.dst()), up.protocol, l4);
            if up.protocol == PROTO_ICMPV6 {
                // MLD (130-132, 143) and NDP (133-137).
                f.exempt = matches!(l4.first(), Some(130..=137 | 143));
            }
            Some(f)
        }
        _ => None,
    }
}

/// The ports (or echo identifier) of `l4`; a header too short (a later fragment) gives zeros.
fn transport(src: Addr, dst: Addr, proto: u8, l4: &[u8]) -> Flow {
    let be = |i: usize| {
        l4.get(i..i + 2)
            .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]))
    };
    let (sport, dport, tcp_flags) = match proto {
        PROTO_TCP if l4.len() >= 20 => (be(0), be(2), l4[13]),
        PROTO_UDP if l4.len() >= 8 => (be(0), be(2), 0),
        // Echo request/reply (v4: 8/0, v6: 128/129): the identifier pairs them.
        PROTO_ICMP | PROTO_ICMPV6 if l4.len() >= 8 && matches!(l4[0], 0 | 8 | 128 | 129) => {
            (be(4), be(4), 0)
        }
        _ => (0, 0, 0),
    };
    Flow {
        src,
        dst,
        proto,
        sport,
        dport,
        tcp_flags,
        exempt: false,
    }
}

/// What decided a frame's fate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Not an IP frame the policy checks (ARP, NDP, DNS to the gateway), or no rules.
    Unchecked,
    /// A flow already in the connection table.
    Established,
    /// Rule number `.0` (in order), allowing (`.1`) or refusing.
    Rule(usize, bool),
    /// No rule matched: the network's default, allow (`true`) or deny.
    Default(bool),
    /// Allowed, but the connection table is full: refused.
    TableFull,
}

impl Decision {
    pub fn passes(self) -> bool {
        match self {
            Decision::Unchecked | Decision::Established => true,
            Decision::Rule(_, allow) | Decision::Default(allow) => allow,
            Decision::TableFull => false,
        }
    }
}

/// Decide a frame a sandbox's port sent, tracking the flow it admits (in `conns`) and
/// counting its rule or drop. `eth` is the Ethernet frame (no virtio-net header).
#[inline]
pub fn check_station(
    table: &PolicyTable,
    conns: &ConnTable,
    drops: &PolicyCounters,
    eth: &[u8],
    now: u32,
) -> Decision {
    if !table.tracks {
        return Decision::Unchecked;
    }
    let Some(flow) = flow_of(eth) else {
        return Decision::Unchecked;
    };
    let d = decide(table, conns, &flow, now, true);
    match d {
        Decision::Rule(i, _) => {
            if let Some(r) = table.rules.get(i) {
                r.counters.count(eth.len());
            }
            if !d.passes() {
                drops.rule.fetch_add(1, Ordering::Relaxed);
            }
        }
        Decision::Default(false) => {
            drops.default.fetch_add(1, Ordering::Relaxed);
        }
        Decision::TableFull => {
            drops.table_full.fetch_add(1, Ordering::Relaxed);
        }
        _ => {}
    }
    d
}

/// The decision for `flow`, inserting it in `conns` when admitted if `track`; `tapnet trace`
/// calls it with `track` false.
pub fn decide(
    table: &PolicyTable,
    conns: &ConnTable,
    flow: &Flow,
    now: u32,
    track: bool,
) -> Decision {
    if flow.exempt
        || ((flow.proto == PROTO_UDP || flow.proto == PROTO_TCP)
            && flow.dport == DNS_PORT
            && table.gateways.contains(&flow.dst))
    {
        return Decision::Unchecked;
    }
    let key = flow.key();
    let seen = if track {
        conns.refresh(&key, flow.proto, flow.tcp_flags, now)
    } else {
        conns.contains(&key, now)
    };
    if seen {
        return Decision::Established;
    }
    let d = match table.first_match(flow) {
        Some(i) => Decision::Rule(i, table.rules[i].spec.allow),
        None => Decision::Default(table.default_allow),
    };
    if d.passes() && track && conns.insert(&key, flow.proto, flow.tcp_flags, now) == Track::Full {
        return Decision::TableFull;
    }
    d
}

/// A frame from a service port (the gateway, the VTEP) to a sandbox: not checked, but its flow
/// enters the table so the sandbox's replies pass.
#[inline]
pub fn track_service(table: &PolicyTable, conns: &ConnTable, eth: &[u8], now: u32) {
    if !table.tracks {
        return;
    }
    if let Some(flow) = flow_of(eth)
        && !flow.exempt
    {
        let key = flow.key();
        if !conns.refresh(&key, flow.proto, flow.tcp_flags, now) {
            let _ = conns.insert(&key, flow.proto, flow.tcp_flags, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip4(s: &str) -> Addr {
        addr_v4(s.parse().unwrap())
    }

    fn flow(src: &str, dst: &str, proto: u8, dport: u16) -> Flow {
        Flow {
            src: ip4(src),
            dst: ip4(dst),
            proto,
            sport: 40000,
            dport,
            tcp_flags: 0x02,
            exempt: false,
        }
    }

    fn rule(
        name: &str,
        to: Option<&str>,
        proto: Proto,
        port: Option<u16>,
        allow: bool,
    ) -> RuleSpec {
        RuleSpec {
            name: name.into(),
            from: None,
            to: to.map(|t| vec![Cidr::host(ip4(t))]),
            proto,
            ports: port.map(|p| (p, p)),
            allow,
        }
    }

    fn spec(rules: Vec<RuleSpec>, default_allow: bool) -> PolicySpec {
        PolicySpec {
            icc: true,
            default_allow,
            rules,
            gateways: vec![ip4("10.0.0.1")],
            max_flows: 64,
        }
    }

    #[test]
    fn cidrs_match_their_family_only() {
        let c = Cidr::v4("10.1.0.0".parse().unwrap(), 16);
        assert!(c.contains(ip4("10.1.2.3")));
        assert!(!c.contains(ip4("10.2.0.1")));
        assert!(!c.contains(addr_v6("::a01:203".parse().unwrap())));
        let c6 = Cidr::v6("fd00::".parse().unwrap(), 8);
        assert!(c6.contains(addr_v6("fd12::1".parse().unwrap())));
        assert!(!c6.contains(ip4("10.1.2.3")));
        assert!(Cidr::v6("::".parse().unwrap(), 0).contains(ip4("1.2.3.4")));
    }

    #[test]
    fn first_match_wins_then_the_default() {
        let t = PolicyTable::build(
            &spec(
                vec![
                    rule("web", Some("10.0.0.3"), Proto::Tcp, Some(80), true),
                    rule("no3", Some("10.0.0.3"), Proto::Any, None, false),
                ],
                true,
            ),
            None,
        );
        let conns = ConnTable::new(64);
        let f = flow("10.0.0.2", "10.0.0.3", PROTO_TCP, 80);
        assert_eq!(decide(&t, &conns, &f, 1, true), Decision::Rule(0, true));
        let f = flow("10.0.0.2", "10.0.0.3", PROTO_TCP, 22);
        assert_eq!(decide(&t, &conns, &f, 1, true), Decision::Rule(1, false));
        let f = flow("10.0.0.2", "10.0.0.4", PROTO_UDP, 22);
        assert_eq!(decide(&t, &conns, &f, 1, true), Decision::Default(true));
    }

    #[test]
    fn replies_of_an_admitted_flow_pass_under_default_deny() {
        let t = PolicyTable::build(
            &spec(
                vec![rule("web", Some("10.0.0.3"), Proto::Tcp, Some(80), true)],
                false,
            ),
            None,
        );
        let conns = ConnTable::new(64);
        let req = flow("10.0.0.2", "10.0.0.3", PROTO_TCP, 80);
        assert!(decide(&t, &conns, &req, 1, true).passes());
        let reply = Flow {
            src: req.dst,
            dst: req.src,
            sport: req.dport,
            dport: req.sport,
            tcp_flags: 0x12,
            ..req
        };
        assert_eq!(decide(&t, &conns, &reply, 2, true), Decision::Established);
        // The server may not open its own flow back.
        let back = flow("10.0.0.3", "10.0.0.2", PROTO_TCP, 80);
        assert_eq!(decide(&t, &conns, &back, 2, true), Decision::Default(false));
        // DNS to the gateway is never checked.
        let dns = flow("10.0.0.2", "10.0.0.1", PROTO_UDP, 53);
        assert_eq!(decide(&t, &conns, &dns, 2, true), Decision::Unchecked);
    }

    #[test]
    fn counters_survive_a_rebuild_by_name() {
        let s = spec(vec![rule("a", None, Proto::Any, None, true)], true);
        let t = PolicyTable::build(&s, None);
        t.rules[0].counters.count(100);
        let t2 = PolicyTable::build(&s, Some(&t));
        assert_eq!(t2.rules[0].counters.bytes.load(Ordering::Relaxed), 100);
    }

    #[test]
    fn reads_flows_of_both_families_and_exempts_ndp() {
        let mut f = vec![0u8; 14 + 20 + 20];
        f[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        f[14] = 0x45;
        f[16..18].copy_from_slice(&40u16.to_be_bytes());
        f[23] = PROTO_TCP;
        f[26..30].copy_from_slice(&[10, 0, 0, 2]);
        f[30..34].copy_from_slice(&[10, 0, 0, 3]);
        f[34..36].copy_from_slice(&1234u16.to_be_bytes());
        f[36..38].copy_from_slice(&80u16.to_be_bytes());
        f[34 + 13] = 0x02;
        let flow = flow_of(&f).unwrap();
        assert_eq!(
            (flow.src, flow.dst, flow.sport, flow.dport, flow.tcp_flags),
            (ip4("10.0.0.2"), ip4("10.0.0.3"), 1234, 80, 0x02)
        );
        let mut f6 = vec![0u8; 14 + 40 + 24];
        f6[12..14].copy_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
        f6[14] = 0x60;
        f6[18..20].copy_from_slice(&24u16.to_be_bytes());
        f6[20] = PROTO_ICMPV6;
        f6[54] = 135;
        assert!(flow_of(&f6).unwrap().exempt);
        for n in 0..f6.len() {
            let _ = flow_of(&f6[..n]);
        }
    }
}
