//! What the vhost-user relay (`vhost_user_port`) makes of the bytes on QEMU's control socket,
//! without I/O so that it can be fuzzed: a message's 12-byte header (request, flags, size) and
//! its body, bounded (`MessageReader`), and which of the VM's messages are held back and
//! replayed later (`Reorder`).

use crate::datapath::vhost_user_port::NUM_QUEUES;

/// vhost-user requests the relay looks at.
pub const SET_FEATURES: u32 = 2;
pub const SET_VRING_ENABLE: u32 = 18;
/// A message's header: request, flags and body size, each a little-endian u32.
pub const MSG_HDR: usize = 12;
/// The largest body accepted; a larger size field ends the session.
pub const MAX_MSG_BODY: usize = 64 << 10;
/// VHOST_USER_F_PROTOCOL_FEATURES in SET_FEATURES' u64.
const PROTOCOL_FEATURES_BIT: u64 = 1 << 30;
const VERSION_1: u32 = 0x1;
const REPLY: u32 = 0x4;
const NEED_REPLY: u32 = 0x8;
/// A header and a u64 (or two u32) body: SET_VRING_ENABLE and a REPLY_ACK.
pub const SHORT_MSG: usize = MSG_HDR + 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub request: u32,
    pub flags: u32,
    pub size: u32,
}

impl Header {
    /// The header at the start of `buf`; `None` when it is shorter than one.
    pub fn decode(buf: &[u8]) -> Option<Header> {
        let word = |at: usize| {
            buf.get(at..at + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        Some(Header {
            request: word(0)?,
            flags: word(4)?,
            size: word(8)?,
        })
    }

    /// A message of this header and an 8-byte body.
    fn short_message(self, body: [u8; 8]) -> [u8; SHORT_MSG] {
        let mut m = [0u8; SHORT_MSG];
        m[..4].copy_from_slice(&self.request.to_le_bytes());
        m[4..8].copy_from_slice(&self.flags.to_le_bytes());
        m[8..12].copy_from_slice(&self.size.to_le_bytes());
        m[12..].copy_from_slice(&body);
        m
    }
}

/// A header's size field above `MAX_MSG_BODY`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooLarge(pub u32);

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "vhost-user message of {} bytes", self.0)
    }
}

/// One message, from bytes as they arrive: it takes no more than the message lacks, so a
/// reader asking for `missing()` bytes never reads into the next message (whose fds come with
/// its first bytes).
#[derive(Default)]
pub struct MessageReader {
    buf: Vec<u8>,
    /// Header and body length, once the header is complete and its size allowed.
    want: Option<usize>,
}

impl MessageReader {
    /// Bytes the message still lacks: the rest of its header, then the rest of its body.
    pub fn missing(&self) -> usize {
        match self.want {
            Some(want) => want - self.buf.len(),
            None => MSG_HDR.saturating_sub(self.buf.len()),
        }
    }

    /// Take what the message lacks from the start of `bytes`; how many bytes were taken.
    /// `Err` once the header's size is too large: the rest of the stream cannot be trusted.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<usize, TooLarge> {
        let mut taken = 0;
        // At most twice: the rest of the header, then the body it announces.
        while taken < bytes.len() && self.missing() > 0 {
            let take = self.missing().min(bytes.len() - taken);
            self.buf.extend_from_slice(&bytes[taken..taken + take]);
            taken += take;
            if self.want.is_none()
                && let Some(header) = Header::decode(&self.buf)
            {
                if header.size as usize > MAX_MSG_BODY {
                    return Err(TooLarge(header.size));
                }
                self.want = Some(MSG_HDR + header.size as usize);
            }
        }
        Ok(taken)
    }

    /// The complete message: its header and body.
    pub fn message(&self) -> Option<(Header, &[u8])> {
        let want = self.want?;
        if self.buf.len() != want {
            return None;
        }
        Some((Header::decode(&self.buf)?, &self.buf[MSG_HDR..]))
    }

    /// The complete message's bytes as they came, header first.
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Start on the next message.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.want = None;
    }
}

/// What to do with a message from the VM.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Pass it on, then send `replay` to the daemon.
    Pass { replay: Vec<[u8; SHORT_MSG]> },
    /// Hold it back; `ack` goes back to the VM when it asked for a reply.
    Hold { ack: Option<[u8; SHORT_MSG]> },
}

/// QEMU (7.2) sends SET_VRING_ENABLE when the device is realized, before SET_FEATURES has
/// acked PROTOCOL_FEATURES, and the vhost crate ends the session on it. Those are held back
/// and, if PROTOCOL_FEATURES is acked (the rings then wait for an enable), replayed after
/// SET_FEATURES.
#[derive(Default)]
pub struct Reorder {
    features_set: bool,
    /// Held-back SET_VRING_ENABLE values per queue.
    enables: [Option<u32>; NUM_QUEUES],
}

