//! Where a state dir keeps its files. One place so that daemon, client and `system reset` agree.
//! Every path is derived from the state dir and a validated name; none is read from state.json.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The state dir's directory of sandboxes' /etc files (`etc/NAME/hosts`, ...).
pub const ETC_DIR: &str = "etc";

#[derive(Clone, Debug)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// A state dir at `root`, made absolute against the working directory, so that a relative
    /// `--state-dir` names the same place from every directory and in every namespace.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        let root = std::path::absolute(&root).unwrap_or(root);
        StateDir { root }
    }

    /// `/run/tapnet` for root, `$XDG_RUNTIME_DIR/tapnet` otherwise (rootless mode).
    pub fn default_root() -> Result<PathBuf> {
        if nix::unistd::geteuid().is_root() {
            return Ok(PathBuf::from("/run/tapnet"));
        }
        match std::env::var_os("XDG_RUNTIME_DIR") {
            Some(dir) if !dir.is_empty() => Ok(PathBuf::from(dir).join("tapnet")),
            _ => Err(Error::invalid(
                "XDG_RUNTIME_DIR is not set: rootless tapnet keeps its state in \
                 $XDG_RUNTIME_DIR/tapnet; log in through a session that sets it (or export \
                 XDG_RUNTIME_DIR=/run/user/$(id -u) where that exists), or pass --state-dir DIR",
            )),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn socket(&self) -> PathBuf {
        self.root.join("tapnet.sock")
    }
    pub fn pid_file(&self) -> PathBuf {
        self.root.join("tapnet.pid")
    }
    pub fn lock_file(&self) -> PathBuf {
        self.root.join("tapnet.lock")
    }
    pub fn log_file(&self) -> PathBuf {
        self.root.join("daemon.log")
    }
    pub fn state_file(&self) -> PathBuf {
        self.root.join("state.json")
    }
    /// PID of the process that holds a rootless daemon's user and mount namespaces.
    pub fn holder_pid_file(&self) -> PathBuf {
        self.root.join("nsholder.pid")
    }
    /// The fd keeper's socket and PID (`keeper`): it holds the TAPs' queue fds across a
    /// daemon's death.
    pub fn keeper_socket(&self) -> PathBuf {
        self.root.join("fdkeeper.sock")
    }
    pub fn keeper_pid_file(&self) -> PathBuf {
        self.root.join("fdkeeper.pid")
    }
    /// Bind mounts of sandbox network namespaces, like `/run/netns` for `ip netns`.
    pub fn netns_dir(&self) -> PathBuf {
        self.root.join("netns")
    }
    /// Bind mounts of sandbox UTS namespaces (hostname).
    pub fn utsns_dir(&self) -> PathBuf {
        self.root.join("utsns")
    }
    /// Where releases before 0.2 pinned sandbox mount namespaces; cleaned up on start.
    pub fn legacy_mntns_dir(&self) -> PathBuf {
        self.root.join("mntns")
    }
    /// The directories that hold namespace pins (each a mount point of its own).
    pub fn pin_dirs(&self) -> [PathBuf; 2] {
        [self.netns_dir(), self.utsns_dir()]
    }
    /// The files a sandbox sees as /etc/hosts, /etc/resolv.conf and /etc/hostname.
    pub fn etc_dir(&self, sandbox: &str) -> PathBuf {
        self.etc_root().join(sandbox)
    }
    pub fn etc_root(&self) -> PathBuf {
        self.root.join(ETC_DIR)
    }
    pub fn netns_path(&self, sandbox: &str) -> PathBuf {
        self.netns_dir().join(sandbox)
    }
    pub fn utsns_path(&self, sandbox: &str) -> PathBuf {
        self.utsns_dir().join(sandbox)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_state_dirs_become_absolute() {
        let dirs = StateDir::new("rel/state");
        assert!(dirs.root().is_absolute(), "{}", dirs.root().display());
        assert!(dirs.root().ends_with("rel/state"));
        assert_eq!(dirs.socket(), dirs.root().join("tapnet.sock"));
    }
}
