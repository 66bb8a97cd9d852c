//! The cluster store (`tapnet daemon --store etcd://HOST:PORT[,HOST:PORT...]`): overlay
//! networks, cluster-wide address claims and each endpoint's MAC, address and VTEP, kept in etcd
//! so every daemon of the cluster knows them.
//!
//! Keys (values are JSON):
//!
//! - `/tapnet/v1/networks/NAME`: the overlay network (VNI, subnet, range, MTU, options but this
//!   host's `vtep` and `peers`); no lease: it outlives the host that made it.
//! - `/tapnet/v1/vnis/VNI`: the name of the overlay network that has the VNI, made in one
//!   transaction with the network's key (both absent, or neither is written), so two hosts
//!   creating networks with one VNI at once have one winner.
//! - `/tapnet/v1/endpoints/NETWORK/IP`: an [`EndpointRecord`], under the daemon's lease. Made
//!   with "create if absent", so the key is also the address's claim: no two hosts hand out one
//!   address. When the daemon dies its lease ends and its endpoints disappear. IP is the
//!   endpoint's IPv4 address, or on an IPv6-only network its IPv6 one.
//! - `/tapnet/v1/addresses6/NETWORK/IP6`: the claim of a dual-stack endpoint's IPv6 address (the
//!   same record), made in one transaction with its endpoint key and under the same lease; the
//!   watch ignores it (the endpoint key carries the address).
//!
//! The client runs on a tokio runtime in a thread of its own (`etcd.rs`, cargo feature `etcd`);
//! the controller talks to it through channels ([`Cluster`]) and gets the store's changes as
//! [`Event`]s. Nothing here touches the datapath.

#[cfg(feature = "etcd")]
mod etcd;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use serde::{Deserialize, Serialize};

use crate::control::model::Network;
use crate::error::{Error, Result};
use crate::wire::MacAddr;

pub const PREFIX: &str = "/tapnet/v1/";
pub const NETWORKS: &str = "/tapnet/v1/networks/";
pub const ENDPOINTS: &str = "/tapnet/v1/endpoints/";
pub const VNIS: &str = "/tapnet/v1/vnis/";
pub const ADDRESSES6: &str = "/tapnet/v1/addresses6/";
/// How long a request to the store thread may take before the controller gives up on it.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a stopping daemon waits for the store to revoke its lease.
pub const REVOKE_WAIT: Duration = Duration::from_secs(2);
/// Default TTL of the daemon's lease (`--store-lease`).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(15);

/// `--store etcd://HOST:PORT[,HOST:PORT...]`: the endpoints as `http://HOST:PORT`.
pub fn parse_url(url: &str) -> std::result::Result<Vec<String>, String> {
    let rest = url.strip_prefix("etcd://").ok_or_else(|| {
        format!("bad store URL {url:?}: expected etcd://HOST:PORT[,HOST:PORT...]")
    })?;
    let mut out = Vec::new();
    for hp in rest.split(',') {
        let ok = hp.rsplit_once(':').is_some_and(|(h, p)| {
            !h.is_empty()
                && !h.contains('/')
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-[]:".contains(c))
                && p.parse::<u16>().is_ok_and(|p| p != 0)
        });
        if !ok {
            return Err(format!(
                "bad store URL {url:?}: {hp:?} is not HOST:PORT (expected etcd://HOST:PORT[,HOST:PORT...])"
            ));
        }
        out.push(format!("http://{hp}"));
    }
    Ok(out)
}

/// `--store-lease`: seconds, with an optional `s` (`3s`, `15`), 2-3600.
pub fn parse_lease(s: &str) -> std::result::Result<Duration, String> {
    let n: u64 = s
        .strip_suffix('s')
        .unwrap_or(s)
        .parse()
        .map_err(|_| format!("bad lease {s:?}: expected seconds such as 15s"))?;
    if !(2..=3600).contains(&n) {
        return Err(format!("lease {s:?} is out of range (2s-3600s)"));
    }
    Ok(Duration::from_secs(n))
}

