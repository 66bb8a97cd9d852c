//! `tapnet capture`: receive a network's frames from the daemon as pcap, and write them to a
//! file, to stdout, or as one summary line per frame.

use std::fs::File;
use std::io::{BufRead, Read, Write};

use crate::api::client::Client;
use crate::api::types::Request;
use crate::datapath::pcap::{self, GLOBAL_HEADER_LEN, RECORD_HEADER_LEN, RecordHeader};
use crate::error::{Context, Error, Result};

pub struct CaptureArgs {
    pub network: String,
    pub sandbox: Option<String>,
    /// `None`: print summaries; `Some("-")`: pcap on stdout; else a pcap file.
    pub write: Option<String>,
    pub count: Option<u64>,
    pub snaplen: Option<u32>,
}

pub fn run(client: &Client, args: CaptureArgs) -> Result<i32> {
    stop_on_interrupt();
    let (_, mut stream) = client.open_stream(&Request::Capture {
        network: args.network.clone(),
        sandbox: args.sandbox.clone(),
        snaplen: args.snaplen,
    })?;
    let mut out: Option<Box<dyn Write>> = match args.write.as_deref() {
        None => None,
        Some("-") => Some(Box::new(std::io::stdout())),
        Some(path) => Some(Box::new(
            File::create(path).context(|| format!("create capture file {path}"))?,
        )),
    };
    let mut header = [0u8; GLOBAL_HEADER_LEN];
    stream
        .read_exact(&mut header)
        .context(|| "read the capture header".into())?;
    if pcap::parse_global_header(&header).is_none() {
        return Err(Error::Remote(
            "the daemon sent a malformed capture header".into(),
        ));
    }
    if let Some(out) = out.as_mut() {
        out.write_all(&header)
            .and_then(|()| out.flush())
            .map_err(|e| super::output::stdout_error(e, "write capture"))?;
    } else {
        eprintln!("tapnet: capturing on network {}", args.network);
    }
    let mut seen = 0u64;
    let mut data = Vec::new();
    while args.count.is_none_or(|c| seen < c) {
        let mut rh = [0u8; RECORD_HEADER_LEN];
        if let Err(e) = stream.read_exact(&mut rh) {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                break;
            }
            return Err(Error::Io {
                context: "read capture".into(),
                source: e,
            });
        }
        let record = RecordHeader::parse(&rh);
        data.resize(record.incl_len as usize, 0);
        stream
            .read_exact(&mut data)
            .context(|| "read capture".into())?;
        match out.as_mut() {
            // One whole record per write, so an interrupted capture leaves a readable file.
            Some(out) => {
                let mut whole = rh.to_vec();
                whole.extend_from_slice(&data);
                out.write_all(&whole)
                    .and_then(|()| out.flush())
                    .map_err(|e| super::output::stdout_error(e, "write capture"))?;
            }
            None => outln!("{}", summary(&record, &data))?,
        }
        seen += 1;
    }
    // Hang up: the daemon ends the capture when it notices.
    drop(stream.get_mut().shutdown(std::net::Shutdown::Both));
    let _ = stream.fill_buf();
    if out.is_none() {
        eprintln!("tapnet: {seen} frames captured");
    }
    Ok(0)
}

/// `kill -INT` ends a capture, as it ends tcpdump, even when it was started with SIGINT
/// ignored (a background job of a non-interactive shell, `capture ... &`, inherits that). Every
/// record is written whole and flushed, so the default action, termination, leaves a readable
/// file.
fn stop_on_interrupt() {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // SAFETY: SIG_DFL installs no handler, so no code runs in signal context.
    let _ = unsafe { signal(Signal::SIGINT, SigHandler::SigDfl) };
}

/// A tcpdump-like one-liner: time, MACs, and what the frame carries.
fn summary(record: &RecordHeader, frame: &[u8]) -> String {
    let secs = record.ts_sec % 86_400;
    let time = format!(
        "{:02}:{:02}:{:02}.{:06}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        record.ts_usec
    );
    let mac = |b: &[u8]| {
        b.iter()
            .map(|x| format!("{x:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    };
    if frame.len() < 14 {
        return format!("{time} runt, length {}", record.orig_len);
    }
    let l2 = format!("{} > {}", mac(&frame[6..12]), mac(&frame[0..6]));
    let what = match etherparse::SlicedPacket::from_ethernet(frame) {
        Ok(p) => {
            let net = match &p.net {
                Some(etherparse::NetSlice::Ipv4(ip)) => {
                    let h = ip.header();
                    format!("IPv4 {} > {}", h.source_addr(), h.destination_addr())
                }
                Some(etherparse::NetSlice::Ipv6(ip)) => {
                    let h = ip.header();
                    format!("IPv6 {} > {}", h.source_addr(), h.destination_addr())
                }
                Some(etherparse::NetSlice::Arp(_)) => "ARP".to_string(),
                None => format!("ethertype 0x{:02x}{:02x}", frame[12], frame[13]),
            };
            let transport = match &p.transport {
                Some(etherparse::TransportSlice::Tcp(t)) => {
                    format!(" TCP {} > {}", t.source_port(), t.destination_port())
                }
                Some(etherparse::TransportSlice::Udp(u)) => {
                    format!(" UDP {} > {}", u.source_port(), u.destination_port())
                }
                Some(etherparse::TransportSlice::Icmpv4(_)) => " ICMP".to_string(),
                Some(etherparse::TransportSlice::Icmpv6(_)) => " ICMPv6".to_string(),
                Some(_) | None => String::new(),
            };
            net + &transport
        }
        Err(_) => format!("ethertype 0x{:02x}{:02x}", frame[12], frame[13]),
    };
    format!("{time} {l2}, {what}, length {}", record.orig_len)
}
