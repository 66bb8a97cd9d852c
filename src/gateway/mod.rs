//! The gateway of a bridge network: an internal switch port served by a smoltcp interface that
//! owns the gateway address. It answers ARP and ping for that address, and carries sandboxes'
//! TCP and UDP to the daemon's network namespace through host sockets (outbound NAT, as
//! slirp4netns and pasta do, so it needs no privileges). Connections to the gateway address
//! reach the host's loopback only where the network asks (`host_loopback`); elsewhere, on a
//! port the gateway does not serve itself, they are refused (RST, port unreachable) and
//! counted.
//!
//! On a network with IPv6 (`GatewayConfig::ipv6`) it also owns an IPv6 address and the
//! link-local address of its MAC: it answers neighbour discovery and ping for them, advertises
//! the prefix (`ra`: SLAAC, default route, MTU, nameserver), answers DNS queries to its IPv6
//! address, and carries TCP and UDP over IPv6 through host sockets as it does IPv4's (to its
//! IPv6 address: the host's `::1`); what it cannot carry is refused.
//!
//! One thread per gateway; it owns the smoltcp interface, its sockets and the NAT tables.

pub mod classify;
pub(crate) mod classify_v6;
pub(crate) mod device;
pub mod dhcp;
pub mod dns;
pub(crate) mod engine;
pub(crate) mod flow_table;
pub(crate) mod icmp_nat;
pub mod inbound;
pub(crate) mod ndp;
pub mod policy;
pub(crate) mod publish;
pub(crate) mod ra;
pub(crate) mod tcp_nat;
pub mod tso;
pub(crate) mod udp_nat;
#[cfg(test)]
mod v6_tests;

use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;

use crate::error::{Context, Error, Result};
use crate::wire::{Ipv4Net, MacAddr};

#[derive(Clone, Debug)]
pub struct GatewayConfig {
    pub network: String,
    /// The network's IPv4 side (none on an IPv6-only network).
    pub ipv4: Option<GatewayV4>,
    pub mac: MacAddr,
    pub mtu: u32,
    /// Outbound NAT (false on `--internal` networks: no way out).
    pub nat: bool,
    pub policy: policy::NatPolicy,
    /// Does the gateway address lead to the host's loopback (`--opt host_loopback=on`)? Off,
    /// TCP and UDP to it (but DNS) are refused.
    pub host_loopback: bool,
    /// Idle time after which a UDP flow (or a published UDP port's peer) is forgotten.
    pub udp_idle: std::time::Duration,
    /// Caps on what sandboxes can make the gateway hold.
    pub limits: NatLimits,
    /// Where queries to the gateway address, port 53, go (its DNS server's UDP and TCP ends).
    pub dns: Option<(std::net::SocketAddrV4, std::net::SocketAddrV4)>,
    /// The network's IPv6 side, on a dual-stack or IPv6-only network.
    pub ipv6: Option<GatewayV6>,
    /// The longest busy poll after a round with work before the thread sleeps, as the
    /// datapath workers do (`--poll-spin`; zero: never).
    pub spin: std::time::Duration,
}

/// A gateway's IPv4 subnet and address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GatewayV4 {
    pub subnet: Ipv4Net,
    pub ip: Ipv4Addr,
}

/// A gateway's IPv6 prefix and address (the router its Router Advertisements name).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GatewayV6 {
    pub subnet: crate::wire::Ipv6Net,
    pub ip: std::net::Ipv6Addr,
}

/// Caps on the gateway's NAT state, so that no sandbox can exhaust the daemon's fds or memory
/// and starve its neighbours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NatLimits {
    /// UDP flows (a host socket each).
    pub udp: flow_table::FlowLimits,
    /// TCP flows (a host socket and up to 2 MiB of buffers each); SYNs beyond get RST.
    pub tcp: flow_table::FlowLimits,
    /// Host peers one published UDP port tracks at once (the idlest is forgotten first).
    pub published_udp_peers: usize,
}

