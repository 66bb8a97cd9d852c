//! The upstream nameservers the gateway forwards to, read from resolv.conf text.

use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};

use super::DNS_PORT;

/// Nameservers used from resolv.conf: glibc's MAXNS, and what Docker forwards to.
pub const MAX_NAMESERVERS: usize = 3;

/// The upstream nameservers in resolv.conf text: `nameserver` lines with an IPv4 or IPv6 address
/// (an IPv6 one may carry a `%zone`), port 53, at most [`MAX_NAMESERVERS`], without duplicates.
/// Comments, other options and malformed lines are skipped.
///
/// `skip_loopback` drops 127.0.0.0/8, ::1 (and 0.0.0.0, ::, which mean this host): set it when
/// the queries will be sent from another network namespace, where the host's loopback resolver
/// (systemd-resolved's 127.0.0.53, for one) is not reachable. The gateway forwards from the
/// daemon's own namespace, so it passes false.
pub fn nameservers_from_resolv_conf(text: &str, skip_loopback: bool) -> Vec<SocketAddr> {
    let mut servers = Vec::new();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or_default();
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(server) = words.next().and_then(parse_nameserver) else {
            continue;
        };
        if (skip_loopback && is_this_host(server.ip())) || servers.contains(&server) {
            continue;
        }
        servers.push(server);
        if servers.len() == MAX_NAMESERVERS {
            break;
        }
    }
    servers
}

fn parse_nameserver(word: &str) -> Option<SocketAddr> {
    if let Ok(ip) = word.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, DNS_PORT));
    }
    // A link-local IPv6 server needs its zone: `fe80::1%eth0` or `fe80::1%2`.
    let (address, zone) = word.split_once('%')?;
    let address: Ipv6Addr = address.parse().ok()?;
    let scope_id = match zone.parse::<u32>() {
        Ok(index) => index,
        Err(_) => nix::net::if_::if_nametoindex(zone).ok()?,
    };
    Some(SocketAddr::V6(SocketAddrV6::new(
        address, DNS_PORT, 0, scope_id,
    )))
}

fn is_this_host(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_unspecified(),
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| v4.is_loopback() || v4.is_unspecified())
        }
    }
}

#[cfg(test)]
mod tests;