/// One endpoint as the store keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EndpointRecord {
    pub network: String,
    /// The address the endpoint is known by: its IPv4 address, or on an IPv6-only network its
    /// IPv6 one.
    pub ip: IpAddr,
    /// A dual-stack network's IPv6 address of the endpoint, claimed with `ip`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<Ipv6Addr>,
    pub mac: MacAddr,
    pub sandbox: String,
    /// The daemon that owns it (its VTEP address, unique in the cluster).
    pub host: String,
    /// Where frames to it are sent.
    pub vtep: SocketAddr,
}

impl EndpointRecord {
    pub fn ipv4(&self) -> Option<Ipv4Addr> {
        match self.ip {
            IpAddr::V4(ip) => Some(ip),
            IpAddr::V6(_) => None,
        }
    }

    /// Its IPv6 address: a dual-stack endpoint's second one, or an IPv6-only endpoint's own.
    pub fn ipv6_addr(&self) -> Option<Ipv6Addr> {
        match self.ip {
            IpAddr::V6(ip) => Some(ip),
            IpAddr::V4(_) => self.ipv6,
        }
    }
}

pub fn network_key(name: &str) -> String {
    format!("{NETWORKS}{name}")
}

pub fn vni_key(vni: u32) -> String {
    format!("{VNIS}{vni}")
}

pub fn endpoint_key(network: &str, ip: IpAddr) -> String {
    format!("{ENDPOINTS}{network}/{ip}")
}

pub fn address6_key(network: &str, ip: Ipv6Addr) -> String {
    format!("{ADDRESSES6}{network}/{ip}")
}

/// The keys a record claims: its endpoint key, and its IPv6 address's where it has one.
pub fn claim_keys(rec: &EndpointRecord) -> (String, Option<String>) {
    (
        endpoint_key(&rec.network, rec.ip),
        rec.ipv6.map(|ip| address6_key(&rec.network, ip)),
    )
}

/// The answer to a claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    Won,
    /// Another host holds the address the endpoint is known by (`ip`: its IPv4 address, or on
    /// an IPv6-only network its IPv6 one), a dual-stack endpoint's IPv6 address (`ipv6`), or
    /// both: nothing was written.
    Taken {
        ip: bool,
        ipv6: bool,
    },
}

/// A network as other hosts should make it: without this host's VTEP and peers.
pub fn shared_network(net: &Network) -> Network {
    let mut n = net.clone();
    n.options.remove("vtep");
    n.options.remove("peers");
    n
}

/// A change in the store, for the controller.
#[derive(Debug)]
pub enum Event {
    /// Everything under the prefix, after (re)connecting: replaces what was known.
    Snapshot {
        networks: Vec<Network>,
        endpoints: Vec<EndpointRecord>,
    },
    Network(Network),
    NetworkGone(String),
    Endpoint(EndpointRecord),
    EndpointGone {
        network: String,
        ip: IpAddr,
    },
}

/// Parse one key-value pair of the store into an event (None: not ours or unreadable).
pub fn event_of(key: &str, value: &[u8], deleted: bool) -> Option<Event> {
    if let Some(name) = key.strip_prefix(NETWORKS) {
        if deleted {
            return Some(Event::NetworkGone(name.to_string()));
        }
        return serde_json::from_slice(value)
            .inspect_err(|e| eprintln!("tapnet: cluster store: unreadable {key}: {e}"))
            .ok()
            .map(Event::Network);
    }
    let rest = key.strip_prefix(ENDPOINTS)?;
    let (network, ip) = rest.rsplit_once('/')?;
    let ip: IpAddr = ip.parse().ok()?;
    if deleted {
        return Some(Event::EndpointGone {
            network: network.to_string(),
            ip,
        });
    }
    serde_json::from_slice(value)
        .inspect_err(|e| eprintln!("tapnet: cluster store: unreadable {key}: {e}"))
        .ok()
        .map(Event::Endpoint)
}

