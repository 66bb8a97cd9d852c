//! Published ports: parsing `-p [HOSTIP:]HOSTPORT:PORT[/udp]` (HOSTIP an IPv4 address or an
//! IPv6 one in brackets, `[::1]`) and binding the host sockets. A port published on all
//! addresses listens on `0.0.0.0` and on `[::]` (IPv6 only, so that the two do not collide).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedPort {
    /// Address of the daemon's namespace to listen on; all, of both families, when absent.
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    /// The sandbox's port.
    pub port: u16,
    pub protocol: Protocol,
    /// The network whose gateway carries it (the sandbox's first bridge network).
    pub network: String,
}

impl fmt::Display for PublishedPort {
    /// Docker's form: `0.0.0.0:8080->80/tcp`, `[::1]:8080->80/tcp` (all addresses show as
    /// 0.0.0.0; [`PublishedPort::bindings`] lists each family).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = self.host_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        self.write_binding(f, host)
    }
}

impl PublishedPort {
    fn write_binding(&self, f: &mut dyn fmt::Write, host: IpAddr) -> fmt::Result {
        let proto = match self.protocol {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        };
        let host = SocketAddr::new(host, self.host_port);
        write!(f, "{host}->{}/{proto}", self.port)
    }

    /// The host addresses it listens on: its own, or 0.0.0.0 and [::].
    pub fn host_addrs(&self) -> Vec<SocketAddr> {
        match self.host_ip {
            Some(ip) => vec![SocketAddr::new(ip, self.host_port)],
            None => vec![
                SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), self.host_port),
                SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), self.host_port),
            ],
        }
    }

    /// Each binding in Docker's form: `0.0.0.0:8080->80/tcp` and `[::]:8080->80/tcp` for a port
    /// published on all addresses.
    pub fn bindings(&self) -> Vec<String> {
        self.host_addrs()
            .into_iter()
            .map(|a| {
                let mut s = String::new();
                let _ = self.write_binding(&mut s, a.ip());
                s
            })
            .collect()
    }

    /// Would both want the same host socket?
    pub fn clashes_with(&self, other: &PublishedPort) -> bool {
        self.protocol == other.protocol
            && self.host_port == other.host_port
            && (self.host_ip.is_none() || other.host_ip.is_none() || self.host_ip == other.host_ip)
    }
}

fn parse_port(what: &str, s: &str, spec: &str) -> Result<u16> {
    s.parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| Error::invalid(format!("malformed port mapping {spec:?}: bad {what} {s:?}")))
}

/// Parse `[HOSTIP:]HOSTPORT:PORT[/udp|/tcp]`.
pub fn parse(spec: &str, network: &str) -> Result<PublishedPort> {
    let (ports, protocol) = match spec.rsplit_once('/') {
        Some((p, "tcp")) => (p, Protocol::Tcp),
        Some((p, "udp")) => (p, Protocol::Udp),
        Some((_, other)) => {
            return Err(Error::invalid(format!(
                "malformed port mapping {spec:?}: unknown protocol {other:?} (tcp or udp)"
            )));
        }
        None => (spec, Protocol::Tcp),
    };
    let bad_ip = |ip: &str| {
        Error::invalid(format!(
            "malformed port mapping {spec:?}: bad host address {ip:?}"
        ))
    };
    // An IPv6 host address comes in brackets, as in a URL: [::1]:8080:80.
    let (ip6, ports) = match ports.strip_prefix('[') {
        Some(rest) => {
            let (ip, rest) = rest.split_once("]:").ok_or_else(|| bad_ip(rest))?;
            let ip = ip.parse::<Ipv6Addr>().map_err(|_| bad_ip(ip))?;
            (Some(IpAddr::V6(ip)), rest)
        }
        None => (None, ports),
    };
    let parts: Vec<&str> = ports.split(':').collect();
    let (host_ip, host_port, port) = match (ip6, parts.as_slice()) {
        (Some(ip), [host, port]) => (Some(ip), *host, *port),
        (None, [host, port]) => (None, *host, *port),
        (None, [ip, host, port]) => {
            let ip = ip.parse::<Ipv4Addr>().map_err(|_| bad_ip(ip))?;
            (Some(IpAddr::V4(ip)), *host, *port)
        }
        _ => {
            return Err(Error::invalid(format!(
                "malformed port mapping {spec:?}: expected [HOSTIP:]HOSTPORT:PORT[/udp]"
            )));
        }
    };
    Ok(PublishedPort {
        host_ip,
        host_port: parse_port("host port", host_port, spec)?,
        port: parse_port("port", port, spec)?,
        protocol,
        network: network.to_string(),
    })
}

