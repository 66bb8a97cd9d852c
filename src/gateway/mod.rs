//! The gateway of a bridge network: an internal switch port served by a smoltcp interface that
//! owns the gateway address. It answers ARP and ping for that address, and carries sandboxes'
//! TCP and UDP to the daemon's network namespace through host sockets (outbound NAT, as
//! slirp4netns and pasta do, so it needs no privileges). Connections to the gateway address
//! reach the host's loopback.
//!
//! One thread per gateway; it owns the smoltcp interface, its sockets and the NAT tables.

pub mod classify;
pub mod device;
pub mod dns;
pub mod dns_server;
pub mod engine;
pub mod flow_table;
pub mod icmp_nat;
pub mod policy;
pub mod publish;
pub mod tcp_nat;
pub mod tso;
pub mod udp_nat;

use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;

use crate::control::ipv4net::Ipv4Net;
use crate::datapath::frame::MacAddr;
use crate::error::{Context, Result};

#[derive(Clone, Debug)]
pub struct GatewayConfig {
    pub network: String,
    pub subnet: Ipv4Net,
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
    pub mtu: u32,
    /// Outbound NAT (false on `--internal` networks: no way out).
    pub nat: bool,
    pub policy: policy::NatPolicy,
    /// Idle time after which a UDP flow is forgotten.
    pub udp_idle: std::time::Duration,
    /// Where queries to the gateway address, port 53, go (its DNS server's UDP and TCP ends).
    pub dns: Option<(std::net::SocketAddrV4, std::net::SocketAddrV4)>,
}

/// Counters the control plane reads.
#[derive(Default)]
pub struct GatewayStats {
    pub tcp_flows: AtomicUsize,
    pub udp_flows: AtomicUsize,
}

pub struct Gateway {
    commands: crossbeam_channel::Sender<publish::GatewayCommand>,
    stop: Arc<AtomicBool>,
    waker: Arc<mio::Waker>,
    thread: Option<JoinHandle<()>>,
    pub stats: Arc<GatewayStats>,
    dns: dns_server::DnsServer,
}

impl Gateway {
    /// Serve `config` on `port`, the gateway's end of its switch port.
    pub fn start(
        mut config: GatewayConfig,
        port: OwnedFd,
        dns: dns_server::DnsServer,
    ) -> Result<Gateway> {
        config.dns = Some((dns.udp, dns.tcp));
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(GatewayStats::default());
        let (commands, receiver) = crossbeam_channel::unbounded();
        let engine =
            engine::Engine::new(config.clone(), port, stop.clone(), stats.clone(), receiver)?;
        let waker = engine.waker();
        let thread = std::thread::Builder::new()
            .name(format!("gateway-{}", config.network))
            .spawn(move || engine.run())
            .context(|| format!("spawn the gateway of network {}", config.network))?;
        Ok(Gateway {
            commands,
            stop,
            waker,
            thread: Some(thread),
            stats,
            dns,
        })
    }
}

impl Gateway {
    /// The names the gateway's DNS answers for.
    /// The DNS server's query and answer counters.
    pub fn dns_stats(&self) -> Arc<dns_server::DnsStats> {
        self.dns.stats.clone()
    }

    pub fn set_names(&self, table: dns_server::NameTable) {
        self.dns.set_names(table);
    }

    /// Hand a published port (or its removal) to the gateway's thread.
    pub fn command(&self, command: publish::GatewayCommand) {
        if self.commands.send(command).is_ok() {
            let _ = self.waker.wake();
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
