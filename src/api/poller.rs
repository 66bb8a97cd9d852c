//! The control socket's event loop. One thread accepts connections and reads their request
//! lines without blocking; a fixed pool of threads answers complete lines. A connection that
//! only waits costs an fd and a buffer, never a thread, so idle or slow clients cannot make
//! the daemon grow threads or hold up the others. After an answer the connection comes back
//! to the loop for its next request.

use std::collections::HashMap;
use std::io::{ErrorKind, Read};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mio::{Events, Interest, Poll, Token, Waker};

use super::MAX_REQUEST_BYTES;
use super::server::{self, After, Handler, Job, PeerPolicy};

/// Threads that answer requests; a request that waits (a remote plugin, a process to die)
/// holds one, the rest go on.
pub const WORKERS: usize = 8;
/// Connections the loop holds at once; past this a new one is told so and closed.
pub const MAX_CONNECTIONS: usize = 4096;
/// Streams (`capture`, `trace --live`) served at once, each on a thread of its own.
pub const MAX_STREAMS: usize = 32;
/// A connection with no complete request for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const FIRST_CONN: usize = 2;

/// A connection waiting for (the rest of) a request line.
struct Pending {
    stream: mio::net::UnixStream,
    buf: Vec<u8>,
    since: Instant,
}

/// What a worker hands back to the loop: a connection that may send another request.
struct Returned(UnixStream);

/// Serve the control socket until the process ends.
pub fn serve(listener: UnixListener, handler: Arc<dyn Handler>, policy: PeerPolicy) {
    if let Err(e) = run(listener, handler, policy) {
        eprintln!("tapnet: the control socket's event loop failed: {e}; stopping the daemon");
        crate::guard::stop_daemon();
    }
}

fn run(
    listener: UnixListener,
    handler: Arc<dyn Handler>,
    policy: PeerPolicy,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let mut listener = mio::net::UnixListener::from_std(listener);
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let (jobs_tx, jobs_rx) = crossbeam_channel::bounded::<Job>(WORKERS * 4);
    let (back_tx, back_rx) = crossbeam_channel::unbounded::<Returned>();
    let streams = Arc::new(AtomicUsize::new(0));
    for i in 0..WORKERS {
        let (jobs, back, waker, handler, streams) = (
            jobs_rx.clone(),
            back_tx.clone(),
            waker.clone(),
            handler.clone(),
            streams.clone(),
        );
        std::thread::Builder::new()
            .name(format!("api-{i}"))
            .spawn(move || work(&jobs, &back, &waker, handler.as_ref(), &streams))?;
    }
    let mut pending: HashMap<Token, Pending> = HashMap::new();
    let mut next = FIRST_CONN;
    let mut events = Events::with_capacity(256);
    loop {
        match poll.poll(&mut events, Some(Duration::from_secs(1))) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for event in events.iter() {
            match event.token() {
                LISTENER => accept_all(&listener, &poll, &mut pending, &mut next, policy),
                WAKER => {
                    for Returned(conn) in back_rx.try_iter() {
                        adopt(conn, &poll, &mut pending, &mut next);
                    }
                }
                token => read_ready(token, &poll, &mut pending, &jobs_tx),
            }
        }
        close_idle(&poll, &mut pending);
    }
}

/// Accept every waiting connection; refuse peers the policy does not allow, and everyone
/// past `MAX_CONNECTIONS`, with one error line.
fn accept_all(
    listener: &mio::net::UnixListener,
    poll: &Poll,
    pending: &mut HashMap<Token, Pending>,
    next: &mut usize,
    policy: PeerPolicy,
) {
    loop {
        let (stream, _) = match listener.accept() {
            Ok(c) => c,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            // Out of fds, for instance: the next poll tries again.
            Err(e) => {
                eprintln!("tapnet: cannot accept a control connection: {e}");
                return;
            }
        };
        let Ok(conn) = into_std(stream) else { continue };
        if let Err(refusal) = server::check_peer(&conn, policy) {
            server::refuse(conn, &refusal);
            continue;
        }
        if pending.len() >= MAX_CONNECTIONS {
            server::refuse(
                conn,
                &format!("the daemon holds {MAX_CONNECTIONS} control connections already; retry"),
            );
            continue;
        }
        adopt(conn, poll, pending, next);
    }
}

