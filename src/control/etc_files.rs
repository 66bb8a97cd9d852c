//! The files a sandbox sees as /etc/hosts, /etc/resolv.conf and /etc/hostname. They live in the
//! state dir and are bind mounted in the sandbox's mount namespace; they are rewritten in place
//! (never replaced), so that a live sandbox sees a new interface's address at once.

use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::model::{Sandbox, State};
use crate::error::{Context, Result};

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
    for ep in &sb.endpoints {
        if let Some(ip) = ep.ipv4 {
            if sb.hostname == sb.name {
                text.push_str(&format!("{ip}\t{}\n", sb.hostname));
            } else {
                text.push_str(&format!("{ip}\t{} {}\n", sb.hostname, sb.name));
            }
        }
    }
    text
}

/// The gateway of the sandbox's first non-internal bridge network answers DNS; failing that,
/// its first bridge network's (names of the network still resolve).
pub fn nameserver(state: &State, sb: &Sandbox) -> Option<Ipv4Addr> {
    let bridges: Vec<_> = sb
        .endpoints
        .iter()
        .filter_map(|ep| state.network(&ep.network))
        .filter(|n| crate::drivers::of(n.driver).switched())
        .collect();
    bridges
        .iter()
        .find(|n| !n.internal)
        .or(bridges.first())
        .and_then(|n| n.gateway)
}

pub fn resolv_conf(state: &State, sb: &Sandbox) -> String {
    match nameserver(state, sb) {
        Some(ip) => format!("nameserver {ip}\noptions ndots:0\n"),
        None => "# no network with a gateway: no name server\n".to_string(),
    }
}

/// The files are bind mounted over /etc in the sandbox, where processes of any user read them:
/// mode 0644 whatever the daemon's umask.
fn write_in_place(path: &Path, text: &str) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(path)
        .context(|| format!("write {}", path.display()))?;
    file.set_permissions(std::fs::Permissions::from_mode(0o644))
        .context(|| format!("write {}", path.display()))?;
    file.write_all(text.as_bytes())
        .context(|| format!("write {}", path.display()))
}

/// Write (or rewrite) all three files of `sb` into `dir` (the sandbox's processes
/// reach the files through bind mounts, never through the state dir).
pub fn write(dir: &Path, state: &State, sb: &Sandbox) -> Result<()> {
    std::fs::create_dir_all(dir).context(|| format!("create {}", dir.display()))?;
    write_in_place(&dir.join("hosts"), &hosts(sb))?;
    write_in_place(&dir.join("resolv.conf"), &resolv_conf(state, sb))?;
    write_in_place(&dir.join("hostname"), &format!("{}\n", sb.hostname))
}
