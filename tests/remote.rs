//! The remote driver against a real plugin process (tests/support/remote_plugin.py) on a unix
//! socket in the state dir's `plugins/`: what tapnet sends, and that a plugin that refuses,
//! hangs, answers garbage, is absent or is no network driver leaves tapnet's state as it was.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Tapnet;

/// A running example plugin; killed on drop.
struct Plugin {
    child: Child,
    log: PathBuf,
}

impl Plugin {
    fn start(t: &Tapnet, name: &str, flags: &[&str]) -> Plugin {
        // The daemon makes the state dir; the plugin's socket goes under it.
        t.ok(&["network", "ls"]);
        let dir = t.dir.join("plugins");
        std::fs::create_dir_all(&dir).expect("plugins dir");
        let log = t.dir.join(format!("{name}.calls"));
        let _ = std::fs::remove_file(&log);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/remote_plugin.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(dir.join(format!("{name}.sock")))
            .arg(&log)
            .args(flags)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start remote_plugin.py");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("plugin stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("plugin ready");
        assert_eq!(line.trim(), "ready");
        Plugin { child, log }
    }

    /// The calls the plugin received: (call, body).
    fn calls(&self) -> Vec<(String, serde_json::Value)> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("log line");
                (
                    v["call"].as_str().unwrap_or_default().to_string(),
                    v["body"].clone(),
                )
            })
            .collect()
    }

    fn call_names(&self) -> Vec<String> {
        self.calls().into_iter().map(|(c, _)| c).collect()
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The networks of state.json, as text: compared before and after a failed request.
fn networks(t: &Tapnet) -> String {
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(t.dir.join("state.json")).expect("state.json"),
    )
    .expect("state json");
    state["networks"].to_string()
}

#[test]
fn a_remote_network_is_created_and_removed_through_its_plugin() {
    let t = Tapnet::new("remote-ok");
    let plugin = Plugin::start(&t, "rp", &[]);
    let out = t.ok(&[
        "network",
        "create",
        "r",
        "--driver",
        "remote:rp",
        "--subnet",
        "10.240.0.0/24",
        "--opt",
        "color=blue",
    ]);
    let id = out.trim().to_string();
    let view = t.json(&["network", "inspect", "r"]);
    assert_eq!(view["driver"], "remote", "{view}");
    assert_eq!(view["id"], id.as_str());
    assert_eq!(
        plugin.call_names(),
        [
            "Plugin.Activate",
            "NetworkDriver.GetCapabilities",
            "NetworkDriver.CreateNetwork"
        ]
    );
    let (_, create) = &plugin.calls()[2];
    assert_eq!(create["NetworkID"], id.as_str(), "{create}");
    assert_eq!(create["IPv4Data"][0]["Pool"], "10.240.0.0/24", "{create}");
    assert_eq!(
        create["IPv4Data"][0]["Gateway"], "10.240.0.1/24",
        "{create}"
    );
    assert_eq!(
        create["Options"]["com.docker.network.generic"]["color"], "blue",
        "{create}"
    );
    // Endpoints are refused for now, with the reason, and change nothing.
    let before = networks(&t);
    let err = t.fails(&["sandbox", "create", "s", "--net", "r"]);
    assert!(err.contains("not implemented yet"), "{err}");
    assert_eq!(networks(&t), before);
    assert!(
        t.json(&["sandbox", "ls"])
            .as_array()
            .is_some_and(|a| a.is_empty())
    );
    // Removal tells the plugin, with the same id.
    t.ok(&["network", "rm", "r"]);
    let calls = plugin.calls();
    let (call, body) = calls.last().expect("a call");
    assert_eq!(call, "NetworkDriver.DeleteNetwork");
    assert_eq!(body["NetworkID"], id.as_str());
    assert!(!t.network_names().contains(&"r".to_string()));
}

/// A create that the plugin spoils with `flags` fails with a message containing `expect` and
/// leaves the networks as they were; returns how long it took.
fn create_fails(tag: &str, flags: &[&str], expect: &str) -> Duration {
    let t = Tapnet::new(tag);
    let plugin = Plugin::start(&t, "rp", flags);
    let before = networks(&t);
    let started = Instant::now();
    let err = t.fails(&[
        "network",
        "create",
        "r",
        "--driver",
        "remote:rp",
        "--subnet",
        "10.241.0.0/24",
    ]);
    let took = started.elapsed();
    assert!(err.contains(expect), "{flags:?}: {err}");
    assert!(
        err.contains("plugin rp"),
        "the error names the plugin: {err}"
    );
    assert_eq!(networks(&t), before, "{flags:?} left a network behind");
    // The daemon goes on: a bridge network can still be made.
    t.ok(&["network", "create", "fine"]);
    drop(plugin);
    took
}

#[test]
fn a_plugin_that_refuses_any_step_leaves_nothing() {
    for call in [
        "Plugin.Activate",
        "NetworkDriver.GetCapabilities",
        "NetworkDriver.CreateNetwork",
    ] {
        create_fails("remote-err", &["--fail", call], &format!("refused {call}"));
    }
}

#[test]
fn a_plugin_that_hangs_times_out_and_leaves_nothing() {
    let took = create_fails(
        "remote-hang",
        &["--hang", "NetworkDriver.CreateNetwork"],
        "timed out",
    );
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(15),
        "the 5 s deadline, not the CLI's: {took:?}"
    );
}

#[test]
fn a_plugin_that_answers_garbage_leaves_nothing() {
    create_fails(
        "remote-garbage",
        &["--garbage", "NetworkDriver.CreateNetwork"],
        "malformed",
    );
    create_fails(
        "remote-garbage2",
        &["--garbage", "Plugin.Activate"],
        "malformed",
    );
}

#[test]
fn an_absent_plugin_or_one_that_is_no_network_driver_is_refused() {
    let t = Tapnet::new("remote-absent");
    let before = {
        t.ok(&["network", "ls"]);
        networks(&t)
    };
    let err = t.fails(&["network", "create", "r", "--driver", "remote:nosuch"]);
    assert!(err.contains("no such plugin: nosuch"), "{err}");
    assert_eq!(networks(&t), before);
    drop(t);
    create_fails("remote-volume", &["--not-network"], "not NetworkDriver");
}

#[test]
fn a_plugin_that_refuses_deletion_keeps_the_network() {
    let t = Tapnet::new("remote-del");
    let plugin = Plugin::start(&t, "rp", &["--fail", "NetworkDriver.DeleteNetwork"]);
    t.ok(&[
        "network",
        "create",
        "r",
        "--driver",
        "remote:rp",
        "--subnet",
        "10.242.0.0/24",
    ]);
    let err = t.fails(&["network", "rm", "r"]);
    assert!(err.contains("refused NetworkDriver.DeleteNetwork"), "{err}");
    assert!(t.network_names().contains(&"r".to_string()));
    // Positive control: once the plugin agrees, the network goes.
    drop(plugin);
    let _plugin = Plugin::start(&t, "rp", &[]);
    // The new plugin process does not know the network: it refuses, and tapnet keeps it.
    let err = t.fails(&["network", "rm", "r"]);
    assert!(err.contains("no such network"), "{err}");
    assert!(t.network_names().contains(&"r".to_string()));
}
