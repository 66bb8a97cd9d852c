//! Published ports: parsing `-p [HOSTIP:]HOSTPORT:PORT[/udp]` and binding the host sockets.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};

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
    /// Address of the daemon's namespace to listen on; all when absent.
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    /// The sandbox's port.
    pub port: u16,
    pub protocol: Protocol,
    /// The network whose gateway carries it (the sandbox's first bridge network).
    pub network: String,
}

impl fmt::Display for PublishedPort {
    /// Docker's form: `0.0.0.0:8080->80/tcp`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = match self.protocol {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        };
        write!(
            f,
            "{}:{}->{}/{proto}",
            self.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
            self.host_port,
            self.port
        )
    }
}

impl PublishedPort {
    pub fn host_addr(&self) -> SocketAddrV4 {
        SocketAddrV4::new(
            self.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
            self.host_port,
        )
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
    let parts: Vec<&str> = ports.split(':').collect();
    let (host_ip, host_port, port) = match parts.as_slice() {
        [host, port] => (None, *host, *port),
        [ip, host, port] => {
            let ip = ip.parse::<Ipv4Addr>().map_err(|_| {
                Error::invalid(format!(
                    "malformed port mapping {spec:?}: bad host address {ip:?}"
                ))
            })?;
            (Some(ip), *host, *port)
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

/// A bound host socket for a published port.
pub enum HostSocket {
    Tcp(std::net::TcpListener),
    Udp(std::net::UdpSocket),
}

/// Bind the host side now, so that a taken port is an error before anything else happens.
pub fn bind(port: &PublishedPort) -> Result<HostSocket> {
    let addr = port.host_addr();
    let taken = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::PermissionDenied {
            let start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "1024".into());
            return Error::conflict(format!(
                "cannot publish {port}: binding host port {} needs privileges: ports below \
                 net.ipv4.ip_unprivileged_port_start ({start}) are reserved to root; publish a \
                 higher port, or lower that sysctl",
                addr.port()
            ));
        }
        Error::conflict(format!(
            "cannot publish {port}: host address {addr} is taken ({e})"
        ))
    };
    let socket = match port.protocol {
        Protocol::Tcp => HostSocket::Tcp(std::net::TcpListener::bind(addr).map_err(taken)?),
        Protocol::Udp => HostSocket::Udp(std::net::UdpSocket::bind(addr).map_err(taken)?),
    };
    let nonblocking = match &socket {
        HostSocket::Tcp(l) => l.set_nonblocking(true),
        HostSocket::Udp(s) => s.set_nonblocking(true),
    };
    nonblocking.map_err(|e| Error::Io {
        context: format!("publish {port}"),
        source: e,
    })?;
    Ok(socket)
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
        assert_eq!(p.host_ip, Some(Ipv4Addr::LOCALHOST));
        assert_eq!(p.protocol, Protocol::Udp);
        assert_eq!(p.to_string(), "127.0.0.1:5353->53/udp");
        for bad in [
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
    fn clashes() {
        let any = parse("8080:80", "n").unwrap();
        let lo = parse("127.0.0.1:8080:81", "n").unwrap();
        let other = parse("127.0.0.2:8080:81", "n").unwrap();
        let udp = parse("8080:80/udp", "n").unwrap();
        assert!(any.clashes_with(&lo) && lo.clashes_with(&any));
        assert!(!lo.clashes_with(&other));
        assert!(!any.clashes_with(&udp));
    }
}