impl Reorder {
    pub fn from_vm(&mut self, header: Header, body: &[u8]) -> Verdict {
        let word = |at: usize| {
            body.get(at..at + 4)
                .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        if self.features_set {
            return Verdict::Pass { replay: Vec::new() };
        }
        match header.request {
            SET_FEATURES => {
                self.features_set = true;
                let mut replay = Vec::new();
                if u64::from(word(0)) & PROTOCOL_FEATURES_BIT != 0 {
                    for (index, num) in self.enables.iter().enumerate() {
                        let Some(num) = num else { continue };
                        let mut body = [0u8; 8];
                        body[..4].copy_from_slice(&(index as u32).to_le_bytes());
                        body[4..].copy_from_slice(&num.to_le_bytes());
                        replay.push(
                            Header {
                                request: SET_VRING_ENABLE,
                                flags: VERSION_1,
                                size: 8,
                            }
                            .short_message(body),
                        );
                    }
                }
                Verdict::Pass { replay }
            }
            SET_VRING_ENABLE => {
                // A queue the device does not have: nothing to replay.
                if let Some(e) = self.enables.get_mut(word(0) as usize) {
                    *e = Some(word(4));
                }
                // REPLY_ACK: success, as the crate would answer once features are set.
                let ack = (header.flags & NEED_REPLY != 0).then(|| {
                    Header {
                        request: header.request,
                        flags: VERSION_1 | REPLY,
                        size: 8,
                    }
                    .short_message([0; 8])
                });
                Verdict::Hold { ack }
            }
            _ => Verdict::Pass { replay: Vec::new() },
        }
    }
}

/// Fuzzing entry: arbitrary bytes from the VM, fed in pieces of the size the first byte gives,
/// read into messages and through `Reorder` until a size is too large; never panics. Returns
/// the number of messages.
pub fn check_arbitrary_relay(data: &[u8]) -> usize {
    let Some((&step, data)) = data.split_first() else {
        return 0;
    };
    let step = usize::from(step).max(1);
    let mut reader = MessageReader::default();
    let mut reorder = Reorder::default();
    let mut messages = 0;
    for piece in data.chunks(step) {
        let mut at = 0;
        while at < piece.len() {
            let Ok(took) = reader.feed(&piece[at..]) else {
                return messages;
            };
            at += took;
            let Some((header, body)) = reader.message() else {
                assert!(reader.missing() > 0 && at == piece.len());
                continue;
            };
            assert!(body.len() == header.size as usize && body.len() <= MAX_MSG_BODY);
            if let Verdict::Pass { replay } = reorder.from_vm(header, body) {
                for m in replay {
                    let h = Header::decode(&m);
                    assert!(h.is_some_and(|h| h.request == SET_VRING_ENABLE && h.size == 8));
                }
            }
            messages += 1;
            reader.clear();
        }
    }
    messages
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(request: u32, flags: u32, body: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&request.to_le_bytes());
        m.extend_from_slice(&flags.to_le_bytes());
        m.extend_from_slice(&(body.len() as u32).to_le_bytes());
        m.extend_from_slice(body);
        m
    }

    fn enable(index: u32, num: u32, flags: u32) -> Vec<u8> {
        let mut body = index.to_le_bytes().to_vec();
        body.extend_from_slice(&num.to_le_bytes());
        message(SET_VRING_ENABLE, flags, &body)
    }

    fn reorder(r: &mut Reorder, bytes: &[u8]) -> Verdict {
        let mut reader = MessageReader::default();
        assert_eq!(reader.feed(bytes), Ok(bytes.len()));
        let (h, body) = reader.message().expect("a whole message");
        r.from_vm(h, body)
    }

    #[test]
    fn a_short_header_waits_for_the_rest() {
        let m = message(SET_FEATURES, VERSION_1, &[1, 2, 3, 4, 5, 6, 7, 8]);
        let mut reader = MessageReader::default();
        assert_eq!(reader.feed(&m[..5]), Ok(5));
        assert_eq!(reader.missing(), 7);
        assert_eq!(reader.message(), None);
        assert_eq!(Header::decode(&m[..11]), None);
    }

    #[test]
    fn an_oversized_size_field_is_refused() {
        let mut hdr = message(SET_FEATURES, VERSION_1, &[]);
        hdr[8..12].copy_from_slice(&(MAX_MSG_BODY as u32 + 1).to_le_bytes());
        let mut reader = MessageReader::default();
        assert_eq!(reader.feed(&hdr), Err(TooLarge(MAX_MSG_BODY as u32 + 1)));
        assert_eq!(reader.message(), None);
        // The largest allowed size is read.
        hdr[8..12].copy_from_slice(&(MAX_MSG_BODY as u32).to_le_bytes());
        let mut reader = MessageReader::default();
        assert_eq!(reader.feed(&hdr), Ok(MSG_HDR));
        assert_eq!(reader.missing(), MAX_MSG_BODY);
    }

