//! Ethernet MAC addresses: text form, Docker's derivation from an IPv4 address, serde.

use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);

    /// Group bit set: broadcast and multicast both flood.
    pub fn is_multicast(self) -> bool {
        self.0[0] & 1 == 1
    }
    pub fn is_zero(self) -> bool {
        self.0 == [0; 6]
    }
    pub fn to_u64(self) -> u64 {
        let b = self.0;
        u64::from_be_bytes([0, 0, b[0], b[1], b[2], b[3], b[4], b[5]])
    }
    pub fn from_u64(v: u64) -> Self {
        let b = v.to_be_bytes();
        MacAddr([b[2], b[3], b[4], b[5], b[6], b[7]])
    }
    /// Docker's rule: `02:42` followed by the four bytes of the endpoint's IPv4 address.
    pub fn from_ipv4(ip: std::net::Ipv4Addr) -> Self {
        let o = ip.octets();
        MacAddr([0x02, 0x42, o[0], o[1], o[2], o[3]])
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for MacAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in out.iter_mut() {
            let part = parts
                .next()
                .ok_or_else(|| format!("malformed MAC address {s:?}"))?;
            if part.len() != 2 {
                return Err(format!("malformed MAC address {s:?}"));
            }
            *byte =
                u8::from_str_radix(part, 16).map_err(|_| format!("malformed MAC address {s:?}"))?;
        }
        if parts.next().is_some() {
            return Err(format!("malformed MAC address {s:?}"));
        }
        Ok(MacAddr(out))
    }
}

impl serde::Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_text_and_docker_rule() {
        let m = MacAddr::from_ipv4("172.17.0.2".parse().unwrap());
        assert_eq!(m.to_string(), "02:42:ac:11:00:02");
        assert_eq!("02:42:ac:11:00:02".parse::<MacAddr>(), Ok(m));
        assert!("02:42:ac:11:00".parse::<MacAddr>().is_err());
        assert!("02:42:ac:11:00:02:01".parse::<MacAddr>().is_err());
        assert_eq!(MacAddr::from_u64(m.to_u64()), m);
        assert!(MacAddr::BROADCAST.is_multicast() && !m.is_multicast() && !m.is_zero());
    }
}
