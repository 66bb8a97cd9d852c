//! A VM's port over a unix stream socket, as QEMU's `-netdev stream` (and passt) speak it: each
//! frame a 4-byte big-endian length and the Ethernet frame, no virtio-net header.
//!
//! Like the gateway and the VTEP, the switch sees a SOCK_SEQPACKET socketpair port (frames with
//! a virtio-net header; port security, impairments, capture and stats work on it as on any
//! port) and a thread of its own (`vm-NAME`) owns the other end: it listens on the socket path,
//! holds one VM's connection at a time (a new connection replaces the old one), and moves
//! frames between the two. Out (switch to VM): super-frames are cut to wire size with full
//! checksums (`offload::Segmenter`), framed and queued in one bounded buffer written without
//! blocking; when it is full the frame is dropped and counted. In (VM to switch): the stream
//! is read into a buffer, complete frames are split off (`next_frame`, fuzzed) and sent to the
//! switch behind a zero virtio-net header; a partial frame waits for the rest.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use mio::net::{UnixListener, UnixStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use serde::{Deserialize, Serialize};

use crate::datapath::socket_thread::{Listening, SocketThread, listen, remove_socket};
use crate::error::{Context, Error, Result};
use crate::offload::Segmenter;
use crate::wire::VNET_HDR_LEN;

const LISTENER: Token = Token(0);
const CONN: Token = Token(1);
const SWITCH: Token = Token(2);
const WAKER: Token = Token(3);

/// The length prefix of a frame on the stream.
pub const LEN_PREFIX: usize = 4;
/// The largest frame accepted from a VM: what a 16-bit IP length allows plus the Ethernet
/// header. A longer length means the stream is not QEMU's framing: the connection is closed.
pub const MAX_STREAM_FRAME: usize = 65_535 + 18;
/// Frames queued for the VM before new ones are dropped (a VM that does not read).
const OUT_BUF: usize = 1 << 20;
/// Bytes read from the VM at once (many frames; a frame split across reads is kept).
const IN_BUF: usize = 256 << 10;

/// A frame from the stream: where it starts and ends in the buffer, and how many bytes it took.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamFrame {
    pub start: usize,
    pub end: usize,
}

/// The stream is not length-prefixed frames: a length of zero or above `MAX_STREAM_FRAME`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadLength(pub u32);

/// The first complete frame of `buf`, if there is one; `Err` when its length cannot be a frame.
pub fn next_frame(buf: &[u8]) -> std::result::Result<Option<StreamFrame>, BadLength> {
    let Some(prefix) = buf.get(..LEN_PREFIX) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
    if len == 0 || len as usize > MAX_STREAM_FRAME {
        return Err(BadLength(len));
    }
    let end = LEN_PREFIX + len as usize;
    if buf.len() < end {
        return Ok(None);
    }
    Ok(Some(StreamFrame {
        start: LEN_PREFIX,
        end,
    }))
}

/// Fuzzing entry: split arbitrary bytes into frames until the first bad length; never panics.
pub fn check_arbitrary_stream(data: &[u8]) -> usize {
    let mut at = 0;
    let mut frames = 0;
    while let Ok(Some(f)) = next_frame(&data[at..]) {
        assert!(f.start <= f.end && at + f.end <= data.len());
        at += f.end;
        frames += 1;
    }
    frames
}

/// The stream side's own counters (the switch port has the usual ones).
#[derive(Default)]
pub struct StreamCounters {
    connections: AtomicU64,
    connected: AtomicBool,
    /// Frames for the VM dropped because its socket (and the port's queue) was full.
    to_vm_dropped: AtomicU64,
    /// Frames for the VM while none was connected.
    to_vm_absent: AtomicU64,
    /// Frames from the VM the switch's socket had no room for.
    from_vm_dropped: AtomicU64,
    /// Connections closed because the stream was not length-prefixed frames.
    bad_stream: AtomicU64,
    /// Super-frames that could not be segmented.
    segment_errors: AtomicU64,
}

/// A copy of `StreamCounters` for views.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamStats {
    pub connected: bool,
    pub connections: u64,
    pub to_vm_dropped: u64,
    pub to_vm_absent: u64,
    pub from_vm_dropped: u64,
    pub bad_stream: u64,
    pub segment_errors: u64,
}

