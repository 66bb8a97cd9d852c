//! IPv4 prefixes in CIDR form ("172.18.0.0/16"), as users write them and Docker prints them.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ipv4Net {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Net {
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Self, String> {
        if prefix > 32 {
            return Err(format!("prefix length {prefix} is out of range (0-32)"));
        }
        Ok(Ipv4Net { addr, prefix })
    }

    pub fn mask(&self) -> u32 {
        u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0)
    }
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }
    /// The prefix itself, host bits cleared.
    pub fn trunc(&self) -> Ipv4Net {
        Ipv4Net {
            addr: self.network(),
            prefix: self.prefix,
        }
    }
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network())
    }
    pub fn overlaps(&self, other: &Ipv4Net) -> bool {
        self.contains(other.network()) || other.contains(self.network())
    }
    /// `other` lies entirely inside `self`.
    pub fn covers(&self, other: &Ipv4Net) -> bool {
        other.prefix >= self.prefix && self.contains(other.network())
    }

    /// The special-purpose block (RFC 6890) this prefix overlaps where a network of hosts cannot
    /// live: its name, or `None` for an ordinary prefix.
    pub fn special_use(&self) -> Option<&'static str> {
        const BLOCKS: [(Ipv4Addr, u8, &str); 5] = [
            (Ipv4Addr::new(0, 0, 0, 0), 8, "0.0.0.0/8 (\"this network\")"),
            (Ipv4Addr::new(127, 0, 0, 0), 8, "127.0.0.0/8 (loopback)"),
            (
                Ipv4Addr::new(169, 254, 0, 0),
                16,
                "169.254.0.0/16 (link-local)",
            ),
            (Ipv4Addr::new(224, 0, 0, 0), 4, "224.0.0.0/4 (multicast)"),
            (
                Ipv4Addr::new(240, 0, 0, 0),
                4,
                "240.0.0.0/4 (reserved, with broadcast)",
            ),
        ];
        BLOCKS
            .iter()
            .find(|(addr, prefix, _)| {
                self.overlaps(&Ipv4Net {
                    addr: *addr,
                    prefix: *prefix,
                })
            })
            .map(|(_, _, name)| *name)
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Ipv4Net {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("malformed CIDR {s:?}: expected ADDRESS/PREFIX"))?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("malformed CIDR {s:?}: bad IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| format!("malformed CIDR {s:?}: bad prefix length"))?;
        Ipv4Net::new(addr, prefix).map_err(|e| format!("malformed CIDR {s:?}: {e}"))
    }
}

impl Serialize for Ipv4Net {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ipv4Net {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let n: Ipv4Net = "172.18.0.0/16".parse().unwrap();
        assert_eq!(n.to_string(), "172.18.0.0/16");
        assert_eq!(n.broadcast(), Ipv4Addr::new(172, 18, 255, 255));
        assert!(n.contains(Ipv4Addr::new(172, 18, 3, 4)));
        assert!(!n.contains(Ipv4Addr::new(172, 19, 0, 1)));
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "172.18.0.0",
            "172.18.0/16",
            "172.18.0.0/33",
            "x/8",
            "1.2.3.4/-1",
        ] {
            assert!(bad.parse::<Ipv4Net>().is_err(), "{bad}");
        }
    }

    #[test]
    fn overlap_and_cover() {
        let a: Ipv4Net = "10.0.0.0/8".parse().unwrap();
        let b: Ipv4Net = "10.1.0.0/16".parse().unwrap();
        let c: Ipv4Net = "11.0.0.0/8".parse().unwrap();
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!a.overlaps(&c));
        assert!(a.covers(&b) && !b.covers(&a));
        let zero: Ipv4Net = "0.0.0.0/0".parse().unwrap();
        assert!(zero.contains(Ipv4Addr::new(1, 2, 3, 4)));
    }

    #[test]
    fn special_use_blocks() {
        for (bad, block) in [
            ("224.0.0.0/24", "multicast"),
            ("239.255.0.0/16", "multicast"),
            ("127.0.0.0/24", "loopback"),
            ("0.0.0.0/24", "this network"),
            ("240.0.0.0/24", "reserved"),
            ("255.255.255.0/24", "reserved"),
            ("169.254.0.0/24", "link-local"),
            ("0.0.0.0/0", "this network"),
            ("192.0.0.0/2", "multicast"),
        ] {
            let n: Ipv4Net = bad.parse().unwrap();
            let name = n.special_use().unwrap_or_else(|| panic!("{bad} accepted"));
            assert!(name.contains(block), "{bad}: {name}");
        }
        for good in [
            "10.0.0.0/8",
            "172.18.0.0/16",
            "192.168.1.0/24",
            "100.64.0.0/10",
            "223.255.255.0/24",
            "169.253.0.0/16",
            "1.0.0.0/24",
        ] {
            let n: Ipv4Net = good.parse().unwrap();
            assert_eq!(n.special_use(), None, "{good}");
        }
    }
}
