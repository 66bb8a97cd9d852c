//! ICMPv6 messages (RFC 4443) and the Neighbor Discovery messages among them (RFC 4861):
//! Router Solicitation and Advertisement, Neighbor Solicitation and Advertisement, Redirect,
//! and the walk over their options.

use std::net::Ipv6Addr;

use super::mac::MacAddr;

/// Type, code, checksum.
pub const HEADER_LEN: usize = 4;
pub const TYPE_ECHO_REQUEST: u8 = 128;
pub const TYPE_ECHO_REPLY: u8 = 129;
pub const TYPE_MLD_QUERY: u8 = 130;
pub const TYPE_MLD_REPORT: u8 = 131;
pub const TYPE_MLD_DONE: u8 = 132;
pub const TYPE_ROUTER_SOLICITATION: u8 = 133;
pub const TYPE_ROUTER_ADVERTISEMENT: u8 = 134;
pub const TYPE_NEIGHBOR_SOLICITATION: u8 = 135;
pub const TYPE_NEIGHBOR_ADVERTISEMENT: u8 = 136;
pub const TYPE_REDIRECT: u8 = 137;
pub const TYPE_MLDV2_REPORT: u8 = 143;
/// NDP option types.
pub const OPT_SOURCE_LL: u8 = 1;
pub const OPT_TARGET_LL: u8 = 2;
pub const OPT_PREFIX_INFO: u8 = 3;
pub const OPT_MTU: u8 = 5;
/// Neighbor Advertisement flags (the first byte after the checksum).
pub const NA_ROUTER: u8 = 0x80;
pub const NA_SOLICITED: u8 = 0x40;
pub const NA_OVERRIDE: u8 = 0x20;

/// Shorter than the ICMPv6 header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Truncated;

/// An ICMPv6 message of at least [`HEADER_LEN`] bytes.
#[derive(Clone, Copy, Debug)]
pub struct Icmpv6<'a> {
    b: &'a [u8; HEADER_LEN],
    rest: &'a [u8],
}

impl<'a> Icmpv6<'a> {
    pub fn new_checked(bytes: &'a [u8]) -> Result<Self, Truncated> {
        let (b, rest) = bytes.split_first_chunk::<HEADER_LEN>().ok_or(Truncated)?;
        Ok(Icmpv6 { b, rest })
    }
    pub fn msg_type(&self) -> u8 {
        self.b[0]
    }
    pub fn code(&self) -> u8 {
        self.b[1]
    }
    pub fn checksum(&self) -> u16 {
        u16::from_be_bytes([self.b[2], self.b[3]])
    }
    /// Everything after the checksum.
    pub fn body(&self) -> &'a [u8] {
        self.rest
    }
    /// One of the five NDP types.
    pub fn is_ndp(&self) -> bool {
        (TYPE_ROUTER_SOLICITATION..=TYPE_REDIRECT).contains(&self.msg_type())
    }
}

/// Which check an NDP message failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NdpError {
    /// Shorter than the message's fixed part.
    Truncated,
    /// A code other than 0.
    Code,
    /// An option whose length field is 0 (RFC 4861 4.6: the message must be discarded).
    OptionLenZero,
    /// An option that runs past the end of the message.
    OptionTruncated,
}

/// An NDP message: its fixed fields and its options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ndp<'a> {
    RouterSolicitation {
        options: NdpOptions<'a>,
    },
    RouterAdvertisement {
        cur_hop_limit: u8,
        /// Managed (0x80) and other-configuration (0x40) flags, and the rest of that byte.
        flags: u8,
        router_lifetime: u16,
        reachable_time: u32,
        retrans_timer: u32,
        options: NdpOptions<'a>,
    },
    NeighborSolicitation {
        target: Ipv6Addr,
        options: NdpOptions<'a>,
    },
    NeighborAdvertisement {
        /// [`NA_ROUTER`], [`NA_SOLICITED`], [`NA_OVERRIDE`].
        flags: u8,
        target: Ipv6Addr,
        options: NdpOptions<'a>,
    },
    Redirect {
        target: Ipv6Addr,
        destination: Ipv6Addr,
        options: NdpOptions<'a>,
    },
}