impl StreamCounters {
    pub fn snapshot(&self) -> StreamStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StreamStats {
            connected: self.connected.load(Ordering::Relaxed),
            connections: get(&self.connections),
            to_vm_dropped: get(&self.to_vm_dropped),
            to_vm_absent: get(&self.to_vm_absent),
            from_vm_dropped: get(&self.from_vm_dropped),
            bad_stream: get(&self.bad_stream),
            segment_errors: get(&self.segment_errors),
        }
    }
}

/// A running stream port: its thread and socket file, both gone on drop.
pub struct StreamPort {
    pub counters: Arc<StreamCounters>,
    thread: SocketThread,
}

/// Bind a unix stream socket at `path`. `replace_socket`: a socket already there is removed
/// first (a restarted daemon's own, recorded in its state); anything else there is refused.
pub(crate) fn bind(path: &Path, replace_socket: bool) -> Result<std::os::unix::net::UnixListener> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if replace_socket && meta.file_type().is_socket() => std::fs::remove_file(path)
            .context(|| format!("remove old socket {}", path.display()))?,
        Ok(_) => {
            return Err(Error::conflict(format!(
                "socket path {} exists: remove it or choose another path",
                path.display()
            )));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(Error::invalid(format!(
                "socket path {}: {e}",
                path.display()
            )));
        }
    }
    let listener = std::os::unix::net::UnixListener::bind(path)
        .context(|| format!("listen on {}", path.display()))?;
    // Only the daemon's user may connect (a VM on the port may send as the port).
    if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
        let _ = std::fs::remove_file(path);
        return Err(Error::invalid(format!(
            "set the mode of {}: {e}",
            path.display()
        )));
    }
    listener
        .set_nonblocking(true)
        .context(|| format!("socket {}", path.display()))?;
    Ok(listener)
}

impl StreamPort {
    /// Listen at `path` and move frames between a VM there and `switch_end` (the socketpair end
    /// the switch does not poll). `name` names the thread; `replace_socket` as in `bind`.
    pub fn start(
        name: &str,
        path: &Path,
        replace_socket: bool,
        switch_end: OwnedFd,
    ) -> Result<StreamPort> {
        let Listening {
            listener,
            poll,
            waker,
        } = listen(name, path, replace_socket, &switch_end, (LISTENER, WAKER))?;
        // Registered above by its fd, which mio's listener keeps.
        let listener = UnixListener::from_std(listener);
        poll.registry()
            .register(
                &mut SourceFd(&switch_end.as_raw_fd()),
                SWITCH,
                Interest::READABLE,
            )
            .context(|| format!("poll the switch end of port {name}"))
            .map_err(|e| remove_socket(path, e))?;
        let counters = Arc::new(StreamCounters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let mut engine = Engine {
            poll,
            listener,
            conn: None,
            switch: switch_end,
            counters: counters.clone(),
            stop: stop.clone(),
            seg: Segmenter::new(),
            from_switch: vec![0u8; 65_536 + VNET_HDR_LEN].into_boxed_slice(),
            out: Vec::with_capacity(OUT_BUF),
            out_sent: 0,
            inbuf: vec![0u8; IN_BUF].into_boxed_slice(),
            in_len: 0,
            writable_wanted: false,
        };
        let thread =
            SocketThread::spawn(name, format!("vm-{name}"), path, stop, waker, move || {
                engine.run()
            })?;
        Ok(StreamPort { counters, thread })
    }

    pub fn path(&self) -> &Path {
        self.thread.path()
    }
}

struct Engine {
    poll: Poll,
    listener: UnixListener,
    conn: Option<UnixStream>,
    switch: OwnedFd,
    counters: Arc<StreamCounters>,
    stop: Arc<AtomicBool>,
    seg: Segmenter,
    from_switch: Box<[u8]>,
    /// Framed bytes for the VM; `out[out_sent..]` not written yet.
    out: Vec<u8>,
    out_sent: usize,
    /// Bytes from the VM; `inbuf[..in_len]` not split into frames yet.
    inbuf: Box<[u8]>,
    in_len: usize,
    /// The connection is registered for WRITABLE too (output is waiting).
    writable_wanted: bool,
}

impl Engine {
    fn run(&mut self) {
        let mut events = Events::with_capacity(16);
        while !self.stop.load(Ordering::Relaxed) {
            if let Err(e) = self
                .poll
                .poll(&mut events, Some(Duration::from_millis(500)))
            {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                eprintln!("tapnet: VM port poll: {e}");
                return;
            }
            for ev in &events {
                match ev.token() {
                    LISTENER => self.accept(),
                    CONN => {
                        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                            self.read_vm();
                        }
                        if ev.is_writable() {
                            self.flush();
                        }
                    }
                    SWITCH => self.read_switch(),
                    _ => {}
                }
            }
        }
    }