/// What the controller asks of the store thread.
pub enum Request {
    /// Create the network's key unless it exists; an existing one with another VNI is an error.
    PutNetwork(Box<Network>, Sender<Result<()>>),
    DeleteNetwork(String),
    /// Claim an endpoint's addresses: create its keys under the lease unless one exists.
    Claim(Box<EndpointRecord>, Sender<Result<Claim>>),
    /// Publish an endpoint this daemon already owns (after a restart): put under the lease.
    Publish(Box<EndpointRecord>),
    /// Give back an endpoint's claim (its IPv6 address's too: the store thread knows it).
    Release {
        network: String,
        ip: IpAddr,
    },
    /// The daemon stops cleanly: revoke its lease, so its endpoints leave the other hosts now
    /// rather than when the lease runs out; answered when done (or at once, store away).
    Revoke(Sender<()>),
}

/// The controller's handle of the store thread.
#[derive(Clone)]
pub struct Cluster {
    requests: Sender<Request>,
    /// This daemon's name in the store (its VTEP address).
    pub host: String,
}

/// How to reach the store.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    pub endpoints: Vec<String>,
    pub lease: Duration,
}

impl Cluster {
    /// Connect (an unreachable store is an error here, at start) and start the store thread;
    /// the store's changes arrive on the returned receiver.
    pub fn start(options: &StoreOptions, host: String) -> Result<(Cluster, Receiver<Event>)> {
        #[cfg(feature = "etcd")]
        {
            let (requests, events) = etcd::start(options)?;
            Ok((Cluster { requests, host }, events))
        }
        #[cfg(not(feature = "etcd"))]
        {
            let _ = (options, host);
            Err(Error::invalid(
                "--store: this tapnet was built without the cluster store; build it with `cargo build --release --features etcd` (needs protoc)",
            ))
        }
    }

    fn ask<T>(&self, what: &str, make: impl FnOnce(Sender<Result<T>>) -> Request) -> Result<T> {
        // A test hook: `TAPNET_TEST_SLOW_STORE_MS` (read once) makes every request that waits
        // for the store this slow, as a store far away would, so that a test can show the
        // controller's lock is not held meanwhile.
        static SLOW: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
        let slow = *SLOW.get_or_init(|| {
            std::env::var("TAPNET_TEST_SLOW_STORE_MS")
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .map_or(0, |ms| ms.min(10_000))
        });
        if slow > 0 {
            std::thread::sleep(Duration::from_millis(slow));
        }
        let (reply, wait) = crossbeam_channel::bounded(1);
        self.requests.send(make(reply)).map_err(|_| {
            Error::invalid(format!("cluster store: {what}: the store thread is gone"))
        })?;
        wait.recv_timeout(REQUEST_TIMEOUT).map_err(|_| {
            Error::invalid(format!(
                "cluster store: {what}: no answer within {}s (is the store reachable?)",
                REQUEST_TIMEOUT.as_secs()
            ))
        })?
    }

    pub fn put_network(&self, net: &Network) -> Result<()> {
        let net = Box::new(shared_network(net));
        let what = format!("create network {}", net.name);
        self.ask(&what, |r| Request::PutNetwork(net, r))
    }

    pub fn delete_network(&self, name: &str) {
        let _ = self.requests.send(Request::DeleteNetwork(name.to_string()));
    }

    pub fn claim(&self, rec: EndpointRecord) -> Result<Claim> {
        let what = format!("claim {} on network {}", rec.ip, rec.network);
        self.ask(&what, |r| Request::Claim(Box::new(rec), r))
    }

    pub fn publish(&self, rec: EndpointRecord) {
        let _ = self.requests.send(Request::Publish(Box::new(rec)));
    }

    /// Revoke the daemon's lease (a clean stop), waiting at most `REVOKE_WAIT` for the store.
    pub fn revoke(&self) {
        let (reply, done) = crossbeam_channel::bounded(1);
        if self.requests.send(Request::Revoke(reply)).is_ok() {
            let _ = done.recv_timeout(REVOKE_WAIT);
        }
    }