/// The bound host sockets of a published port (one per address family it listens on).
pub enum HostSocket {
    Tcp(Vec<std::net::TcpListener>),
    Udp(Vec<std::net::UdpSocket>),
}

/// Bind the host side now, so that a taken port is an error before anything else happens.
/// On all addresses, a host without IPv6 gets the IPv4 socket only.
pub fn bind(port: &PublishedPort) -> Result<HostSocket> {
    let mut tcp = Vec::new();
    let mut udp = Vec::new();
    for addr in port.host_addrs() {
        let fd = match bind_one(port.protocol, addr) {
            Ok(fd) => fd,
            Err(e) if port.host_ip.is_none() && addr.is_ipv6() && no_ipv6(&e) => continue,
            Err(e) => return Err(refused(port, addr, e)),
        };
        match port.protocol {
            Protocol::Tcp => tcp.push(std::net::TcpListener::from(fd)),
            Protocol::Udp => udp.push(std::net::UdpSocket::from(fd)),
        }
    }
    Ok(match port.protocol {
        Protocol::Tcp => HostSocket::Tcp(tcp),
        Protocol::Udp => HostSocket::Udp(udp),
    })
}

/// Did a socket fail because the host has no IPv6 (no such family, or IPv6 disabled)?
fn no_ipv6(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EAFNOSUPPORT) | Some(libc::EADDRNOTAVAIL)
    )
}

