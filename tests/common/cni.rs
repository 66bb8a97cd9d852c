//! What the CNI tests share: a network namespace of the test's own, and one run of the
//! `tapnet-cni` plugin as a runtime makes it (the CNI environment, the config on stdin).

use std::io::Write;
use std::process::{Command, Output, Stdio};

/// A named network namespace of the test (`ip netns`), deleted on drop, on success and failure.
pub struct Netns(String);

impl Netns {
    /// `tn-TAG-PID`: unique across test binaries running at once.
    pub fn new(tag: &str) -> Netns {
        let name = format!("tn-{tag}-{}", std::process::id());
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ip netns add {name}");
        Netns(name)
    }

    /// The path a runtime hands the plugin as `CNI_NETNS`.
    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.0)
    }

    pub fn exec(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.0])
            .args(args)
            .output()
            .expect("ip netns exec")
    }

    pub fn text(&self, args: &[&str]) -> String {
        String::from_utf8_lossy(&self.exec(args).stdout).into_owned()
    }

    /// The names of the namespace's links.
    pub fn links(&self) -> Vec<String> {
        self.text(&["ip", "-o", "link"])
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .collect()
    }

    pub fn mac(&self, dev: &str) -> String {
        let out = self.text(&["cat", &format!("/sys/class/net/{dev}/address")]);
        assert!(!out.trim().is_empty(), "{dev} has a MAC in {}", self.0);
        out.trim().to_string()
    }

    pub fn ping(&self, ip: &str) -> bool {
        self.exec(&["ping", "-c", "1", "-W", "2", ip])
            .status
            .success()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// One plugin run: its exit code, its stdout as text, and that parsed as JSON (`Null` if not).
pub struct CniRun {
    pub code: i32,
    pub stdout: String,
    pub json: serde_json::Value,
}

/// Run `tapnet-cni` with CNI's environment and `conf` on stdin.
pub fn run_cni(command: &str, id: &str, netns: &str, ifname: &str, conf: &str) -> CniRun {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tapnet-cni"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TAPNET_NAT_ALLOW", "127.0.0.0/8")
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", ifname)
        .env("CNI_PATH", "/nonexistent")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run tapnet-cni");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(conf.as_bytes())
        .expect("write config");
    let out = child.wait_with_output().expect("wait tapnet-cni");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    CniRun {
        code: out.status.code().unwrap_or(-1),
        json: serde_json::from_str(stdout.trim()).unwrap_or(serde_json::Value::Null),
        stdout,
    }
}
