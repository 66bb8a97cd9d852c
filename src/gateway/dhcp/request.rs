//! A client's message to the server, read by hand: the fixed BOOTP header and the three options
//! the server acts on. A sandbox controls every byte, and the general decoder tapnet used
//! before (dhcproto 0.14) panics on some options in checked builds (a client FQDN shorter than
//! 3 bytes, found by the fuzz target), so the server reads only what it needs and refuses
//! anything it cannot read whole.

use std::net::Ipv4Addr;

use crate::wire::MacAddr;

/// Fixed BOOTP header, client hardware address included, up to the magic cookie.
pub const HEADER_LEN: usize = 236;
pub const MAGIC: [u8; 4] = [99, 130, 83, 99];

const OP_BOOTREQUEST: u8 = 1;
const HTYPE_ETHERNET: u8 = 1;
const HLEN_ETHERNET: u8 = 6;
const BROADCAST_FLAG: u16 = 0x8000;

const OPT_PAD: u8 = 0;
const OPT_REQUESTED_IP: u8 = 50;
const OPT_MESSAGE_TYPE: u8 = 53;
const OPT_SERVER_ID: u8 = 54;
const OPT_END: u8 = 255;

/// DHCP message types a client sends (RFC 2132 9.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientKind {
    Discover,
    Request,
    Decline,
    Release,
    Inform,
}

impl ClientKind {
    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => Self::Discover,
            3 => Self::Request,
            4 => Self::Decline,
            7 => Self::Release,
            8 => Self::Inform,
            _ => return None,
        })
    }
}

/// What the server reads of a BOOTREQUEST over Ethernet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientMessage {
    pub xid: u32,
    /// The flags field whole: a reply echoes it.
    pub flags: u16,
    pub ciaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    pub chaddr: MacAddr,
    pub kind: ClientKind,
    pub server_id: Option<Ipv4Addr>,
    pub requested: Option<Ipv4Addr>,
}

impl ClientMessage {
    /// Read `bytes` (a UDP payload); `None` unless it is a BOOTREQUEST over Ethernet with the
    /// magic cookie, a message type a client sends, and options that each end inside the
    /// message, once each and of their own length.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let header = bytes.get(..HEADER_LEN + MAGIC.len())?;
        if header[0] != OP_BOOTREQUEST
            || header[1] != HTYPE_ETHERNET
            || header[2] != HLEN_ETHERNET
            || header[HEADER_LEN..] != MAGIC
        {
            return None;
        }
        let ipv4 =
            |at: usize| Ipv4Addr::new(header[at], header[at + 1], header[at + 2], header[at + 3]);
        let mut chaddr = [0u8; 6];
        chaddr.copy_from_slice(&header[28..34]);
        let options = Options::read(&bytes[HEADER_LEN + MAGIC.len()..])?;
        Some(Self {
            xid: u32::from_be_bytes([header[4], header[5], header[6], header[7]]),
            flags: u16::from_be_bytes([header[10], header[11]]),
            ciaddr: ipv4(12),
            giaddr: ipv4(24),
            chaddr: MacAddr(chaddr),
            kind: ClientKind::from_code(options.kind?)?,
            server_id: options.server_id,
            requested: options.requested,
        })
    }

    /// The client asked for broadcast replies (RFC 2131 4.1).
    pub fn wants_broadcast(&self) -> bool {
        self.flags & BROADCAST_FLAG != 0
    }
}

/// The options the server acts on.
#[derive(Default)]
struct Options {
    kind: Option<u8>,
    server_id: Option<Ipv4Addr>,
    requested: Option<Ipv4Addr>,
}

impl Options {
    /// Walk the options after the cookie up to END or the message's end. An option that runs
    /// past the message, or one the server reads that repeats or has the wrong length, makes
    /// the whole message unreadable: guessing which copy a client meant is not the server's
    /// job, and a real client sends each once.
    fn read(mut rest: &[u8]) -> Option<Self> {
        let mut options = Options::default();
        while let Some((&code, after)) = rest.split_first() {
            match code {
                OPT_END => break,
                OPT_PAD => {
                    rest = after;
                    continue;
                }
                _ => {}
            }
            let (&len, after) = after.split_first()?;
            let value = after.get(..usize::from(len))?;
            rest = &after[usize::from(len)..];
            match code {
                OPT_MESSAGE_TYPE => set_once(&mut options.kind, one_byte(value)?)?,
                OPT_SERVER_ID => set_once(&mut options.server_id, address(value)?)?,
                OPT_REQUESTED_IP => set_once(&mut options.requested, address(value)?)?,
                _ => {}
            }
        }
        Some(options)
    }
}