    pub fn release(&self, network: &str, ip: IpAddr) {
        let _ = self.requests.send(Request::Release {
            network: network.to_string(),
            ip,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls_parse_and_bad_ones_say_why() {
        assert_eq!(
            parse_url("etcd://127.0.0.1:2379,etcd1:2380").unwrap(),
            vec!["http://127.0.0.1:2379", "http://etcd1:2380"]
        );
        for bad in [
            "http://x:1",
            "etcd://",
            "etcd://host",
            "etcd://h:0",
            "etcd://h:1,",
            "etcd://a/b:1",
        ] {
            let e = parse_url(bad).unwrap_err();
            assert!(e.contains("bad store URL"), "{bad}: {e}");
        }
        assert_eq!(parse_lease("3s").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_lease("15").unwrap(), Duration::from_secs(15));
        assert!(parse_lease("1s").is_err() && parse_lease("x").is_err());
    }

    #[test]
    fn keys_become_events() {
        let rec = EndpointRecord {
            network: "ov".into(),
            ip: Ipv4Addr::new(10, 1, 0, 2).into(),
            ipv6: Some("fd00:1::2".parse().unwrap()),
            mac: MacAddr::from_ipv4(Ipv4Addr::new(10, 1, 0, 2)),
            sandbox: "a".into(),
            host: "127.0.0.2:4789".into(),
            vtep: "127.0.0.2:4789".parse().unwrap(),
        };
        let key = endpoint_key("ov", rec.ip);
        let value = serde_json::to_vec(&rec).unwrap();
        assert!(matches!(event_of(&key, &value, false), Some(Event::Endpoint(r)) if r == rec));
        assert!(matches!(
            event_of(&key, b"", true),
            Some(Event::EndpointGone { network, ip }) if network == "ov" && ip == rec.ip
        ));
        assert!(
            matches!(event_of(&network_key("ov"), b"", true), Some(Event::NetworkGone(n)) if n == "ov")
        );
        assert!(event_of("/other/x", b"", false).is_none());
        // An IPv6 address's claim is no event: the endpoint key carries the record.
        let (k4, k6) = claim_keys(&rec);
        assert_eq!(k4, key);
        let k6 = k6.unwrap();
        assert_eq!(k6, "/tapnet/v1/addresses6/ov/fd00:1::2");
        assert!(event_of(&k6, &value, false).is_none());
        assert!(event_of(&k6, b"", true).is_none());
        // Records without the field (IPv4-only, or from an older daemon) read as before.
        let v4only = br#"{"network":"ov","ip":"10.1.0.3","mac":"02:42:0a:01:00:03","sandbox":"b","host":"h","vtep":"127.0.0.2:4789"}"#;
        assert!(matches!(
            event_of(&endpoint_key("ov", Ipv4Addr::new(10, 1, 0, 3).into()), v4only, false),
            Some(Event::Endpoint(r)) if r.ipv6.is_none() && r.ipv4() == Some(Ipv4Addr::new(10, 1, 0, 3))
        ));
        assert!(event_of(&key, b"not json", false).is_none());
        // An IPv6-only endpoint is known by its IPv6 address, and has no second one.
        let only6 = EndpointRecord {
            ip: "fd00:1::3".parse().unwrap(),
            ipv6: None,
            ..rec.clone()
        };
        let key6 = endpoint_key("ov", only6.ip);
        assert_eq!(key6, "/tapnet/v1/endpoints/ov/fd00:1::3");
        assert_eq!(claim_keys(&only6), (key6.clone(), None));
        let value6 = serde_json::to_vec(&only6).unwrap();
        assert!(matches!(
            event_of(&key6, &value6, false),
            Some(Event::Endpoint(r)) if r.ipv4().is_none() && r.ipv6_addr() == "fd00:1::3".parse().ok()
        ));
        assert!(matches!(
            event_of(&key6, b"", true),
            Some(Event::EndpointGone { ip, .. }) if ip == only6.ip
        ));
    }
}