fn ip_at(b: &[u8], at: usize) -> Ipv6Addr {
    let mut o = [0u8; 16];
    o.copy_from_slice(&b[at..at + 16]);
    Ipv6Addr::from(o)
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl<'a> Ndp<'a> {
    /// The NDP message in `icmp`, `Ok(None)` for another ICMPv6 type. Its options are checked
    /// whole (no zero length, none past the end), so walking them later cannot fail.
    pub fn parse(icmp: &Icmpv6<'a>) -> Result<Option<Self>, NdpError> {
        let fixed = match icmp.msg_type() {
            TYPE_ROUTER_SOLICITATION => 4,
            TYPE_ROUTER_ADVERTISEMENT => 12,
            TYPE_NEIGHBOR_SOLICITATION | TYPE_NEIGHBOR_ADVERTISEMENT => 20,
            TYPE_REDIRECT => 36,
            _ => return Ok(None),
        };
        if icmp.code() != 0 {
            return Err(NdpError::Code);
        }
        let b = icmp.body();
        if b.len() < fixed {
            return Err(NdpError::Truncated);
        }
        let options = NdpOptions::new_checked(&b[fixed..])?;
        Ok(Some(match icmp.msg_type() {
            TYPE_ROUTER_SOLICITATION => Ndp::RouterSolicitation { options },
            TYPE_ROUTER_ADVERTISEMENT => Ndp::RouterAdvertisement {
                cur_hop_limit: b[0],
                flags: b[1],
                router_lifetime: u16::from_be_bytes([b[2], b[3]]),
                reachable_time: be32(b, 4),
                retrans_timer: be32(b, 8),
                options,
            },
            TYPE_NEIGHBOR_SOLICITATION => Ndp::NeighborSolicitation {
                target: ip_at(b, 4),
                options,
            },
            TYPE_NEIGHBOR_ADVERTISEMENT => Ndp::NeighborAdvertisement {
                flags: b[0],
                target: ip_at(b, 4),
                options,
            },
            _ => Ndp::Redirect {
                target: ip_at(b, 4),
                destination: ip_at(b, 20),
                options,
            },
        }))
    }

    pub fn options(&self) -> NdpOptions<'a> {
        match *self {
            Ndp::RouterSolicitation { options }
            | Ndp::RouterAdvertisement { options, .. }
            | Ndp::NeighborSolicitation { options, .. }
            | Ndp::NeighborAdvertisement { options, .. }
            | Ndp::Redirect { options, .. } => options,
        }
    }
}

/// One NDP option: its type and its data (the bytes after type and length).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NdpOption<'a> {
    pub kind: u8,
    pub data: &'a [u8],
}

impl NdpOption<'_> {
    /// A source or target link-layer address option of Ethernet's size: its MAC.
    pub fn link_layer(&self) -> Option<MacAddr> {
        if self.kind != OPT_SOURCE_LL && self.kind != OPT_TARGET_LL {
            return None;
        }
        let m = self.data.first_chunk::<6>()?;
        Some(MacAddr(*m))
    }
}

/// The options of an NDP message, checked whole by [`NdpOptions::new_checked`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NdpOptions<'a> {
    bytes: &'a [u8],
}

impl<'a> NdpOptions<'a> {
    /// Every option has a non-zero length (in units of 8 bytes) and lies within `bytes`.
    pub fn new_checked(bytes: &'a [u8]) -> Result<Self, NdpError> {
        let mut rest = bytes;
        while let Some(&[_, units]) = rest.first_chunk::<2>() {
            if units == 0 {
                return Err(NdpError::OptionLenZero);
            }
            rest = rest
                .get(usize::from(units) * 8..)
                .ok_or(NdpError::OptionTruncated)?;
        }
        if !rest.is_empty() {
            return Err(NdpError::OptionTruncated);
        }
        Ok(NdpOptions { bytes })
    }

    pub fn iter(&self) -> NdpOptionIter<'a> {
        NdpOptionIter { rest: self.bytes }
    }

    /// The link-layer addresses of every source or target link-layer option of `kind`.
    pub fn link_layers(&self, kind: u8) -> impl Iterator<Item = Option<MacAddr>> + 'a {
        self.iter()
            .filter(move |o| o.kind == kind)
            .map(|o| o.link_layer())
    }
}

