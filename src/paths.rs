//! Where a state dir keeps its files. One place so that daemon, client and `system reset` agree.

use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        StateDir { root: root.into() }
    }

    /// SPEC.md: `/run/tapnet` for root, `$XDG_RUNTIME_DIR/tapnet` otherwise.
    pub fn default_root() -> PathBuf {
        if nix::unistd::geteuid().is_root() {
            return PathBuf::from("/run/tapnet");
        }
        match std::env::var_os("XDG_RUNTIME_DIR") {
            Some(dir) => PathBuf::from(dir).join("tapnet"),
            None => std::env::temp_dir().join(format!("tapnet-{}", nix::unistd::geteuid())),
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
    /// Bind mounts of sandbox network namespaces, like `/run/netns` for `ip netns`.
    pub fn netns_dir(&self) -> PathBuf {
        self.root.join("netns")
    }
    /// Bind mounts of sandbox UTS namespaces (hostname).
    pub fn utsns_dir(&self) -> PathBuf {
        self.root.join("utsns")
    }
    /// Bind mounts of sandbox mount namespaces (their /etc files and /sys).
    pub fn mntns_dir(&self) -> PathBuf {
        self.root.join("mntns")
    }
    pub fn mntns_path(&self, sandbox: &str) -> PathBuf {
        self.mntns_dir().join(sandbox)
    }
    /// The files a sandbox sees as /etc/hosts, /etc/resolv.conf and /etc/hostname.
    pub fn etc_dir(&self, sandbox: &str) -> PathBuf {
        self.root.join("etc").join(sandbox)
    }
    pub fn netns_path(&self, sandbox: &str) -> PathBuf {
        self.netns_dir().join(sandbox)
    }
    pub fn utsns_path(&self, sandbox: &str) -> PathBuf {
        self.utsns_dir().join(sandbox)
    }
}
