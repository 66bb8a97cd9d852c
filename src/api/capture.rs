//! A capture's stream on the control connection: pcap records until the client hangs up
//! (`tapnet capture`), and the test for that hang-up that `trace --live` uses too.

use std::io::{BufWriter, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use crossbeam_channel::RecvTimeoutError;
use nix::sys::socket::{MsgFlags, recv};

use crate::datapath::capture::CaptureSession;
use crate::datapath::pcap::{self, RecordHeader};

/// Has the client hung up (or sent anything, which also ends a capture)?
pub(super) fn client_done(conn: &UnixStream) -> bool {
    let mut byte = [0u8; 1];
    !matches!(
        recv(
            conn.as_raw_fd(),
            &mut byte,
            MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT
        ),
        Err(nix::errno::Errno::EAGAIN)
    )
}

/// Write the capture as pcap until the client hangs up.
pub(super) fn stream(session: &CaptureSession, conn: UnixStream) {
    let Ok(probe) = conn.try_clone() else {
        return;
    };
    let mut out = BufWriter::new(conn);
    if out
        .write_all(&pcap::global_header(session.snaplen))
        .is_err()
        || out.flush().is_err()
    {
        return;
    }
    loop {
        match session.records.recv_timeout(Duration::from_millis(250)) {
            Ok(record) => {
                let header = RecordHeader {
                    ts_sec: record.ts_sec,
                    ts_usec: record.ts_usec,
                    incl_len: record.data.len() as u32,
                    orig_len: record.orig_len,
                };
                let written = out
                    .write_all(&header.to_bytes())
                    .and_then(|_| out.write_all(&record.data));
                session.sink.recycle(record);
                if written.is_err() {
                    return;
                }
                if session.records.is_empty() && out.flush().is_err() {
                    return;
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                if client_done(&probe) {
                    return;
                }
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}
