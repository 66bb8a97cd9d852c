//! The fd keeper's messages. Each is one datagram of a unix SOCK_SEQPACKET connection: a tag
//! byte and a key (or an error text), with the fds it carries as SCM_RIGHTS.
//!
//! Daemon to keeper: `P` key + fds (keep these under key, replacing what it had), `D` key (close
//! what key has), `T` (send everything), `C` (close everything), `Q` (close everything and
//! exit). The keeper answers `O` (done) or `F` text (refused); to `T` with one `K` key + fds per
//! key, then `E`.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};

/// The longest key (and error text).
pub const MAX_KEY: usize = 200;
/// The most fds one message carries: a TAP's queues at most.
pub const MAX_FDS: usize = crate::wire::vnet::MAX_TAP_QUEUES;
/// The longest message: a tag and a key.
pub const MAX_MESSAGE: usize = 1 + MAX_KEY;

#[derive(Debug, PartialEq, Eq)]
pub enum Request<'a> {
    Put(&'a str),
    Drop(&'a str),
    TakeAll,
    Clear,
    Quit,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Reply<'a> {
    Ok,
    Failed(&'a str),
    Kept(&'a str),
    End,
}

/// A key: 1 to `MAX_KEY` printable ASCII bytes without spaces.
pub fn valid_key(key: &[u8]) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY && key.iter().all(|b| (0x21..=0x7e).contains(b))
}

fn key(body: &[u8]) -> Option<&str> {
    if valid_key(body) {
        std::str::from_utf8(body).ok()
    } else {
        None
    }
}

/// A request and the number of fds that came with it; `None` for anything else (a PUT without
/// fds, fds on a message that takes none, a bad key).
pub fn parse_request(msg: &[u8], fds: usize) -> Option<Request<'_>> {
    let (&tag, body) = msg.split_first()?;
    let no_fds = |r: Request<'static>| (fds == 0 && body.is_empty()).then_some(r);
    match tag {
        b'P' if (1..=MAX_FDS).contains(&fds) => key(body).map(Request::Put),
        b'D' if fds == 0 => key(body).map(Request::Drop),
        b'T' => no_fds(Request::TakeAll),
        b'C' => no_fds(Request::Clear),
        b'Q' => no_fds(Request::Quit),
        _ => None,
    }
}

/// A reply and the number of fds that came with it; `None` for anything else.
pub fn parse_reply(msg: &[u8], fds: usize) -> Option<Reply<'_>> {
    let (&tag, body) = msg.split_first()?;
    match tag {
        b'K' if (1..=MAX_FDS).contains(&fds) => key(body).map(Reply::Kept),
        _ if fds > 0 => None,
        b'O' if body.is_empty() => Some(Reply::Ok),
        b'E' if body.is_empty() => Some(Reply::End),
        b'F' if body.len() <= MAX_KEY => std::str::from_utf8(body).ok().map(Reply::Failed),
        _ => None,
    }
}

/// A message of tag and text, cut to `MAX_KEY` bytes (at a character boundary).
pub fn message(tag: u8, text: &str) -> ([u8; MAX_MESSAGE], usize) {
    let mut out = [0u8; MAX_MESSAGE];
    out[0] = tag;
    let mut n = text.len().min(MAX_KEY);
    while !text.is_char_boundary(n) {
        n -= 1;
    }
    out[1..1 + n].copy_from_slice(&text.as_bytes()[..n]);
    (out, 1 + n)
}