impl Default for NatLimits {
    fn default() -> Self {
        NatLimits {
            udp: udp_nat::DEFAULT_LIMITS,
            tcp: tcp_nat::DEFAULT_LIMITS,
            published_udp_peers: publish::DEFAULT_PEERS,
        }
    }
}

/// Counters the control plane reads.
#[derive(Default)]
pub struct GatewayStats {
    pub tcp_flows: AtomicUsize,
    pub udp_flows: AtomicUsize,
    /// SYNs refused (RST) and published connections closed because a TCP cap was reached.
    pub tcp_refused: AtomicUsize,
    /// UDP flows evicted to stay under a cap.
    pub udp_evicted: AtomicUsize,
    /// Host peers the published UDP ports remember.
    pub published_udp_peers: AtomicUsize,
    /// TCP connections and UDP datagrams to the gateway address refused because the network
    /// keeps the host's loopback closed (`host_loopback=off`).
    pub host_loopback_refused: AtomicUsize,
    /// The DHCPv4 server's offers, acks, naks and unknown clients.
    pub dhcp: Arc<dhcp::DhcpStats>,
}

pub struct Gateway {
    commands: crossbeam_channel::Sender<publish::GatewayCommand>,
    stop: Arc<AtomicBool>,
    waker: Arc<mio::Waker>,
    thread: Option<JoinHandle<()>>,
    pub stats: Arc<GatewayStats>,
    dns: dns::DnsServer,
    leases: dhcp::Leases,
}

impl Gateway {
    /// Serve `config` on `port`, the gateway's end of its switch port.
    pub fn start(config: GatewayConfig, port: OwnedFd, dns: dns::DnsServer) -> Result<Gateway> {
        Gateway::start_with(config, port, None, dns)
    }

    /// As `start`, with the frames to the switch going through `inbox` (which the switch's
    /// side of the port polls) rather than `port`.
    pub fn start_with(
        mut config: GatewayConfig,
        port: OwnedFd,
        inbox: Option<Arc<crate::datapath::inbox::Inbox>>,
        dns: dns::DnsServer,
    ) -> Result<Gateway> {
        config.dns = Some((dns.udp, dns.tcp));
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(GatewayStats::default());
        let (commands, receiver) = crossbeam_channel::unbounded();
        let leases = dhcp::Leases::default();
        // smoltcp panics on some configurations (a multicast address, say) that validation should
        // have refused; should one slip through, it is this request's error, not a dead thread,
        // and the port fd, dropped in the unwind, is not leaked.
        let engine = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            engine::Engine::new(
                config.clone(),
                device::SwitchDevice::new(port, config.mtu as usize, inbox),
                stop.clone(),
                stats.clone(),
                receiver,
                Some(&dns),
                leases.clone(),
            )
        }))
        .map_err(|payload| {
            Error::invalid(format!(
                "start the gateway of network {}: {}",
                config.network,
                crate::guard::panic_message(payload.as_ref())
            ))
        })??;
        let waker = engine.waker();
        let name = format!("gateway-{}", config.network);
        let thread = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                crate::guard::guarded(&name, || engine.run());
            })
            .context(|| format!("spawn the gateway of network {}", config.network))?;
        Ok(Gateway {
            commands,
            stop,
            waker,
            thread: Some(thread),
            stats,
            dns,
            leases,
        })
    }
}

/// A handle that sends commands to a gateway's thread without holding the `Gateway` itself,
/// for work done outside the controller's lock.
#[derive(Clone)]
pub struct Commander {
    commands: crossbeam_channel::Sender<publish::GatewayCommand>,
    waker: Arc<mio::Waker>,
}

impl Commander {
    pub fn send(&self, command: publish::GatewayCommand) {
        if self.commands.send(command).is_ok() {
            let _ = self.waker.wake();
        }
    }
}

impl Gateway {
    pub fn commander(&self) -> Commander {
        Commander {
            commands: self.commands.clone(),
            waker: self.waker.clone(),
        }
    }

