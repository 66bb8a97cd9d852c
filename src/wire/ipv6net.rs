//! IPv6 prefixes in CIDR form ("fd00:1::/64"), as users write them and Docker prints them.

use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ipv6Net {
    pub addr: Ipv6Addr,
    pub prefix: u8,
}

impl Ipv6Net {
    pub fn new(addr: Ipv6Addr, prefix: u8) -> Result<Self, String> {
        if prefix > 128 {
            return Err(format!("prefix length {prefix} is out of range (0-128)"));
        }
        Ok(Ipv6Net { addr, prefix })
    }

    pub fn mask(&self) -> u128 {
        u128::MAX
            .checked_shl(128 - u32::from(self.prefix))
            .unwrap_or(0)
    }
    pub fn network(&self) -> Ipv6Addr {
        Ipv6Addr::from(u128::from(self.addr) & self.mask())
    }
    /// The prefix itself, host bits cleared.
    pub fn trunc(&self) -> Ipv6Net {
        Ipv6Net {
            addr: self.network(),
            prefix: self.prefix,
        }
    }
    pub fn contains(&self, ip: Ipv6Addr) -> bool {
        u128::from(ip) & self.mask() == u128::from(self.network())
    }
    pub fn overlaps(&self, other: &Ipv6Net) -> bool {
        self.contains(other.network()) || other.contains(self.network())
    }
    /// `other` lies entirely inside `self`.
    pub fn covers(&self, other: &Ipv6Net) -> bool {
        other.prefix >= self.prefix && self.contains(other.network())
    }
    /// The address `index` places into the prefix (index 1 is `prefix::1`), if it fits.
    pub fn host(&self, index: u128) -> Option<Ipv6Addr> {
        if index & self.mask() != 0 {
            return None;
        }
        Some(Ipv6Addr::from(u128::from(self.network()) | index))
    }

    /// The special-purpose block (RFC 6890, RFC 4291) this prefix overlaps where a network of
    /// hosts cannot live: its name, or `None` for an ordinary prefix.
    pub fn special_use(&self) -> Option<&'static str> {
        const BLOCKS: [(u128, u8, &str); 5] = [
            (0, 96, "::/96 (unspecified, loopback and IPv4-compatible)"),
            (0xffff_0000_0000, 96, "::ffff:0:0/96 (IPv4-mapped)"),
            (0xfe80 << 112, 10, "fe80::/10 (link-local)"),
            (0xff00 << 112, 8, "ff00::/8 (multicast)"),
            (0x2001_0db8 << 96, 32, "2001:db8::/32 (documentation)"),
        ];
        BLOCKS
            .iter()
            .find(|(addr, prefix, _)| {
                self.overlaps(&Ipv6Net {
                    addr: Ipv6Addr::from(*addr),
                    prefix: *prefix,
                })
            })
            .map(|(_, _, name)| *name)
    }
}

impl fmt::Display for Ipv6Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Ipv6Net {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("malformed CIDR {s:?}: expected ADDRESS/PREFIX"))?;
        let addr: Ipv6Addr = addr
            .parse()
            .map_err(|_| format!("malformed CIDR {s:?}: bad IPv6 address"))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| format!("malformed CIDR {s:?}: bad prefix length"))?;
        Ipv6Net::new(addr, prefix).map_err(|e| format!("malformed CIDR {s:?}: {e}"))
    }
}

impl Serialize for Ipv6Net {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ipv6Net {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv6Net {
        s.parse().unwrap()
    }

    #[test]
    fn parses_prints_and_truncates() {
        let n = net("fd00:1:2:3::9/64");
        assert_eq!(n.to_string(), "fd00:1:2:3::9/64");
        assert_eq!(n.trunc().to_string(), "fd00:1:2:3::/64");
        assert!("fd00::/129".parse::<Ipv6Net>().is_err());
        assert!("10.0.0.0/8".parse::<Ipv6Net>().is_err());
        assert!("fd00::".parse::<Ipv6Net>().is_err());
        assert_eq!(net("::/0").mask(), 0);
        assert_eq!(net("::1/128").mask(), u128::MAX);
    }

    #[test]
    fn contains_covers_and_hosts() {
        let n = net("fd00:1::/64");
        assert!(n.contains("fd00:1::42".parse().unwrap()));
        assert!(!n.contains("fd00:2::42".parse().unwrap()));
        assert!(n.covers(&net("fd00:1::/120")));
        assert!(!net("fd00:1::/120").covers(&n));
        assert!(n.overlaps(&net("fd00::/16")));
        assert_eq!(n.host(1), Some("fd00:1::1".parse().unwrap()));
        assert_eq!(net("fd00::/120").host(256), None);
    }

    #[test]
    fn special_blocks_are_named() {
        assert!(
            net("fe80::/64")
                .special_use()
                .unwrap()
                .contains("link-local")
        );
        assert!(
            net("ff02::/16")
                .special_use()
                .unwrap()
                .contains("multicast")
        );
        assert!(net("::1/128").special_use().unwrap().contains("loopback"));
        assert!(
            net("::ffff:0:0/104")
                .special_use()
                .unwrap()
                .contains("mapped")
        );
        assert!(
            net("2001:db8:1::/64")
                .special_use()
                .unwrap()
                .contains("documentation")
        );
        assert_eq!(net("fd00:1::/64").special_use(), None);
        assert_eq!(net("2a01:4f8::/64").special_use(), None);
    }

    #[test]
    fn serde_round_trip() {
        let n = net("fd12::/48");
        let s = serde_json::to_string(&n).unwrap();
        assert_eq!(s, "\"fd12::/48\"");
        assert_eq!(serde_json::from_str::<Ipv6Net>(&s).unwrap(), n);
    }
}