/// One host socket on `addr`, non-blocking, listening if TCP. An IPv6 socket takes IPv6 only
/// (IPV6_V6ONLY), so that `[::]` and `0.0.0.0` are separate bindings, as in Docker.
fn bind_one(protocol: Protocol, addr: SocketAddr) -> std::io::Result<std::os::fd::OwnedFd> {
    use nix::sys::socket::{
        AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage, listen, setsockopt, socket,
        sockopt,
    };
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let kind = match protocol {
        Protocol::Tcp => SockType::Stream,
        Protocol::Udp => SockType::Datagram,
    };
    let fd = socket(
        family,
        kind,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    if addr.is_ipv6() {
        setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
    }
    if protocol == Protocol::Tcp {
        // As std's TcpListener::bind: a restarted daemon rebinds past TIME_WAIT.
        setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    }
    nix::sys::socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    if protocol == Protocol::Tcp {
        listen(&fd, Backlog::new(1024).unwrap_or(Backlog::MAXCONN))?;
    }
    Ok(fd)
}

/// The error of publishing `port` when its socket on `addr` failed with `e`.
fn refused(port: &PublishedPort, addr: SocketAddr, e: std::io::Error) -> Error {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied => {
            let start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "1024".into());
            Error::conflict(format!(
                "cannot publish {port}: binding host port {} needs privileges: ports below \
                 net.ipv4.ip_unprivileged_port_start ({start}) are reserved to root; publish a \
                 higher port, or lower that sysctl",
                addr.port()
            ))
        }
        std::io::ErrorKind::AddrInUse => Error::conflict(format!(
            "cannot publish {port}: host address {addr} is taken ({e})"
        )),
        _ => Error::Io {
            context: format!("publish {port}: bind host address {addr}"),
            source: e,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_forms() {
        let p = parse("8080:80", "n").unwrap();
        assert_eq!(
            (p.host_ip, p.host_port, p.port, p.protocol),
            (None, 8080, 80, Protocol::Tcp)
        );
        assert_eq!(p.to_string(), "0.0.0.0:8080->80/tcp");
        let p = parse("127.0.0.1:5353:53/udp", "n").unwrap();
        assert_eq!(p.host_ip, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert_eq!(p.protocol, Protocol::Udp);
        assert_eq!(p.to_string(), "127.0.0.1:5353->53/udp");
        let p = parse("[::1]:8080:80", "n").unwrap();
        assert_eq!(p.host_ip, Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        assert_eq!(p.to_string(), "[::1]:8080->80/tcp");
        assert_eq!(p.bindings(), ["[::1]:8080->80/tcp"]);
        let p = parse("[::]:5353:53/udp", "n").unwrap();
        assert_eq!(p.host_ip, Some(IpAddr::V6(Ipv6Addr::UNSPECIFIED)));
        assert_eq!(p.protocol, Protocol::Udp);
        assert_eq!(
            parse("8080:80", "n").unwrap().bindings(),
            ["0.0.0.0:8080->80/tcp", "[::]:8080->80/tcp"]
        );
        for bad in [
            "[::1]8080:80",
            "[::1:8080:80",
            "[x]:8080:80",
            "[127.0.0.1]:8080:80",
            "[::1]:1:8080:80",
            "::1:8080:80",
            "80",
            "0:80",
            "8080:0",
            "8080:70000",
            "x:8080:80",
            "8080:80/sctp",
            "1:2:3:4",
            "",
        ] {
            assert!(parse(bad, "n").is_err(), "{bad}");
        }
    }

    #[test]
    fn arbitrary_specs_never_panic() {
        let bases = [
            "[::1]:8080:80/udp",
            "127.0.0.1:53:53",
            "8080:80",
            "[::]:1:2/tcp",
        ];
        let mut rng = crate::test_rng::XorShift(0x5eed_0bad_5bec);
        for round in 0..20_000 {
            let mut spec = bases[round % bases.len()].as_bytes().to_vec();
            for _ in 0..rng.below(4) {
                let i = rng.below(spec.len());
                spec[i] = b"[]:/0123456789.af"[rng.below(17)];
            }
            spec.truncate(rng.below(spec.len() + 1));
            crate::cli::check_arbitrary_publish_spec(&String::from_utf8_lossy(&spec));
        }
    }

    #[test]
    fn clashes() {
        let any = parse("8080:80", "n").unwrap();
        let lo = parse("127.0.0.1:8080:81", "n").unwrap();
        let other = parse("127.0.0.2:8080:81", "n").unwrap();
        let udp = parse("8080:80/udp", "n").unwrap();
        assert!(any.clashes_with(&lo) && lo.clashes_with(&any));
        assert!(!lo.clashes_with(&other));
        assert!(!any.clashes_with(&udp));
        let lo6 = parse("[::1]:8080:81", "n").unwrap();
        assert!(any.clashes_with(&lo6) && !lo.clashes_with(&lo6));
    }

    /// A port on all addresses takes 0.0.0.0 and [::], which do not collide (IPV6_V6ONLY); an
    /// explicit [::1] binding is IPv6 only.
    #[test]
    fn all_addresses_bind_both_families_separately() {
        let holder = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        let free = holder.local_addr().unwrap().port();
        drop(holder);
        let any = parse(&format!("{free}:80"), "n").unwrap();
        let HostSocket::Tcp(listeners) = bind(&any).unwrap() else {
            panic!("TCP")
        };
        let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
        assert_eq!(addrs, any.host_addrs());
        // Both taken now: a second binding of either family is refused.
        let again = bind(&parse(&format!("[::1]:{free}:80"), "n").unwrap());
        assert!(again.is_err());
        drop(listeners);
        // Positive control: free again, [::1] alone binds.
        let HostSocket::Tcp(lo6) = bind(&parse(&format!("[::1]:{free}:80"), "n").unwrap()).unwrap()
        else {
            panic!("TCP")
        };
        assert_eq!(lo6.len(), 1);
    }
}
