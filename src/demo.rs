//! `tapnet demo`: the seed topology from the README, built in a throwaway state dir with real
//! traffic. Networks backend and frontend; container1 and container2 on backend, container3 on
//! frontend; then container2 also joins frontend. Every sandbox tries a TCP transfer to every
//! address of every other sandbox; the table shows what reached what. Then the way to the host:
//! its loopback at the gateway address, closed on backend (the default) and open on frontend
//! (`host_loopback=on`), and the host's own address, `host.tapnet.internal`, from everywhere.
//! Last the MAC tables.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::api::client::Client;
use crate::api::types::{FdbRow, NetworkCreate, NetworkView, Request, SandboxCreate, SandboxView};
use crate::cli::output::table;
use crate::cli::reset;
use crate::error::{Error, Result};
use crate::netns::namespace::in_netns;
use crate::paths::StateDir;

const PORT: u16 = 7000;
const TRANSFER: usize = 1 << 20;

/// Removes the demo's state dir however the demo ends.
struct Cleanup(Client);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Err(e) = reset::reset(&self.0) {
            eprintln!("tapnet: demo cleanup: {e}");
        }
    }
}

fn pattern(i: usize) -> u8 {
    (i.wrapping_mul(31) >> 3) as u8
}

/// Accept transfers on `addr` inside `netns` until `deadline`; each is checked byte by byte.
fn serve(netns: &Path, addr: Ipv4Addr, deadline: Instant) -> Result<()> {
    let listener = in_netns(netns, move || {
        TcpListener::bind((addr, PORT)).map_err(|e| Error::Io {
            context: format!("listen on {addr}:{PORT}"),
            source: e,
        })
    })?;
    accept_transfers(listener, deadline);
    Ok(())
}

