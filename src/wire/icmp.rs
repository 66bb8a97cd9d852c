//! ICMPv4 messages: the 8-byte header, and the echo fields the gateway's ping NAT reads.

pub const HEADER_LEN: usize = 8;
pub const TYPE_ECHO_REPLY: u8 = 0;
pub const TYPE_ECHO_REQUEST: u8 = 8;

/// Shorter than the ICMP header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Truncated;

/// Identifier and sequence number of an echo request or reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Echo {
    pub id: u16,
    pub seq: u16,
}

/// An ICMPv4 message of at least [`HEADER_LEN`] bytes.
#[derive(Clone, Copy, Debug)]
pub struct Icmpv4<'a> {
    b: &'a [u8; HEADER_LEN],
    rest: &'a [u8],
}

impl<'a> Icmpv4<'a> {
    pub fn new_checked(bytes: &'a [u8]) -> Result<Self, Truncated> {
        let (b, rest) = bytes.split_first_chunk::<HEADER_LEN>().ok_or(Truncated)?;
        Ok(Icmpv4 { b, rest })
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
    /// The data after the header.
    pub fn payload(&self) -> &'a [u8] {
        self.rest
    }
    fn echo(&self, msg_type: u8) -> Option<Echo> {
        (self.msg_type() == msg_type && self.code() == 0).then(|| Echo {
            id: u16::from_be_bytes([self.b[4], self.b[5]]),
            seq: u16::from_be_bytes([self.b[6], self.b[7]]),
        })
    }
    /// An echo request (type 8, code 0): its identifier and sequence number.
    pub fn echo_request(&self) -> Option<Echo> {
        self.echo(TYPE_ECHO_REQUEST)
    }
    pub fn echo_reply(&self) -> Option<Echo> {
        self.echo(TYPE_ECHO_REPLY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{Icmpv4Header, Icmpv4Type};

    fn message(t: u8, code: u8) -> Vec<u8> {
        vec![t, code, 0xab, 0xcd, 0, 0x77, 0, 3, b'p', b'i']
    }

    #[test]
    fn echo_matches_etherparse() {
        for (t, code) in [(8, 0), (0, 0), (8, 1), (0, 1), (3, 1), (13, 0)] {
            let m = message(t, code);
            let v = Icmpv4::new_checked(&m).unwrap();
            let ours = v.echo_request().map(|e| (e.id, e.seq));
            let parsed = Icmpv4Header::from_slice(&m).map(|h| h.0.icmp_type);
            let theirs = match parsed {
                Ok(Icmpv4Type::EchoRequest(e)) => Some((e.id, e.seq)),
                _ => None,
            };
            assert_eq!(ours, theirs, "request: type {t} code {code}");
            let ours = v.echo_reply().map(|e| (e.id, e.seq));
            let theirs = match parsed {
                Ok(Icmpv4Type::EchoReply(e)) => Some((e.id, e.seq)),
                _ => None,
            };
            assert_eq!(ours, theirs, "reply: type {t} code {code}");
            assert_eq!((v.msg_type(), v.code(), v.checksum()), (t, code, 0xabcd));
            assert_eq!(v.payload(), b"pi");
        }
        let reply = message(0, 0);
        assert_eq!(
            Icmpv4::new_checked(&reply).unwrap().echo_reply(),
            Some(Echo { id: 0x77, seq: 3 })
        );
    }

    #[test]
    fn truncated() {
        let m = message(8, 0);
        for len in 0..HEADER_LEN {
            assert_eq!(Icmpv4::new_checked(&m[..len]).err(), Some(Truncated));
            assert!(Icmpv4Header::from_slice(&m[..len]).is_err());
        }
    }
}
