//! The files a sandbox sees as /etc/hosts, /etc/resolv.conf and /etc/hostname. They live in the
//! state dir and are bind mounted in the sandbox's mount namespace; they are rewritten in place
//! (never replaced), so that a live sandbox sees a new interface's address at once.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use super::model::{Sandbox, State};
use super::nofollow::Dir;
use crate::error::Result;
use crate::paths::{ETC_DIR, StateDir};

const FILES: [&str; 3] = ["hosts", "resolv.conf", "hostname"];

/// (file in the state dir, what it covers in the sandbox).
pub fn binds(dir: &Path) -> Vec<(PathBuf, PathBuf)> {
    FILES
        .iter()
        .map(|f| (dir.join(f), Path::new("/etc").join(f)))
        .collect()
}

pub fn hosts(sb: &Sandbox) -> String {
    let mut text = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    let ips = sb.endpoints.iter().flat_map(|ep| {
        let v4 = ep.ipv4.map(std::net::IpAddr::from);
        let v6 = ep.ipv6.map(std::net::IpAddr::from);
        v4.into_iter().chain(v6)
    });
    for ip in ips {
        if sb.hostname == sb.name {
            text.push_str(&format!("{ip}\t{}\n", sb.hostname));
        } else {
            text.push_str(&format!("{ip}\t{} {}\n", sb.hostname, sb.name));
        }
    }
    text
}

/// The gateway of the sandbox's first non-internal bridge network answers DNS; failing that,
/// its first bridge network's (names of the network still resolve).
/// That network's IPv4 gateway and, on a network with an IPv6 prefix, its IPv6 one.
pub fn nameserver(state: &State, sb: &Sandbox) -> (Option<Ipv4Addr>, Option<Ipv6Addr>) {
    let bridges: Vec<_> = sb
        .endpoints
        .iter()
        .filter_map(|ep| state.network(&ep.network))
        .filter(|n| crate::drivers::of(n.driver).has_gateway())
        .collect();
    bridges
        .iter()
        .find(|n| !n.internal)
        .or(bridges.first())
        .map_or((None, None), |n| (n.gateway, n.gateway6))
}

pub fn resolv_conf(state: &State, sb: &Sandbox) -> String {
    let (v4, v6) = nameserver(state, sb);
    if v4.is_none() && v6.is_none() {
        return "# no network with a gateway: no name server\n".to_string();
    }
    let mut text = String::new();
    if let Some(ip) = v4 {
        text.push_str(&format!("nameserver {ip}\n"));
    }
    if let Some(ip) = v6 {
        text.push_str(&format!("nameserver {ip}\n"));
    }
    text.push_str("options ndots:0\n");
    text
}

/// The files are bind mounted over /etc in the sandbox, where processes of any user read them:
/// mode 0644 whatever the daemon's umask.
const MODE: u32 = 0o644;

/// Write (or rewrite) all three files of `sb` into its dir under the state dir (the sandbox's
/// processes reach the files through bind mounts, never through the state dir). No link in the
/// state dir is followed: a linked directory is refused, a linked file replaced.
pub fn write(dirs: &StateDir, state: &State, sb: &Sandbox) -> Result<()> {
    EtcFiles::of(state, sb).write(dirs)
}

/// A sandbox's three files as text: computed from the model under the controller's lock,
/// written without it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcFiles {
    sandbox: String,
    hosts: String,
    resolv_conf: String,
    hostname: String,
}

impl EtcFiles {
    pub fn of(state: &State, sb: &Sandbox) -> Self {
        EtcFiles {
            sandbox: sb.name.clone(),
            hosts: hosts(sb),
            resolv_conf: resolv_conf(state, sb),
            hostname: format!("{}\n", sb.hostname),
        }
    }

    /// Write (or rewrite) them into the sandbox's dir under the state dir (see `write`).
    pub fn write(&self, dirs: &StateDir) -> Result<()> {
        let dir = Dir::open_root(dirs.root())?
            .subdir(ETC_DIR, Some(0o755))?
            .subdir(&self.sandbox, Some(0o755))?;
        dir.write_in_place("hosts", self.hosts.as_bytes(), MODE)?;
        dir.write_in_place("resolv.conf", self.resolv_conf.as_bytes(), MODE)?;
        dir.write_in_place("hostname", self.hostname.as_bytes(), MODE)
    }
}

/// Remove a sandbox's files; a link in the way is removed, never followed.
pub fn remove(dirs: &StateDir, sandbox: &str) {
    let removed = Dir::open_root(dirs.root())
        .and_then(|root| root.subdir(ETC_DIR, None))
        .and_then(|etc| etc.remove_all(sandbox));
    match removed {
        Ok(()) => {}
        Err(crate::error::Error::Sys {
            errno: nix::errno::Errno::ENOENT,
            ..
        }) => {}
        Err(e) => eprintln!("tapnet: sandbox {sandbox}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::model::{Endpoint, Network};

    fn dual_state(v4: bool) -> (State, Sandbox) {
        let mut state: State = serde_json::from_value(serde_json::json!({
            "version": 1,
            "networks": [{"name": "n", "id": "1", "driver": "bridge", "subnet": "10.61.0.0/24",
                "gateway": "10.61.0.1", "subnet6": "fd00:61::/64", "gateway6": "fd00:61::1",
                "ip_range": null, "internal": false, "mtu": 1500, "vni": null,
                "mac_aging_s": 300, "options": {}, "builtin": false}],
            "sandboxes": []
        }))
        .unwrap();
        let ep: Endpoint = serde_json::from_value(serde_json::json!({
            "id": "2", "network": "n", "interface": "eth0", "mac": "02:42:0a:3d:00:02",
            "ipv4": "10.61.0.2", "ipv6": "fd00:61::2", "aliases": []
        }))
        .unwrap();
        let mut sb = Sandbox {
            name: "a".into(),
            id: "3".into(),
            hostname: "a".into(),
            endpoints: vec![ep],
            ports: Vec::new(),
        };
        if !v4 {
            let net: &mut Network = &mut state.networks[0];
            (net.subnet, net.gateway) = (None, None);
            sb.endpoints[0].ipv4 = None;
        }
        (state, sb)
    }

    #[test]
    fn hosts_and_resolv_conf_list_both_families() {
        let (state, sb) = dual_state(true);
        assert!(
            hosts(&sb).ends_with("10.61.0.2\ta\nfd00:61::2\ta\n"),
            "{}",
            hosts(&sb)
        );
        assert_eq!(
            resolv_conf(&state, &sb),
            "nameserver 10.61.0.1\nnameserver fd00:61::1\noptions ndots:0\n"
        );
        let (state, sb) = dual_state(false);
        assert!(
            hosts(&sb).ends_with("ip6-allrouters\nfd00:61::2\ta\n"),
            "{}",
            hosts(&sb)
        );
        assert_eq!(
            resolv_conf(&state, &sb),
            "nameserver fd00:61::1\noptions ndots:0\n"
        );
    }
}
