//! One `podman run` with podman's CNI backend (podman 4.3: containers.conf
//! `network_backend = "cni"`) on a tapnet network through `tapnet-cni`: private storage, runroot,
//! network config dir and containers.conf; a busybox image imported from a tarball made of
//! `/bin/busybox` (no registry); the container reaches a tapnet sandbox on the same network, and
//! after `--rm` the attachment is gone (the network can be removed). Needs `podman` and
//! `busybox-static` (scripts/test.sh installs them); without them the test fails, unless
//! `TAPNET_TEST_SKIP` names `podman` (see tests/common/skip.rs).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::Tapnet;
use common::skip::need;

/// What podman makes whatever its other dirs are: libcni's result cache and a blob info cache.
const LEFTOVERS: &[&str] = &["/var/lib/cni", "/var/lib/containers"];

/// Podman with every directory of its own under `dir`; removes its storage and the
/// `LEFTOVERS` the test made on drop.
struct Podman {
    dir: PathBuf,
    made: Vec<PathBuf>,
}

impl Podman {
    fn new(dir: PathBuf, plugins: &Path) -> Podman {
        std::fs::create_dir_all(dir.join("net.d")).expect("podman dirs");
        let conf = format!(
            "[network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{}\"]\n\
             network_config_dir = \"{}\"\n[engine]\ncgroup_manager = \"cgroupfs\"\n\
             events_logger = \"file\"\n",
            plugins.display(),
            dir.join("net.d").display()
        );
        std::fs::write(dir.join("containers.conf"), conf).expect("containers.conf");
        Podman {
            dir,
            made: LEFTOVERS
                .iter()
                .map(PathBuf::from)
                .filter(|p| !p.exists())
                .collect(),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("podman")
            .env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .arg("--root")
            .arg(self.dir.join("root"))
            .arg("--runroot")
            .arg(self.dir.join("runroot"))
            .arg("--tmpdir")
            .arg(self.dir.join("tmp"))
            .args(["--storage-driver", "vfs"])
            .args(["--cgroup-manager", "cgroupfs", "--events-backend", "file"])
            // crun refuses cgroups in hybrid mode (v1 controllers beside a v2 mount), as some
            // machines boot; runc takes hybrid, v1 and v2 alike.
            .args(["--runtime", "runc"])
            .args(args)
            .output()
            .expect("run podman")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "podman {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A busybox image from the static busybox binary: no registry needed.
    fn import_busybox(&self, image: &str) {
        let tar = common::busybox_tarball(&self.dir);
        self.ok(&["import", &tar.display().to_string(), image]);
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.run(&["rm", "-af"]);
        let _ = self.run(&["rmi", "-af"]);
        let _ = std::fs::remove_dir_all(&self.dir);
        for path in &self.made {
            let _ = std::fs::remove_dir_all(path);
        }
    }
}

#[test]
fn podman_runs_a_container_on_a_tapnet_network_through_cni() {
    if !common::skip::require(
        "podman",
        &[
            need("podman", "podman"),
            need("runc", "runc"),
            need("/bin/busybox", "busybox-static"),
        ],
    ) {
        return;
    }
    let t = Tapnet::new("podman");
    t.ok(&["network", "create", "tnpod", "--subnet", "10.249.0.0/24"]);
    t.ok(&["sandbox", "create", "s", "--net", "tnpod"]);
    let plugins = Path::new(env!("CARGO_BIN_EXE_tapnet-cni"))
        .parent()
        .expect("plugin dir");
    let podman = Podman::new(
        std::env::temp_dir().join(format!("tapnet-podman-{}", std::process::id())),
        plugins,
    );
    let conflist = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "tnpod",
        "plugins": [{
            "type": "tapnet-cni",
            "network": "tnpod",
            "stateDir": t.dir.display().to_string(),
        }],
    });
    std::fs::write(
        podman.dir.join("net.d/tnpod.conflist"),
        conflist.to_string(),
    )
    .expect("conflist");
    podman.import_busybox("localhost/tapnet-busybox:test");
    // Podman's default rlimits would raise limits, which needs CAP_SYS_RESOURCE; lower ones
    // work everywhere.
    let out = podman.ok(&[
        "run",
        "--rm",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
        "--network",
        "tnpod",
        "localhost/tapnet-busybox:test",
        "sh",
        "-c",
        "ip -4 addr show eth0; ip route; ping -c 1 -W 2 10.249.0.2",
    ]);
    assert!(out.contains("inet 10.249.0.3/24"), "{out}");
    assert!(out.contains("default via 10.249.0.1"), "{out}");
    assert!(
        out.contains("1 packets received"),
        "the container reaches sandbox s: {out}"
    );
    // `--rm` ran CNI DEL: no attachment is left, so the network goes once s is removed.
    t.ok(&["sandbox", "rm", "s"]);
    t.ok(&["network", "rm", "tnpod"]);
}