fn set_once<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    if slot.is_some() {
        return None;
    }
    *slot = Some(value);
    Some(())
}

fn one_byte(value: &[u8]) -> Option<u8> {
    match value {
        [b] => Some(*b),
        _ => None,
    }
}

fn address(value: &[u8]) -> Option<Ipv4Addr> {
    let octets: [u8; 4] = value.try_into().ok()?;
    Some(Ipv4Addr::from(octets))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A DISCOVER header from `mac`, then `options` and END.
    fn message(options: &[u8]) -> Vec<u8> {
        let mut m = vec![0u8; HEADER_LEN];
        m[..4].copy_from_slice(&[1, 1, 6, 0]);
        m[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        m[10..12].copy_from_slice(&0x8000u16.to_be_bytes());
        m[12..16].copy_from_slice(&[10, 0, 0, 9]);
        m[28..34].copy_from_slice(&[2, 0, 0, 0, 0, 7]);
        m.extend_from_slice(&MAGIC);
        m.extend_from_slice(options);
        m.push(OPT_END);
        m
    }

    #[test]
    fn reads_the_header_and_the_three_options() {
        let m = message(&[
            53, 1, 3, 0, 0, 54, 4, 10, 0, 0, 1, 12, 2, b'h', b'i', 50, 4, 10, 0, 0, 5,
        ]);
        let c = ClientMessage::parse(&m).expect("a well-formed REQUEST");
        assert_eq!(c.xid, 0x1234_5678);
        assert!(c.wants_broadcast());
        assert_eq!(c.ciaddr, Ipv4Addr::new(10, 0, 0, 9));
        assert_eq!(c.giaddr, Ipv4Addr::UNSPECIFIED);
        assert_eq!(c.chaddr, MacAddr([2, 0, 0, 0, 0, 7]));
        assert_eq!(c.kind, ClientKind::Request);
        assert_eq!(c.server_id, Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(c.requested, Some(Ipv4Addr::new(10, 0, 0, 5)));
    }

    #[test]
    fn options_after_end_are_not_read() {
        let mut m = message(&[53, 1, 1]);
        m.extend_from_slice(&[54, 4, 10, 0, 0, 1]);
        let c = ClientMessage::parse(&m).expect("a DISCOVER");
        assert_eq!(c.kind, ClientKind::Discover);
        assert_eq!(c.server_id, None);
    }

    #[test]
    fn a_message_without_end_is_read_to_its_last_byte() {
        let mut m = message(&[53, 1, 8]);
        m.pop();
        assert_eq!(
            ClientMessage::parse(&m).map(|c| c.kind),
            Some(ClientKind::Inform)
        );
    }

    #[test]
    fn malformed_messages_are_refused() {
        // Positive control: the same bytes with one option each are read.
        assert!(ClientMessage::parse(&message(&[53, 1, 1])).is_some());
        for (why, options) in [
            ("no message type", &[12u8, 1, b'x'][..]),
            ("a server's message type", &[53, 1, 2]),
            ("message type of two bytes", &[53, 2, 1, 1]),
            (
                "message type twice (RFC 3396 concatenation)",
                &[53, 1, 1, 53, 1, 1],
            ),
            (
                "server identifier of three bytes",
                &[53, 1, 3, 54, 3, 10, 0, 0],
            ),
            (
                "requested address twice",
                &[53, 1, 3, 50, 4, 1, 2, 3, 4, 50, 4, 1, 2, 3, 4],
            ),
        ] {
            assert_eq!(ClientMessage::parse(&message(options)), None, "{why}");
        }
        let mut cut = message(&[53, 1, 1, 12, 200]);
        cut.pop();
        assert_eq!(
            ClientMessage::parse(&cut),
            None,
            "an option running past the end"
        );
        let mut reply = message(&[53, 1, 1]);
        reply[0] = 2;
        assert_eq!(ClientMessage::parse(&reply), None, "a BOOTREPLY");
        let mut token_ring = message(&[53, 1, 1]);
        token_ring[2] = 16;
        assert_eq!(ClientMessage::parse(&token_ring), None, "hlen 16");
        let mut no_cookie = message(&[53, 1, 1]);
        no_cookie[HEADER_LEN] = 0;
        assert_eq!(ClientMessage::parse(&no_cookie), None, "no magic cookie");
        assert_eq!(
            ClientMessage::parse(&no_cookie[..HEADER_LEN]),
            None,
            "too short"
        );
    }
}
