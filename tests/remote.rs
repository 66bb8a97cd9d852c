//! The remote driver against a real plugin process (tests/support/remote_plugin.py) on a unix
//! socket in the state dir's `plugins/`: what tapnet sends, two sandboxes passing traffic over
//! the plugin's links, and that a plugin that refuses, hangs, answers garbage, is absent or is no
//! network driver leaves tapnet's state as it was.

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

    /// How many times the plugin was called at `call` so far.
    fn times(&self, call: &str) -> usize {
        self.call_names().iter().filter(|c| *c == call).count()
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The networks of the committed state, as text: compared before and after a failed request.
fn networks(t: &Tapnet) -> String {
    let state: serde_json::Value = serde_json::from_str(&t.exported_state()).expect("state json");
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
    // Two sandboxes on it: the plugin's links, moved in by tapnet, carry their traffic.
    t.ok(&["sandbox", "create", "a", "--net", "r"]);
    t.ok(&["sandbox", "create", "b", "--net", "r"]);
    let addr = t.exec_ok("a", &["ip", "-o", "-4", "addr", "show", "eth0"]);
    assert!(addr.contains("10.240.0.2/24"), "{addr}");
    let link = t.exec_ok("a", &["ip", "-o", "link", "show", "eth0"]);
    assert!(link.contains("UP"), "{link}");
    assert!(
        t.ping("a", "10.240.0.3"),
        "a reaches b through the plugin's links"
    );
    // The MAC the plugin chose at CreateEndpoint is the endpoint's, on the link and in the
    // model (tapnet planned 02:42:...); inspect shows the plugin's EndpointOperInfo.
    let view = t.json(&["sandbox", "inspect", "a"]);
    let mac = view["interfaces"][0]["mac"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(mac.starts_with("02:70:6c:00:00:"), "{view}");
    assert!(link.contains(&mac), "{link} has {mac}");
    let tap = view["interfaces"][0]["plugin_info"]["tap"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(tap.starts_with("rp"), "{view}");
    assert_eq!(
        view["interfaces"][0]["plugin_info"]["joined"], true,
        "{view}"
    );
    let table = t.ok(&["sandbox", "inspect", "a", "--format", "table"]);
    assert!(table.contains(&format!("tap={tap}")), "{table}");
    assert!(table.contains(&mac), "{table}");
    let net = t.json(&["network", "inspect", "r"]);
    let eps = net["endpoints"].as_array().cloned().unwrap_or_default();
    assert!(
        eps.iter()
            .any(|e| e["mac"] == mac.as_str() && e["plugin_info"]["tap"] == tap.as_str()),
        "{net}"
    );
    let table = t.ok(&["network", "inspect", "r", "--format", "table"]);
    assert!(table.contains(&format!("tap={tap}")), "{table}");
    // A bridge network's endpoint has no plugin info (the positive control is above).
    t.ok(&["sandbox", "create", "plain"]);
    let view = t.json(&["sandbox", "inspect", "plain"]);
    assert!(view["interfaces"][0].get("plugin_info").is_none(), "{view}");
    t.ok(&["sandbox", "rm", "plain"]);
    let calls = plugin.call_names();
    for call in [
        "NetworkDriver.CreateEndpoint",
        "NetworkDriver.Join",
        "NetworkDriver.ProgramExternalConnectivity",
    ] {
        assert_eq!(plugin.times(call), 2, "{calls:?}");
    }
    let (_, endpoint) = plugin
        .calls()
        .into_iter()
        .find(|(c, _)| c == "NetworkDriver.CreateEndpoint")
        .expect("CreateEndpoint");
    assert_eq!(
        endpoint["Interface"]["Address"], "10.240.0.2/24",
        "{endpoint}"
    );
    assert_eq!(endpoint["NetworkID"], id.as_str(), "{endpoint}");
    // A network with endpoints stays.
    t.fails(&["network", "rm", "r"]);
    t.ok(&["sandbox", "rm", "a"]);
    t.ok(&["sandbox", "rm", "b"]);
    let calls = plugin.call_names();
    for call in [
        "NetworkDriver.RevokeExternalConnectivity",
        "NetworkDriver.Leave",
        "NetworkDriver.DeleteEndpoint",
    ] {
        assert_eq!(plugin.times(call), 2, "{calls:?}");
    }
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

/// A sandbox create that the plugin spoils with `flags` fails with `expect`, leaves the state
/// as it was and no namespace; when the plugin had made the endpoint, its last call is
/// DeleteEndpoint.
fn sandbox_fails(tag: &str, flags: &[&str], expect: &str) {
    let t = Tapnet::new(tag);
    let plugin = Plugin::start(&t, "rp", flags);
    t.ok(&[
        "network",
        "create",
        "r",
        "--driver",
        "remote:rp",
        "--subnet",
        "10.244.0.0/24",
    ]);
    let before = t.exported_state();
    let err = t.fails(&["sandbox", "create", "s", "--net", "r"]);
    assert!(err.contains(expect), "{flags:?}: {err}");
    assert_eq!(t.exported_state(), before, "{flags:?} changed the state");
    assert!(!t.dir.join("netns/s").exists(), "no namespace pin left");
    let calls = plugin.call_names();
    if calls.iter().any(|c| c == "NetworkDriver.CreateEndpoint") && !err.contains("CreateEndpoint")
    {
        assert_eq!(
            calls.last().map(String::as_str),
            Some("NetworkDriver.DeleteEndpoint"),
            "{calls:?}"
        );
    }
}

#[test]
fn a_plugin_that_fails_an_endpoint_step_leaves_nothing() {
    sandbox_fails(
        "remote-ep-err",
        &["--fail", "NetworkDriver.CreateEndpoint"],
        "refused NetworkDriver.CreateEndpoint",
    );
    sandbox_fails(
        "remote-join-err",
        &["--fail", "NetworkDriver.Join"],
        "refused NetworkDriver.Join",
    );
    sandbox_fails(
        "remote-program-err",
        &["--fail", "NetworkDriver.ProgramExternalConnectivity"],
        "refused NetworkDriver.ProgramExternalConnectivity",
    );
    sandbox_fails(
        "remote-join-garbage",
        &["--garbage", "NetworkDriver.Join"],
        "malformed",
    );
}

#[test]
fn a_plugin_that_hangs_at_join_times_out_and_leaves_nothing() {
    sandbox_fails(
        "remote-join-hang",
        &["--hang", "NetworkDriver.Join"],
        "timed out",
    );
}

/// Wait until the plugin has received `call`.
fn wait_for_call(plugin: &Plugin, call: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !plugin.call_names().iter().any(|c| c == call) {
        assert!(Instant::now() < deadline, "the plugin never got {call}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// While a request waits for a hung plugin, `stats` answers at once (the plugin is called
/// without the controller's lock); returns the error of the hung request.
fn hung_request_leaves_the_daemon_free(
    t: &Tapnet,
    plugin: &Plugin,
    call: &str,
    request: &[&str],
    meanwhile: impl FnOnce(),
) -> String {
    std::thread::scope(|s| {
        let hung = s.spawn(|| t.run(request));
        wait_for_call(plugin, call);
        let started = Instant::now();
        t.ok(&["stats"]);
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(1),
            "stats took {took:?} while {call} hangs"
        );
        meanwhile();
        let out = hung.join().expect("hung request thread");
        assert_eq!(out.status.code(), Some(1), "{request:?}: {out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    })
}

#[test]
fn a_hung_plugin_holds_up_only_the_request_that_called_it() {
    let t = Tapnet::new("remote-unlocked");
    // Network create: the name and subnet are reserved while the plugin is asked.
    let plugin = Plugin::start(&t, "rp", &["--hang", "NetworkDriver.CreateNetwork"]);
    let before = networks(&t);
    let create = [
        "network",
        "create",
        "r",
        "--driver",
        "remote:rp",
        "--subnet",
        "10.243.0.0/24",
    ];
    let err = hung_request_leaves_the_daemon_free(
        &t,
        &plugin,
        "NetworkDriver.CreateNetwork",
        &create,
        || {
            assert!(!t.network_names().contains(&"r".to_string()));
            let err = t.fails(&create);
            assert!(err.contains("exists"), "the name is taken: {err}");
            let err = t.fails(&["network", "create", "other", "--subnet", "10.243.0.0/24"]);
            assert!(err.contains("10.243.0.0/24"), "the subnet is taken: {err}");
        },
    );
    assert!(err.contains("timed out"), "{err}");
    assert_eq!(networks(&t), before, "the failed create left a network");
    drop(plugin);

    // Sandbox create: the plugin hangs at Join.
    let plugin = Plugin::start(&t, "rp", &["--hang", "NetworkDriver.Join"]);
    t.ok(&create);
    let state = t.exported_state();
    let err = hung_request_leaves_the_daemon_free(
        &t,
        &plugin,
        "NetworkDriver.Join",
        &["sandbox", "create", "s", "--net", "r"],
        || {
            let err = t.fails(&["sandbox", "create", "s"]);
            assert!(err.contains("exists"), "the name is taken: {err}");
            let err = t.fails(&["network", "rm", "r"]);
            assert!(err.contains("s (being created)"), "{err}");
        },
    );
    assert!(err.contains("timed out"), "{err}");
    assert_eq!(t.exported_state(), state);
    assert!(!t.dir.join("netns/s").exists(), "no namespace pin left");
    assert_eq!(
        plugin.call_names().last().map(String::as_str),
        Some("NetworkDriver.DeleteEndpoint")
    );
    drop(plugin);

    // Network remove: the plugin hangs at DeleteNetwork; the network keeps its name and no
    // sandbox may join it meanwhile.
    let plugin = Plugin::start(&t, "rp", &["--hang", "NetworkDriver.DeleteNetwork"]);
    let err = hung_request_leaves_the_daemon_free(
        &t,
        &plugin,
        "NetworkDriver.DeleteNetwork",
        &["network", "rm", "r"],
        || {
            let err = t.fails(&["sandbox", "create", "x", "--net", "r"]);
            assert!(err.contains("network r is being removed"), "{err}");
            let err = t.fails(&["network", "rm", "r"]);
            assert!(err.contains("being removed already"), "{err}");
        },
    );
    assert!(err.contains("timed out"), "{err}");
    assert!(t.network_names().contains(&"r".to_string()));
    drop(plugin);
    // Positive control: with a plugin that answers, a network goes (a new plugin process
    // does not know `r`, so a second network is used).
    let _plugin = Plugin::start(&t, "rp", &[]);
    t.ok(&[
        "network",
        "create",
        "r2",
        "--driver",
        "remote:rp",
        "--subnet",
        "10.243.1.0/24",
    ]);
    t.ok(&["network", "rm", "r2"]);
    assert!(!t.network_names().contains(&"r2".to_string()));
}

#[test]
fn a_running_sandbox_connects_to_and_disconnects_from_a_remote_network() {
    let t = Tapnet::new("remote-connect");
    let plugin = Plugin::start(&t, "rp", &[]);
    t.ok(&[
        "network",
        "create",
        "r",
        "--driver",
        "remote:rp",
        "--subnet",
        "10.246.0.0/24",
    ]);
    t.ok(&["sandbox", "create", "b", "--net", "r"]);
    t.ok(&["sandbox", "create", "a"]);
    // Live connect: CreateEndpoint and Join, the plugin's link moved in as eth1.
    t.ok(&["network", "connect", "r", "a"]);
    let addr = t.exec_ok("a", &["ip", "-o", "-4", "addr", "show", "eth1"]);
    assert!(addr.contains("10.246.0.3/24"), "{addr}");
    assert!(
        t.ping("a", "10.246.0.2"),
        "a reaches b over the remote network"
    );
    let view = t.json(&["sandbox", "inspect", "a"]);
    assert_eq!(view["interfaces"][1]["network"], "r", "{view}");
    assert!(
        view["interfaces"][1]["mac"]
            .as_str()
            .is_some_and(|m| m.starts_with("02:70:6c:")),
        "the plugin's MAC: {view}"
    );
    let count = |call: &str| plugin.times(call);
    assert_eq!(count("NetworkDriver.Join"), 2);
    // Live disconnect: Leave and DeleteEndpoint; the link and the traffic are gone.
    t.ok(&["network", "disconnect", "r", "a"]);
    assert_eq!(count("NetworkDriver.Leave"), 1);
    assert_eq!(count("NetworkDriver.DeleteEndpoint"), 1);
    // The plugin closes its TAP at Leave; the link goes once the plugin's relay lets go.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let links = t.exec_ok("a", &["ip", "-o", "link"]);
        if !links.contains("eth1") {
            break;
        }
        assert!(Instant::now() < deadline, "eth1 stays: {links}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!t.ping("a", "10.246.0.2"), "a no longer reaches b");
    let view = t.json(&["sandbox", "inspect", "a"]);
    assert_eq!(
        view["interfaces"].as_array().map(Vec::len),
        Some(1),
        "{view}"
    );
    // Connecting again works (the positive control of the failure below).
    t.ok(&["network", "connect", "r", "a"]);
    assert!(t.ping("a", "10.246.0.2"), "a reaches b again");
    t.ok(&["network", "disconnect", "r", "a"]);

    // A plugin that refuses Join: the connect fails, the plugin's endpoint is deleted, the
    // sandbox and the state are as before.
    let refusing = Plugin::start(&t, "rp2", &["--fail", "NetworkDriver.Join"]);
    t.ok(&[
        "network",
        "create",
        "r2",
        "--driver",
        "remote:rp2",
        "--subnet",
        "10.246.1.0/24",
    ]);
    let before = t.exported_state();
    let err = t.fails(&["network", "connect", "r2", "a"]);
    assert!(err.contains("refused NetworkDriver.Join"), "{err}");
    assert_eq!(t.exported_state(), before);
    assert_eq!(
        refusing.call_names().last().map(String::as_str),
        Some("NetworkDriver.DeleteEndpoint")
    );
    let links = t.exec_ok("a", &["ip", "-o", "link"]);
    assert!(!links.contains("eth1"), "{links}");
    assert!(t.ping("a", "172.17.0.1"), "a keeps its bridge network");
    t.ok(&["sandbox", "rm", "a"]);
    t.ok(&["sandbox", "rm", "b"]);
    t.ok(&["network", "rm", "r"]);
    t.ok(&["network", "rm", "r2"]);
}