/// Send one message with `fds` (at most `MAX_FDS`) on `sock`; never raises SIGPIPE.
pub fn send(sock: BorrowedFd<'_>, msg: &[u8], fds: &[RawFd]) -> std::io::Result<()> {
    let iov = [IoSlice::new(msg)];
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    loop {
        match sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Receive one message into `buf`: its length and the fds it carried (close-on-exec), or `None`
/// at the end of the connection. A message cut short (too long, or too many fds) is an error;
/// the fds that came with it are closed.
pub fn recv(
    sock: BorrowedFd<'_>,
    buf: &mut [u8; MAX_MESSAGE],
) -> std::io::Result<Option<(usize, Vec<OwnedFd>)>> {
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    loop {
        let mut iov = [IoSliceMut::new(&mut buf[..])];
        let msg = match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(m) => m,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        };
        let mut fds = Vec::new();
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                if let ControlMessageOwned::ScmRights(raw) = c {
                    // SAFETY: SCM_RIGHTS gave us these descriptors; nothing else owns them.
                    fds.extend(
                        raw.into_iter()
                            .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                    );
                }
            }
        }
        let truncated = msg
            .flags
            .intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC);
        let len = msg.bytes;
        if truncated {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "message or its fds cut short",
            ));
        }
        if len == 0 && fds.is_empty() {
            return Ok(None);
        }
        return Ok(Some((len, fds)));
    }
}

/// Parse arbitrary bytes as both sides would (the fuzz target's check): never panics, and
/// what parses is what `message` makes of it again.
pub fn check_arbitrary(data: &[u8]) {
    let fds = data.first().map_or(0, |b| usize::from(*b) % (MAX_FDS + 2));
    let msg = data.get(1..).unwrap_or_default();
    if let Some(r) = parse_request(msg, fds) {
        let (tag, text) = match r {
            Request::Put(k) => (b'P', k),
            Request::Drop(k) => (b'D', k),
            Request::TakeAll => (b'T', ""),
            Request::Clear => (b'C', ""),
            Request::Quit => (b'Q', ""),
        };
        let (out, n) = message(tag, text);
        assert_eq!(&out[..n], msg);
    }
    if let Some(r) = parse_reply(msg, fds) {
        let (tag, text) = match r {
            Reply::Ok => (b'O', ""),
            Reply::Failed(t) => (b'F', t),
            Reply::Kept(k) => (b'K', k),
            Reply::End => (b'E', ""),
        };
        let (out, n) = message(tag, text);
        assert_eq!(&out[..n], msg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_parse_only_in_their_shape() {
        assert_eq!(
            parse_request(b"Pep/a/eth0", 2),
            Some(Request::Put("ep/a/eth0"))
        );
        assert_eq!(parse_request(b"Pep/a/eth0", 0), None, "a PUT carries fds");
        assert_eq!(
            parse_request(b"Dep/a/eth0", 0),
            Some(Request::Drop("ep/a/eth0"))
        );
        assert_eq!(parse_request(b"Dep/a/eth0", 1), None);
        assert_eq!(parse_request(b"D", 0), None, "an empty key");
        assert_eq!(parse_request(b"Dep a", 0), None, "a space");
        assert_eq!(parse_request(b"T", 0), Some(Request::TakeAll));
        assert_eq!(parse_request(b"Tx", 0), None);
        assert_eq!(parse_request(b"Q", 0), Some(Request::Quit));
        assert_eq!(parse_request(b"", 0), None);
        assert_eq!(
            parse_reply(b"Kep/a/eth0", 1),
            Some(Reply::Kept("ep/a/eth0"))
        );
        assert_eq!(parse_reply(b"O", 1), None);
        assert_eq!(parse_reply(b"Fno room", 0), Some(Reply::Failed("no room")));
        assert_eq!(parse_reply(b"E", 0), Some(Reply::End));
        let long = vec![b'k'; MAX_KEY + 1];
        assert!(!valid_key(&long));
        assert!(valid_key(&long[..MAX_KEY]));
        for data in [&b""[..], b"\x03Pk", b"\x00F\xff", b"\x41K"] {
            check_arbitrary(data);
        }
        let (m, n) = message(b'F', &"é".repeat(MAX_KEY));
        assert!(std::str::from_utf8(&m[1..n]).is_ok());
    }
}