/// Walks checked options; stops at anything odd rather than panic.
#[derive(Clone, Debug)]
pub struct NdpOptionIter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for NdpOptionIter<'a> {
    type Item = NdpOption<'a>;
    fn next(&mut self) -> Option<NdpOption<'a>> {
        let &[kind, units] = self.rest.first_chunk::<2>()?;
        let len = usize::from(units) * 8;
        if len == 0 || len > self.rest.len() {
            self.rest = &[];
            return None;
        }
        let (opt, rest) = self.rest.split_at(len);
        self.rest = rest;
        Some(NdpOption {
            kind,
            data: &opt[2..],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{
        Icmpv6Packet, Icmpv6Repr, Ipv6Address, NdiscNeighborFlags, NdiscRepr, RawHardwareAddress,
    };

    const MAC: [u8; 6] = [2, 0x42, 0xac, 0x12, 0, 2];
    const SRC: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0x42, 0xacff, 0xfe12, 2);
    const DST: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

    /// `repr` emitted by smoltcp, checksum included.
    fn emit(repr: NdiscRepr) -> Vec<u8> {
        let repr = Icmpv6Repr::Ndisc(repr);
        let mut buf = vec![0u8; repr.buffer_len()];
        let mut p = Icmpv6Packet::new_unchecked(&mut buf[..]);
        repr.emit(&SRC, &DST, &mut p, &ChecksumCapabilities::default());
        buf
    }

    fn ours(bytes: &[u8]) -> Ndp<'_> {
        Ndp::parse(&Icmpv6::new_checked(bytes).unwrap())
            .unwrap()
            .unwrap()
    }

    fn theirs(bytes: &[u8]) -> NdiscRepr<'_> {
        let p = Icmpv6Packet::new_checked(bytes).unwrap();
        match Icmpv6Repr::parse(&SRC, &DST, &p, &ChecksumCapabilities::default()).unwrap() {
            Icmpv6Repr::Ndisc(n) => n,
            other => panic!("not NDP: {other:?}"),
        }
    }

    fn lladdr() -> Option<RawHardwareAddress> {
        Some(RawHardwareAddress::from_bytes(&MAC))
    }

    #[test]
    fn neighbor_messages_match_smoltcp() {
        let target = Ipv6Address::new(0xfe80, 0, 0, 0, 0x42, 0xacff, 0xfe12, 3);
        let na = emit(NdiscRepr::NeighborAdvert {
            flags: NdiscNeighborFlags::OVERRIDE | NdiscNeighborFlags::SOLICITED,
            target_addr: target,
            lladdr: lladdr(),
        });
        let NdiscRepr::NeighborAdvert {
            flags,
            target_addr,
            lladdr: ll,
        } = theirs(&na)
        else {
            panic!("smoltcp read something else")
        };
        let Ndp::NeighborAdvertisement {
            flags: f,
            target: t,
            options,
        } = ours(&na)
        else {
            panic!("we read something else")
        };
        assert_eq!(f, flags.bits());
        assert_eq!(f, NA_SOLICITED | NA_OVERRIDE);
        assert_eq!(t, target_addr);
        let macs: Vec<_> = options.link_layers(OPT_TARGET_LL).collect();
        assert_eq!(macs, [Some(MacAddr(MAC))]);
        assert_eq!(ll.map(|l| l.as_bytes().to_vec()), Some(MAC.to_vec()));
        assert_eq!(options.link_layers(OPT_SOURCE_LL).count(), 0);

        let ns = emit(NdiscRepr::NeighborSolicit {
            target_addr: target,
            lladdr: lladdr(),
        });
        let NdiscRepr::NeighborSolicit { target_addr, .. } = theirs(&ns) else {
            panic!("smoltcp read something else")
        };
        let Ndp::NeighborSolicitation { target: t, options } = ours(&ns) else {
            panic!("we read something else")
        };
        assert_eq!(t, target_addr);
        assert_eq!(
            options.link_layers(OPT_SOURCE_LL).collect::<Vec<_>>(),
            [Some(MacAddr(MAC))]
        );
        // A DAD probe carries no option.
        let dad = emit(NdiscRepr::NeighborSolicit {
            target_addr: target,
            lladdr: None,
        });
        assert_eq!(ours(&dad).options().iter().count(), 0);
    }

    #[test]
    fn router_messages_match_smoltcp() {
        let rs = emit(NdiscRepr::RouterSolicit { lladdr: lladdr() });
        assert!(matches!(theirs(&rs), NdiscRepr::RouterSolicit { .. }));
        let Ndp::RouterSolicitation { options } = ours(&rs) else {
            panic!("we read something else")
        };
        assert_eq!(options.iter().next().map(|o| o.kind), Some(OPT_SOURCE_LL));

        let ra = emit(NdiscRepr::RouterAdvert {
            hop_limit: 64,
            flags: smoltcp::wire::NdiscRouterFlags::MANAGED,
            router_lifetime: smoltcp::time::Duration::from_secs(1800),
            reachable_time: smoltcp::time::Duration::from_millis(30_000),
            retrans_time: smoltcp::time::Duration::from_millis(1000),
            lladdr: lladdr(),
            mtu: Some(1500),
            prefix_info: None,
        });
        let NdiscRepr::RouterAdvert {
            hop_limit,
            flags,
            router_lifetime,
            ..
        } = theirs(&ra)
        else {
            panic!("smoltcp read something else")
        };
        let Ndp::RouterAdvertisement {
            cur_hop_limit,
            flags: f,
            router_lifetime: life,
            reachable_time,
            retrans_timer,
            options,
        } = ours(&ra)
        else {
            panic!("we read something else")
        };
        assert_eq!((cur_hop_limit, f), (hop_limit, flags.bits()));
        assert_eq!(u64::from(life), router_lifetime.secs());
        assert_eq!((reachable_time, retrans_timer), (30_000, 1000));
        let kinds: Vec<u8> = options.iter().map(|o| o.kind).collect();
        assert_eq!(kinds, [OPT_SOURCE_LL, OPT_MTU]);

        let target = Ipv6Address::new(0xfe80, 0, 0, 0, 0, 0, 0, 9);
        let dest = Ipv6Address::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
        let redirect = emit(NdiscRepr::Redirect {
            target_addr: target,
            dest_addr: dest,
            lladdr: lladdr(),
            redirected_hdr: None,
        });
        assert!(matches!(theirs(&redirect), NdiscRepr::Redirect { .. }));
        let Ndp::Redirect {
            target: t,
            destination: d,
            options,
        } = ours(&redirect)
        else {
            panic!("we read something else")
        };
        assert_eq!((t, d), (target, dest));
        assert_eq!(
            options.link_layers(OPT_TARGET_LL).collect::<Vec<_>>(),
            [Some(MacAddr(MAC))]
        );
    }

    #[test]
    fn malformed_messages_each_named() {
        let target = Ipv6Address::new(0xfe80, 0, 0, 0, 0, 0, 0, 3);
        let na = emit(NdiscRepr::NeighborAdvert {
            flags: NdiscNeighborFlags::empty(),
            target_addr: target,
            lladdr: lladdr(),
        });
        fn parse(b: &[u8]) -> Result<Option<Ndp<'_>>, NdpError> {
            Ndp::parse(&Icmpv6::new_checked(b).unwrap())
        }
        let mut zero = na.clone();
        zero[25] = 0;
        assert_eq!(parse(&zero), Err(NdpError::OptionLenZero));
        assert!(theirs_fails(&zero), "smoltcp refuses it too");
        let mut long = na.clone();
        long[25] = 2;
        assert_eq!(parse(&long), Err(NdpError::OptionTruncated));
        assert_eq!(parse(&na[..na.len() - 1]), Err(NdpError::OptionTruncated));
        assert_eq!(parse(&na[..23]), Err(NdpError::Truncated));
        let mut code = na.clone();
        code[1] = 1;
        assert_eq!(parse(&code), Err(NdpError::Code));
        let echo = [TYPE_ECHO_REQUEST, 0, 0, 0, 0, 1, 0, 1];
        let v = Icmpv6::new_checked(&echo).unwrap();
        assert_eq!(Ndp::parse(&v), Ok(None));
        assert!(!v.is_ndp());
        assert_eq!((v.msg_type(), v.code(), v.body().len()), (128, 0, 4));
        for len in 0..HEADER_LEN {
            assert_eq!(Icmpv6::new_checked(&echo[..len]).err(), Some(Truncated));
        }
    }

    fn theirs_fails(bytes: &[u8]) -> bool {
        let Ok(p) = Icmpv6Packet::new_checked(bytes) else {
            return true;
        };
        Icmpv6Repr::parse(&SRC, &DST, &p, &ChecksumCapabilities::ignored()).is_err()
    }

    #[test]
    fn checksum_of_smoltcp_messages_verifies() {
        let rs = emit(NdiscRepr::RouterSolicit { lladdr: lladdr() });
        assert_eq!(
            super::super::ipv6::checksum(SRC, DST, super::super::ipv6::NEXT_ICMPV6, &rs),
            0
        );
        let v = Icmpv6::new_checked(&rs).unwrap();
        let mut zeroed = rs.clone();
        zeroed[2..4].fill(0);
        assert_eq!(
            super::super::ipv6::checksum(SRC, DST, 58, &zeroed),
            v.checksum()
        );
    }

    #[test]
    fn option_iterator_stops_on_odd_bytes() {
        let it = NdpOptionIter {
            rest: &[1, 0, 0, 0],
        };
        assert_eq!(it.count(), 0);
        let it = NdpOptionIter {
            rest: &[1, 2, 0, 0],
        };
        assert_eq!(it.count(), 0);
        let opt = NdpOption {
            kind: OPT_SOURCE_LL,
            data: &[1, 2, 3],
        };
        assert_eq!(opt.link_layer(), None, "too short for a MAC");
    }
}