fn accept_transfers(listener: TcpListener, deadline: Instant) {
    listener.set_nonblocking(true).ok();
    std::thread::spawn(move || {
        while Instant::now() < deadline {
            match listener.accept() {
                Ok((mut conn, _)) => {
                    conn.set_nonblocking(false).ok();
                    let mut buf = vec![0u8; 65536];
                    let mut total = 0usize;
                    let mut good = true;
                    while let Ok(n) = conn.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        good &= buf[..n]
                            .iter()
                            .enumerate()
                            .all(|(i, b)| *b == pattern(total + i));
                        total += n;
                    }
                    let verdict: &[u8] = if good && total == TRANSFER {
                        b"ok"
                    } else {
                        b"bad"
                    };
                    let _ = conn.write_all(verdict);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
}

/// Send TRANSFER bytes from inside `netns` to `to`; the cell text for the table.
fn probe(netns: &Path, to: Ipv4Addr, port: u16) -> String {
    let result = in_netns(netns, move || {
        let start = Instant::now();
        let target = SocketAddr::from((to, port));
        let outcome = (|| -> std::io::Result<String> {
            let mut conn = TcpStream::connect_timeout(&target, Duration::from_millis(700))?;
            conn.set_read_timeout(Some(Duration::from_secs(3)))?;
            let data: Vec<u8> = (0..TRANSFER).map(pattern).collect();
            conn.write_all(&data)?;
            conn.shutdown(std::net::Shutdown::Write)?;
            let mut verdict = String::new();
            conn.read_to_string(&mut verdict)?;
            Ok(verdict)
        })();
        Ok(match outcome {
            Ok(v) if v == "ok" => format!("ok ({:.1} ms)", start.elapsed().as_secs_f64() * 1e3),
            Ok(_) => "corrupted".to_string(),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => "unreachable".to_string(),
            Err(e) => format!("unreachable ({})", e.kind()),
        })
    });
    result.unwrap_or_else(|e| format!("error: {e}"))
}

fn addresses(sb: &SandboxView) -> Vec<(String, Ipv4Addr)> {
    sb.interfaces
        .iter()
        .filter_map(|i| {
            let ip = i.ipv4.as_ref()?.split('/').next()?.parse().ok()?;
            Some((i.network.clone(), ip))
        })
        .collect()
}

/// The demo's state dir: `chosen` (from `--state-dir` or TAPNET_STATE_DIR) when it does not
/// exist yet, else a new one under the temp dir. The demo removes its state dir at the end, so
/// an existing one (a daemon's networks and sandboxes, say) is refused rather than reset.
fn demo_dir(chosen: Option<PathBuf>) -> Result<PathBuf> {
    match chosen {
        Some(dir) if dir.exists() => Err(Error::invalid(format!(
            "demo: state dir {} exists; the demo removes its state dir at the end, so give it \
             one that does not exist yet, or no --state-dir (and no TAPNET_STATE_DIR)",
            dir.display()
        ))),
        Some(dir) => Ok(dir),
        None => Ok(std::env::temp_dir().join(format!("tapnet-demo-{}", std::process::id()))),
    }
}

pub fn run(chosen_dir: Option<PathBuf>) -> Result<i32> {
    let dir = demo_dir(chosen_dir)?;
    let client = Client::new(StateDir::new(dir.clone()), true);
    let cleanup = Cleanup(Client::new(StateDir::new(dir.clone()), false));
    outln!("tapnet demo: state dir {}", dir.display())?;
    build(&client)?;
    let sandboxes: Vec<SandboxView> = client.call(&Request::SandboxList)?;
    // A rootless daemon's namespace pins exist only in its holder's mount namespace: join it
    // (and its user namespace) before any thread starts, as `tapnet exec` does. This process
    // keeps the user's network namespace, so the host's loopback below is still the user's.
    let info: crate::api::types::InfoView = client.call(&Request::Info)?;
    if let Some(holder) = info.holder_pid {
        crate::rootless::holder::join(holder)?;
    }

    let deadline = Instant::now() + Duration::from_secs(60);
    for sb in &sandboxes {
        for (_, ip) in addresses(sb) {
            serve(&PathBuf::from(&sb.netns), ip, deadline)?;
        }
    }
    let mut headers = vec!["from \\ to".to_string()];
    let mut targets = Vec::new();
    for sb in &sandboxes {
        for (net, ip) in addresses(sb) {
            headers.push(format!("{} {ip} ({net})", sb.name));
            targets.push((sb.name.clone(), ip));
        }
    }
    let mut rows = Vec::new();
    for sb in &sandboxes {
        let mut row = vec![sb.name.clone()];
        for (name, ip) in &targets {
            row.push(if *name == sb.name {
                "-".to_string()
            } else {
                probe(&PathBuf::from(&sb.netns), *ip, PORT)
            });
        }
        rows.push(row);
    }
    outln!("\nTCP transfers of 1 MiB, checked byte by byte:\n")?;
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    out!("{}", table(&headers, &rows))?;
    // The way out: a server on this host's loopback, reached at each sandbox's gateway address
    // through the gateway's NAT where the network opens it (frontend), refused elsewhere.
    let host = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| Error::Io {
        context: "listen on the host's loopback".into(),
        source: e,
    })?;
    let host_port = host.local_addr().map(|a| a.port()).unwrap_or(0);
    accept_transfers(host, deadline);
    let mut rows = Vec::new();
    for sb in &sandboxes {
        let Some(first) = sb.interfaces.first() else {
            continue;
        };
        let net: NetworkView = client.call(&Request::NetworkInspect {
            name: first.network.clone(),
        })?;
        let Some(gateway) = net.gateway else { continue };
        let open = net
            .options
            .get("host_loopback")
            .map_or("off", String::as_str);
        rows.push(vec![
            sb.name.clone(),
            format!("{} (host_loopback={open})", net.name),
            format!("{gateway}:{host_port}"),
            probe(&PathBuf::from(&sb.netns), gateway, host_port),
        ]);
    }
    outln!(
        "\nThe host's 127.0.0.1:{host_port} at the gateway address (only where the network opens it):\n"
    )?;
    out!(
        "{}",
        table(&["from", "network", "to", "1 MiB transfer"], &rows)
    )?;
    host_by_name(&sandboxes, deadline)?;
    for net in ["backend", "frontend"] {
        let fdb: Vec<FdbRow> = client.call(&Request::Fdb {
            network: net.into(),
        })?;
        let rows: Vec<Vec<String>> = fdb
            .iter()
            .map(|r| {
                vec![
                    r.mac.clone(),
                    r.port.clone(),
                    crate::cli::views::age(r.age_s),
                    r.kind.clone(),
                ]
            })
            .collect();
        outln!("\nMAC table of {net}:\n")?;
        out!("{}", table(&["MAC", "PORT", "AGE", "KIND"], &rows))?;
    }
    outln!("\ncleaning up {}", dir.display())?;
    drop(cleanup);
    Ok(0)
}

/// A server on the host's own (non-loopback) IPv4 address, the one `host.tapnet.internal`
/// answers with, reached from every sandbox through NAT whatever its network's
/// `host_loopback`.
fn host_by_name(sandboxes: &[SandboxView], deadline: Instant) -> Result<()> {
    let addrs = crate::gateway::dns::HostAddresses::new(None).get(Instant::now());
    let Some(&host) = addrs.v4.first() else {
        outln!(
            "\nThis host has no non-loopback IPv4 address: host.tapnet.internal has no A record."
        )?;
        return Ok(());
    };
    let listener = TcpListener::bind((host, 0)).map_err(|e| Error::Io {
        context: format!("listen on the host's {host}"),
        source: e,
    })?;
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    accept_transfers(listener, deadline);
    let rows: Vec<Vec<String>> = sandboxes
        .iter()
        .map(|sb| {
            vec![
                sb.name.clone(),
                format!("{host}:{port}"),
                probe(&PathBuf::from(&sb.netns), host, port),
            ]
        })
        .collect();
    outln!("\nThe host's own address, as host.tapnet.internal names it, through NAT:\n")?;
    out!("{}", table(&["from", "to", "1 MiB transfer"], &rows))?;
    Ok(())
}

fn build(client: &Client) -> Result<()> {
    for (name, options) in [
        ("backend", vec![]),
        ("frontend", vec!["host_loopback=on".to_string()]),
    ] {
        client.call_value(&Request::NetworkCreate(NetworkCreate {
            name: name.into(),
            options,
            ..NetworkCreate::default()
        }))?;
        outln!("network {name} created")?;
    }
    for (name, net) in [
        ("container1", "backend"),
        ("container2", "backend"),
        ("container3", "frontend"),
    ] {
        client.call_value(&Request::SandboxCreate(SandboxCreate {
            name: name.into(),
            networks: vec![net.into()],
            ..SandboxCreate::default()
        }))?;
        outln!("sandbox {name} created on {net}")?;
    }
    client.call_value(&Request::NetworkConnect {
        network: "frontend".into(),
        sandbox: "container2".into(),
        ip: None,
        aliases: Vec::new(),
        ip6: None,
    })?;
    outln!("container2 connected to frontend")?;
    Ok(())
}
