//! Rootless mode: a daemon started by a user without privileges makes its own user namespace
//! (the user mapped to root) and mount namespace, through a holder process (`holder.rs`), and
//! stays in the user's own network namespace, so its NAT and published ports are the user's
//! sockets, as with slirp4netns and pasta. Sandboxes are network namespaces owned by that user
//! namespace; their TAPs are opened inside them.

pub mod checks;
pub mod holder;
pub mod idmap;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::paths::StateDir;

/// How the daemon runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum Mode {
    /// With CAP_SYS_ADMIN and CAP_NET_ADMIN in its own user namespace (root).
    Root,
    /// In the user namespace and mount namespace of holder `holder`.
    Rootless { holder: i32 },
}

impl Mode {
    /// The PID whose user namespace `tapnet exec` joins, in rootless mode.
    pub fn holder(&self) -> Option<i32> {
        match self {
            Mode::Root => None,
            Mode::Rootless { holder } => Some(*holder),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Mode::Root => "root",
            Mode::Rootless { .. } => "rootless",
        }
    }

    /// A command line that enters a sandbox by hand.
    pub fn enter_hint(&self, netns: &str, utsns: Option<&str>) -> String {
        let uts = utsns.map(|u| format!(" --uts={u}")).unwrap_or_default();
        match self {
            Mode::Root => format!("nsenter --net={netns}{uts} CMD"),
            // The pins exist only in the holder's mount namespace: enter it (and its user
            // namespace) first, then the sandbox's namespaces by path.
            Mode::Rootless { holder } => {
                format!("nsenter -t {holder} -U -m -- nsenter --net={netns}{uts} CMD")
            }
        }
    }
}

/// Does this process have what root mode needs (CAP_SYS_ADMIN and CAP_NET_ADMIN in its user
/// namespace)? A user without them runs rootless.
pub fn privileged() -> bool {
    const CAP_NET_ADMIN: u32 = 12;
    const CAP_SYS_ADMIN: u32 = 21;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let has = |cap: u32| effective & (1 << cap) != 0;
    has(CAP_SYS_ADMIN) && has(CAP_NET_ADMIN)
}

/// Put the calling (single-threaded) daemon where it will run: nowhere new with privileges;
/// otherwise into the holder's namespaces, starting a holder when none is alive.
pub fn enter(dirs: &StateDir) -> Result<Mode> {
    if privileged() {
        return Ok(Mode::Root);
    }
    checks::tun_usable()?;
    let holder = match holder::find(dirs) {
        Some(pid) => pid,
        None => {
            let mapping = idmap::Mapping::for_current_user();
            let pid = holder::spawn(dirs, mapping)?;
            eprintln!(
                "tapnet: rootless: namespace holder {pid}, ID mapping {}",
                mapping.describe()
            );
            pid
        }
    };
    holder::join(holder)?;
    Ok(Mode::Rootless { holder })
}