    /// Take every waiting connection; the newest replaces the one before (a VM that restarts
    /// reconnects before the old connection's end is seen).
    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    self.close();
                    if self
                        .poll
                        .registry()
                        .register(&mut stream, CONN, Interest::READABLE)
                        .is_err()
                    {
                        continue;
                    }
                    self.conn = Some(stream);
                    self.counters.connections.fetch_add(1, Ordering::Relaxed);
                    self.counters.connected.store(true, Ordering::Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    eprintln!("tapnet: VM port accept: {e}");
                    return;
                }
            }
        }
    }

    fn close(&mut self) {
        if let Some(mut c) = self.conn.take() {
            let _ = self.poll.registry().deregister(&mut c);
        }
        self.counters.connected.store(false, Ordering::Relaxed);
        self.out.clear();
        self.out_sent = 0;
        self.in_len = 0;
        self.writable_wanted = false;
    }

    /// Read what the VM sent and hand its complete frames to the switch.
    fn read_vm(&mut self) {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return;
            };
            let n = match conn.read(&mut self.inbuf[self.in_len..]) {
                Ok(0) => {
                    self.close();
                    return;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.close();
                    return;
                }
            };
            self.in_len += n;
            let mut at = 0;
            loop {
                match next_frame(&self.inbuf[at..self.in_len]) {
                    Ok(Some(f)) => {
                        let frame = &self.inbuf[at + f.start..at + f.end];
                        self.to_switch(frame);
                        at += f.end;
                    }
                    Ok(None) => break,
                    Err(_) => {
                        self.counters.bad_stream.fetch_add(1, Ordering::Relaxed);
                        self.close();
                        return;
                    }
                }
            }
            // Keep the partial frame at the front for the rest of it.
            self.inbuf.copy_within(at..self.in_len, 0);
            self.in_len -= at;
        }
    }

    /// One frame from the VM to the switch, behind a zero virtio-net header; one message.
    fn to_switch(&self, frame: &[u8]) {
        let hdr = [0u8; VNET_HDR_LEN];
        let iov = [
            libc::iovec {
                iov_base: hdr.as_ptr() as *mut libc::c_void,
                iov_len: hdr.len(),
            },
            libc::iovec {
                iov_base: frame.as_ptr() as *mut libc::c_void,
                iov_len: frame.len(),
            },
        ];
        // SAFETY: both iovecs point at live buffers of their lengths, only read by writev;
        // the fd is the socketpair end this engine owns.
        let n = unsafe { libc::writev(self.switch.as_raw_fd(), iov.as_ptr(), 2) };
        if n < 0 {
            self.counters
                .from_vm_dropped
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Frames the switch sent to the port: segmented, framed, queued for the VM.
    fn read_switch(&mut self) {
        loop {
            let buf = &mut self.from_switch;
            // SAFETY: buf is valid for writes of its length; the fd is our socketpair end.
            let n =
                unsafe { libc::read(self.switch.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            let n = n as usize;
            if self.conn.is_none() {
                self.counters.to_vm_absent.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let out = &mut self.out;
            let counters = &self.counters;
            let result = self.seg.segment(&self.from_switch[..n], &mut |seg: &[u8]| {
                let frame = &seg[VNET_HDR_LEN..];
                if out.len() + LEN_PREFIX + frame.len() > OUT_BUF {
                    counters.to_vm_dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                out.extend_from_slice(&(frame.len() as u32).to_be_bytes());
                out.extend_from_slice(frame);
            });
            if result.is_err() {
                self.counters.segment_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.flush();
    }

    /// Write queued frames without blocking; wait for WRITABLE while some remain.
    fn flush(&mut self) {
        while self.out_sent < self.out.len() {
            let Some(conn) = self.conn.as_mut() else {
                return;
            };
            match conn.write(&self.out[self.out_sent..]) {
                Ok(0) => break,
                Ok(n) => self.out_sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.close();
                    return;
                }
            }
        }
        if self.out_sent == self.out.len() {
            self.out.clear();
            self.out_sent = 0;
        } else if self.out_sent > OUT_BUF / 2 {
            // Make room at the back without waiting for the whole queue to drain.
            self.out.drain(..self.out_sent);
            self.out_sent = 0;
        }
        let want = !self.out.is_empty();
        if want != self.writable_wanted
            && let Some(conn) = self.conn.as_mut()
        {
            let interest = if want {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if self
                .poll
                .registry()
                .reregister(conn, CONN, interest)
                .is_ok()
            {
                self.writable_wanted = want;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_split_whole_and_a_partial_one_waits() {
        let mut buf = Vec::new();
        buf.extend_from_slice(&3u32.to_be_bytes());
        buf.extend_from_slice(b"abc");
        buf.extend_from_slice(&5u32.to_be_bytes());
        buf.extend_from_slice(b"de");
        let f = next_frame(&buf).unwrap().unwrap();
        assert_eq!(&buf[f.start..f.end], b"abc");
        assert_eq!(next_frame(&buf[f.end..]).unwrap(), None);
        assert_eq!(next_frame(&buf[..2]).unwrap(), None);
        assert_eq!(check_arbitrary_stream(&buf), 1);
    }

    #[test]
    fn impossible_lengths_are_refused() {
        assert_eq!(next_frame(&[0, 0, 0, 0]), Err(BadLength(0)));
        assert_eq!(next_frame(&[0, 1, 0, 0x20, 1]), Err(BadLength(0x0001_0020)));
    }

    /// A VM on the socket: a frame it sends reaches the switch end behind a zero header, a
    /// frame from the switch reaches it with its length; a second connection replaces it.
    #[test]
    fn frames_cross_both_ways_and_a_new_connection_replaces_the_old() {
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
        let dir = std::env::temp_dir().join(format!("tapnet-stream-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("vm.sock");
        let _ = std::fs::remove_file(&path);
        let (switch, ours) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let port = StreamPort::start("t", &path, false, ours).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // A path that exists is refused.
        let (_s2, o2) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        assert!(StreamPort::start("t2", &path, false, o2).is_err());

        let mut frame = vec![0u8; 60];
        frame[..6].copy_from_slice(&[0xff; 6]);
        frame[6..12].copy_from_slice(&[2, 0x42, 10, 0, 0, 9]);
        let mut vm = std::os::unix::net::UnixStream::connect(&path).unwrap();
        vm.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // Sent in two pieces: the port waits for the whole frame.
        vm.write_all(&(frame.len() as u32).to_be_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        vm.write_all(&frame).unwrap();
        let mut got = vec![0u8; 2048];
        let n = nix::unistd::read(&switch, &mut got).unwrap();
        assert_eq!(n, VNET_HDR_LEN + frame.len());
        assert_eq!(&got[VNET_HDR_LEN..n], &frame[..]);

        let mut to_vm = vec![0u8; VNET_HDR_LEN];
        to_vm.extend_from_slice(&frame);
        nix::unistd::write(&switch, &to_vm).unwrap();
        let mut len = [0u8; 4];
        vm.read_exact(&mut len).unwrap();
        assert_eq!(u32::from_be_bytes(len) as usize, frame.len());
        let mut back = vec![0u8; frame.len()];
        vm.read_exact(&mut back).unwrap();
        assert_eq!(back, frame);

        let mut vm2 = std::os::unix::net::UnixStream::connect(&path).unwrap();
        vm2.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        nix::unistd::write(&switch, &to_vm).unwrap();
        vm2.read_exact(&mut len).unwrap();
        assert_eq!(u32::from_be_bytes(len) as usize, frame.len());
        assert_eq!(port.counters.snapshot().connections, 2);
        drop(port);
        assert!(!path.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