fn into_std(stream: mio::net::UnixStream) -> std::io::Result<UnixStream> {
    use std::os::fd::{FromRawFd, IntoRawFd};
    let fd = stream.into_raw_fd();
    // SAFETY: `fd` was just released by the mio stream that owned it, so it is open and
    // owned by nobody else.
    let conn = unsafe { UnixStream::from_raw_fd(fd) };
    conn.set_nonblocking(false)?;
    Ok(conn)
}

/// Watch `conn` for its next request line.
fn adopt(conn: UnixStream, poll: &Poll, pending: &mut HashMap<Token, Pending>, next: &mut usize) {
    if conn.set_nonblocking(true).is_err() {
        return;
    }
    let mut stream = mio::net::UnixStream::from_std(conn);
    let token = Token(*next);
    *next = if *next == usize::MAX {
        FIRST_CONN
    } else {
        *next + 1
    };
    if poll
        .registry()
        .register(&mut stream, token, Interest::READABLE)
        .is_ok()
    {
        pending.insert(
            token,
            Pending {
                stream,
                buf: Vec::new(),
                since: Instant::now(),
            },
        );
    }
}

/// Read what `token`'s connection sent; a complete line goes to a worker.
fn read_ready(
    token: Token,
    poll: &Poll,
    pending: &mut HashMap<Token, Pending>,
    jobs: &Sender<Job>,
) {
    let Some(p) = pending.get_mut(&token) else {
        return;
    };
    let mut chunk = [0u8; 4096];
    let mut closed = false;
    loop {
        match p.stream.read(&mut chunk) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(n) => p.buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => {
                closed = true;
                break;
            }
        }
        if p.buf.len() as u64 > MAX_REQUEST_BYTES {
            break;
        }
    }
    let newline = p.buf.iter().position(|&b| b == b'\n');
    if newline.is_none() && p.buf.len() as u64 <= MAX_REQUEST_BYTES && !closed {
        return;
    }
    let Some(mut p) = pending.remove(&token) else {
        return;
    };
    let _ = poll.registry().deregister(&mut p.stream);
    let Ok(conn) = into_std(p.stream) else { return };
    match newline {
        Some(end) if end as u64 <= MAX_REQUEST_BYTES => {
            // Bytes after the line are a second request sent before the first was answered:
            // the protocol is one request, one answer, so they are not kept.
            let line = String::from_utf8_lossy(&p.buf[..end]).into_owned();
            if let Err(e) = jobs.send(Job { conn, line }) {
                drop(e);
            }
        }
        _ if p.buf.len() as u64 > MAX_REQUEST_BYTES => server::refuse(conn, "request too large"),
        // The client hung up before a whole line: nothing to answer.
        _ => {}
    }
}

/// Close connections that sent no complete request within `IDLE_TIMEOUT`.
fn close_idle(poll: &Poll, pending: &mut HashMap<Token, Pending>) {
    let now = Instant::now();
    pending.retain(|_, p| {
        let keep = now.duration_since(p.since) < IDLE_TIMEOUT;
        if !keep {
            let _ = poll.registry().deregister(&mut p.stream);
        }
        keep
    });
}

/// A worker: answer lines; give connections back to the loop, or hand a stream its thread.
fn work(
    jobs: &Receiver<Job>,
    back: &Sender<Returned>,
    waker: &Waker,
    handler: &dyn Handler,
    streams: &Arc<AtomicUsize>,
) {
    for job in jobs {
        match server::answer(job, handler, streams.load(Ordering::Relaxed) < MAX_STREAMS) {
            After::Next(conn) => {
                if back.send(Returned(conn)).is_ok() {
                    let _ = waker.wake();
                }
            }
            After::Close => {}
            After::Stream(stream) => {
                streams.fetch_add(1, Ordering::Relaxed);
                let count = streams.clone();
                let spawned =
                    std::thread::Builder::new()
                        .name("api-stream".into())
                        .spawn(move || {
                            stream();
                            count.fetch_sub(1, Ordering::Relaxed);
                        });
                if let Err(e) = spawned {
                    streams.fetch_sub(1, Ordering::Relaxed);
                    eprintln!("tapnet: cannot serve a capture: {e}");
                }
            }
        }
    }
}