    #[test]
    fn a_message_split_across_reads_is_whole_and_the_next_is_not_taken() {
        let first = message(SET_FEATURES, VERSION_1, &[1, 2, 3, 4, 5, 6, 7, 8]);
        let mut stream = first.clone();
        stream.extend_from_slice(&enable(0, 1, VERSION_1));
        let mut reader = MessageReader::default();
        let mut at = 0;
        // A byte at a time through the header, then the body and beyond in one read.
        while at < MSG_HDR {
            assert_eq!(reader.feed(&stream[at..at + 1]), Ok(1));
            at += 1;
        }
        assert_eq!(reader.missing(), 8);
        assert_eq!(reader.feed(&stream[at..]), Ok(8));
        assert_eq!(reader.missing(), 0);
        let (h, body) = reader.message().expect("whole");
        assert_eq!(
            (h.request, h.size, body),
            (SET_FEATURES, 8, &first[MSG_HDR..])
        );
        assert_eq!(reader.bytes(), &first[..]);
        reader.clear();
        assert_eq!(check_arbitrary_relay(&[&[3u8][..], &stream].concat()), 2);
    }

    #[test]
    fn an_empty_body_completes_with_the_header() {
        let mut reader = MessageReader::default();
        assert_eq!(reader.feed(&message(1, VERSION_1, &[])), Ok(MSG_HDR));
        assert_eq!(
            reader.message().map(|(h, b)| (h.request, b.len())),
            Some((1, 0))
        );
    }

    /// QEMU 7.2's order: both rings enabled (one asking for a reply) before SET_FEATURES.
    #[test]
    fn early_ring_enables_are_held_and_replayed_after_set_features() {
        let mut r = Reorder::default();
        assert_eq!(
            reorder(&mut r, &enable(0, 1, VERSION_1)),
            Verdict::Hold { ack: None }
        );
        let Verdict::Hold { ack: Some(ack) } =
            reorder(&mut r, &enable(1, 1, VERSION_1 | NEED_REPLY))
        else {
            panic!("an ack for NEED_REPLY");
        };
        assert_eq!(
            &ack[..],
            &message(SET_VRING_ENABLE, VERSION_1 | REPLY, &[0; 8])[..]
        );
        // Out of range: held, never replayed.
        assert_eq!(
            reorder(&mut r, &enable(7, 1, VERSION_1)),
            Verdict::Hold { ack: None }
        );
        let features = (PROTOCOL_FEATURES_BIT | 1 << 32).to_le_bytes();
        let Verdict::Pass { replay } =
            reorder(&mut r, &message(SET_FEATURES, VERSION_1, &features))
        else {
            panic!("SET_FEATURES passes");
        };
        let replay: Vec<Vec<u8>> = replay.iter().map(|m| m.to_vec()).collect();
        assert_eq!(
            replay,
            vec![enable(0, 1, VERSION_1), enable(1, 1, VERSION_1)]
        );
        // After SET_FEATURES everything passes, and nothing is replayed twice.
        let later = reorder(&mut r, &enable(0, 0, VERSION_1));
        assert_eq!(later, Verdict::Pass { replay: vec![] });
        let again = reorder(&mut r, &message(SET_FEATURES, VERSION_1, &features));
        assert_eq!(again, Verdict::Pass { replay: vec![] });
    }

    #[test]
    fn without_protocol_features_held_enables_are_not_replayed() {
        let mut r = Reorder::default();
        assert_eq!(
            reorder(&mut r, &enable(0, 1, VERSION_1)),
            Verdict::Hold { ack: None }
        );
        // A short body reads as no features.
        let v = reorder(&mut r, &message(SET_FEATURES, VERSION_1, &[0xff]));
        assert_eq!(v, Verdict::Pass { replay: vec![] });
    }

    #[test]
    fn arbitrary_bytes_stop_at_an_oversized_message() {
        let mut big = message(1, VERSION_1, &[]);
        big[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        let data = [
            &[1u8][..],
            &message(1, VERSION_1, &[9]),
            &big,
            &message(1, 1, &[]),
        ]
        .concat();
        assert_eq!(check_arbitrary_relay(&data), 1);
        assert_eq!(check_arbitrary_relay(&[]), 0);
        assert_eq!(check_arbitrary_relay(&[0, 1, 2]), 0);
    }
}