    /// DNS queries and TCP clients its DNS server turned away because its pools were busy.
    pub fn dns_shed(&self) -> u64 {
        self.dns.shed()
    }

    /// The names the gateway's DNS answers for.
    /// The DNS server's query and answer counters.
    pub fn dns_stats(&self) -> Arc<dns::DnsStats> {
        self.dns.stats.clone()
    }

    pub fn set_names(&self, table: dns::NameTable) {
        self.dns.set_names(table);
    }

    /// Change the names the gateway's DNS answers for in place.
    pub fn edit_names(&self, edit: impl FnOnce(&mut dns::NameTable)) {
        self.dns.edit_names(edit);
    }

    /// The MACs and addresses the gateway's DHCP server answers for (replacing the last table).
    pub fn set_leases(&self, table: dhcp::LeaseTable) {
        self.leases.set(table);
    }

    /// Change the lease table in place.
    pub fn edit_leases(&self, edit: impl FnOnce(&mut dhcp::LeaseTable)) {
        self.leases.edit(edit);
    }

    /// The DHCP server's counters, for `network inspect`.
    pub fn dhcp_view(&self) -> crate::api::types::DhcpView {
        let d = &self.stats.dhcp;
        let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        crate::api::types::DhcpView {
            offers: get(&d.offers),
            acks: get(&d.acks),
            naks: get(&d.naks),
            unknown_clients: get(&d.unknown_clients),
            releases: get(&d.releases),
            declines: get(&d.declines),
            ignored: get(&d.ignored),
        }
    }

    /// Hand a published port (or its removal) to the gateway's thread.
    pub fn command(&self, command: publish::GatewayCommand) {
        self.commander().send(command);
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

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};

    fn config(ip: Ipv4Addr, subnet: &str) -> GatewayConfig {
        GatewayConfig {
            network: "t".into(),
            ipv4: Some(GatewayV4 {
                subnet: subnet.parse().unwrap(),
                ip,
            }),
            mac: MacAddr([2, 0x42, 10, 0, 0, 1]),
            mtu: 1500,
            nat: false,
            policy: policy::NatPolicy::new(Vec::new(), Vec::new()),
            host_loopback: true,
            udp_idle: std::time::Duration::from_secs(30),
            limits: NatLimits::default(),
            dns: None,
            ipv6: None,
            // As the daemon's default, so these tests run the spin too.
            spin: std::time::Duration::from_micros(50),
        }
    }

    fn port() -> (OwnedFd, OwnedFd) {
        socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        )
        .unwrap()
    }

    /// smoltcp panics on a multicast interface address; the request fails instead, and the
    /// gateway's end of the port is closed (the switch's end sees the hang-up).
    #[test]
    fn a_configuration_smoltcp_refuses_is_an_error_not_a_dead_thread() {
        let (switch_end, gateway_end) = port();
        let dns = dns::DnsServer::start("t", Vec::new()).unwrap();
        let bad = config(Ipv4Addr::new(224, 0, 0, 1), "224.0.0.0/24");
        let err = Gateway::start(bad, gateway_end, dns)
            .err()
            .expect("refused");
        assert!(err.to_string().contains("not unicast"), "{err}");
        let mut byte = [0u8; 1];
        let n = nix::unistd::read(&switch_end, &mut byte).expect("peer closed, not EAGAIN");
        assert_eq!(n, 0, "the gateway's end is closed");
        // Positive control: a good address starts, and the same check sees the end open.
        let (switch_end, gateway_end) = port();
        let dns = dns::DnsServer::start("t", Vec::new()).unwrap();
        let good = config(Ipv4Addr::new(10, 0, 0, 1), "10.0.0.0/24");
        let gateway = Gateway::start(good, gateway_end, dns).expect("starts");
        assert_eq!(
            nix::unistd::read(&switch_end, &mut byte),
            Err(nix::errno::Errno::EAGAIN),
            "open and silent"
        );
        drop(gateway);
    }
}
