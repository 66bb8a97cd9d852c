//! `tapnet-cni` driven as a CNI runtime drives it: the `CNI_*` environment, the configuration on
//! stdin. ADD into two namespaces this test makes, traffic between them (also after a daemon
//! restart), CHECK, DEL, DEL again, VERSION, and errors with CNI's codes. Then the same through
//! libcni itself, IPv4 and dual-stack: `tests/support/cnitool/main.go` (upstream's cnitool, reduced) built offline
//! against Debian's libcni source; without Go or that source the libcni test fails, unless
//! `TAPNET_TEST_SKIP` names `libcni` (see tests/common/skip.rs).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::Tapnet;
use common::skip::need;
use nix::sys::signal::Signal;

use common::cni::Netns;

/// Run the plugin on eth0: (stdout JSON, exit code).
fn cni(command: &str, id: &str, netns: &str, conf: &str) -> (serde_json::Value, i32) {
    let run = common::cni::run_cni(command, id, netns, "eth0", conf);
    (run.json, run.code)
}

#[test]
fn add_check_del_del_into_two_namespaces() {
    let t = Tapnet::new("cni");
    // The daemon of this state dir, with the test's NAT policy and a metrics endpoint.
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .to_string();
    let started = t
        .command(&["network", "ls"])
        .env("TAPNET_METRICS", &metrics)
        .output()
        .expect("run tapnet");
    assert!(started.status.success(), "{started:?}");
    let conf = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "cninet",
        "type": "tapnet-cni",
        "subnet": "10.245.0.0/24",
        "stateDir": t.dir.display().to_string(),
    })
    .to_string();
    let a = Netns::new("a");
    let b = Netns::new("b");
    let (ra, code) = cni("ADD", "ctr-a", &a.path(), &conf);
    assert_eq!(code, 0, "{ra}");
    assert_eq!(ra["ips"][0]["address"], "10.245.0.2/24", "{ra}");
    assert_eq!(ra["ips"][0]["gateway"], "10.245.0.1", "{ra}");
    assert_eq!(ra["interfaces"][0]["name"], "eth0", "{ra}");
    assert_eq!(ra["interfaces"][0]["sandbox"], a.path().as_str(), "{ra}");
    let (rb, code) = cni("ADD", "ctr-b", &b.path(), &conf);
    assert_eq!(code, 0, "{rb}");
    assert_eq!(rb["ips"][0]["address"], "10.245.0.3/24", "{rb}");
    // The network was made with the config's subnet.
    let view = t.json(&["network", "inspect", "cninet"]);
    assert_eq!(view["subnet"], "10.245.0.0/24");
    // The attachments are its endpoints: in inspect (container id, interface, namespace, MAC,
    // address), in ls's count and in the metrics.
    let eps = view["endpoints"].as_array().expect("endpoints");
    assert_eq!(eps.len(), 2, "{view}");
    let ep = eps
        .iter()
        .find(|e| e["container_id"] == "ctr-a")
        .unwrap_or_else(|| panic!("ctr-a missing from {view}"));
    assert_eq!(ep["sandbox"], "cni:ctr-a");
    assert_eq!(ep["kind"], "cni");
    assert_eq!(ep["interface"], "eth0");
    assert_eq!(ep["netns"], a.path().as_str());
    assert_eq!(ep["ipv4"], "10.245.0.2/24");
    assert_eq!(ep["mac"], a.mac("eth0").as_str());
    let table = t.ok(&["network", "inspect", "cninet", "--format", "table"]);
    assert!(table.contains("cni:ctr-b"), "{table}");
    assert!(
        table.contains("NETNS") && table.contains(&b.path()),
        "{table}"
    );
    let listed = t.json(&["network", "ls"]);
    let row = listed
        .as_array()
        .and_then(|nets| nets.iter().find(|n| n["name"] == "cninet"))
        .unwrap_or_else(|| panic!("cninet missing from {listed}"));
    assert_eq!(row["endpoints"].as_array().map(Vec::len), Some(2), "{row}");
    let text = scrape(&metrics);
    assert!(
        text.contains("tapnet_network_endpoints{network=\"cninet\",kind=\"cni\"} 2\n"),
        "{text}"
    );
    // Traffic between the namespaces through tapnet's switch, and to the gateway.
    let ping = a.exec(&["ping", "-c", "1", "-W", "2", "10.245.0.3"]);
    assert!(ping.status.success(), "a reaches b: {ping:?}");
    let ping = b.exec(&["ping", "-c", "1", "-W", "2", "10.245.0.1"]);
    assert!(ping.status.success(), "b reaches the gateway: {ping:?}");
    let route = String::from_utf8_lossy(&a.exec(&["ip", "route"]).stdout).to_string();
    assert!(route.contains("default via 10.245.0.1"), "{route}");
    // A restarted daemon opens the TAPs again in the namespaces, which still exist.
    t.stop_daemon(Signal::SIGTERM);
    t.ok(&["network", "ls"]);
    let ping = a.exec(&["ping", "-c", "1", "-W", "2", "10.245.0.3"]);
    assert!(
        ping.status.success(),
        "a reaches b after a restart: {ping:?}"
    );
    // CHECK passes; the network cannot be removed while attached.
    let (r, code) = cni("CHECK", "ctr-a", &a.path(), &conf);
    assert_eq!(code, 0, "{r}");
    t.fails(&["network", "rm", "cninet"]);
    // DEL, then DEL again: both succeed; the link is gone and traffic stops.
    let (r, code) = cni("DEL", "ctr-a", &a.path(), &conf);
    assert_eq!(code, 0, "{r}");
    let (r, code) = cni("DEL", "ctr-a", &a.path(), &conf);
    assert_eq!(code, 0, "DEL is idempotent: {r}");
    let links = String::from_utf8_lossy(&a.exec(&["ip", "-o", "link"]).stdout).to_string();
    assert!(!links.contains("eth0"), "{links}");
    let ping = b.exec(&["ping", "-c", "1", "-W", "1", "10.245.0.2"]);
    assert!(!ping.status.success(), "a's address is gone");
    // CHECK of what is gone is an error with CNI's JSON.
    let (r, code) = cni("CHECK", "ctr-a", &a.path(), &conf);
    assert_eq!(code, 1);
    assert_eq!(r["code"], 100, "{r}");
    assert!(
        r["msg"].as_str().is_some_and(|m| m.contains("ctr-a")),
        "{r}"
    );
    let (r, code) = cni("DEL", "ctr-b", &b.path(), &conf);
    assert_eq!(code, 0, "{r}");
    t.ok(&["network", "rm", "cninet"]);
}

/// The daemon's metrics, as text.
fn scrape(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(addr).expect("connect to the metrics");
    conn.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .expect("timeout");
    conn.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
        .expect("ask for the metrics");
    let mut reply = String::new();
    conn.read_to_string(&mut reply).expect("read the metrics");
    reply
}

#[test]
fn version_and_errors_use_cni_codes() {
    let (v, code) = cni("VERSION", "", "", "");
    assert_eq!(code, 0);
    let versions = v["supportedVersions"].to_string();
    assert!(versions.contains("1.0.0"), "{v}");
    let (e, code) = cni("ADD", "x", "", r#"{"cniVersion":"1.0.0","name":"n"}"#);
    assert_eq!(code, 1);
    assert_eq!(e["code"], 4, "no CNI_NETNS: {e}");
    let (e, _) = cni(
        "ADD",
        "x",
        "/run/netns/x",
        r#"{"cniVersion":"0.1.0","name":"n"}"#,
    );
    assert_eq!(e["code"], 1, "{e}");
    let (e, _) = cni("ADD", "x", "/run/netns/x", "not json");
    assert_eq!(e["code"], 6, "{e}");
}

/// Where Debian's golang-github-appc-cni-dev puts libcni's source (a GOPATH).
const GOPATH: &str = "/usr/share/gocode";
/// libcni's package under `GOPATH`.
const LIBCNI_SOURCE: &str = "/usr/share/gocode/src/github.com/containernetworking/cni/libcni";

/// Build `tests/support/cnitool` with Go in GOPATH mode against Debian's libcni source, with no
/// network (`GOPROXY=off`), into this test's target tmp dir. `None` when Go or libcni's source
/// is missing and `TAPNET_TEST_SKIP` names `libcni` (the skip is said and logged); missing
/// otherwise, they fail the test.
fn cnitool() -> Option<PathBuf> {
    if !common::skip::require(
        "libcni",
        &[
            need("go", "golang-go"),
            need(LIBCNI_SOURCE, "golang-github-appc-cni-dev"),
        ],
    ) {
        return None;
    }
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cnitool");
    std::fs::create_dir_all(&out).expect("cnitool build dir");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/cnitool/main.go");
    let bin = out.join("cnitool");
    let built = Command::new("go")
        .args(["build", "-o"])
        .arg(&bin)
        .arg(&source)
        .env("GO111MODULE", "off")
        .env("GOPATH", GOPATH)
        .env("GOPROXY", "off")
        .env("GOFLAGS", "")
        .env("GOCACHE", out.join("cache"))
        .output()
        .expect("run go build");
    assert!(
        built.status.success(),
        "go build cnitool: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    Some(bin)
}

#[test]
fn libcni_adds_checks_and_deletes_through_tapnet_cni() {
    let Some(cnitool) = cnitool() else { return };
    let t = Tapnet::new("cni-libcni");
    t.ok(&["network", "ls"]);
    let confdir = t.dir.join("net.d");
    std::fs::create_dir_all(&confdir).expect("conf dir");
    let conflist = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "libcninet",
        "plugins": [{
            "type": "tapnet-cni",
            "network": "libcninet",
            "subnet": "10.247.0.0/24",
            "stateDir": t.dir.display().to_string(),
        }],
    });
    std::fs::write(confdir.join("10-libcni.conflist"), conflist.to_string()).expect("conflist");
    let plugins = Path::new(env!("CARGO_BIN_EXE_tapnet-cni"))
        .parent()
        .expect("plugin dir");
    let run = |command: &str, ns: &Netns| {
        Command::new(&cnitool)
            .args([command, "libcninet", &ns.path()])
            .env("NETCONFPATH", &confdir)
            .env("CNI_PATH", plugins)
            .env("CNI_CACHE_DIR", t.dir.join("cni-cache"))
            .output()
            .expect("run cnitool")
    };
    let a = Netns::new("la");
    let b = Netns::new("lb");
    for (ns, ip) in [(&a, "10.247.0.2/24"), (&b, "10.247.0.3/24")] {
        let out = run("add", ns);
        assert!(out.status.success(), "add: {out:?}");
        let result: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ADD result");
        assert_eq!(result["ips"][0]["address"], ip, "{result}");
        assert_eq!(result["interfaces"][0]["name"], "eth0", "{result}");
    }
    let ping = a.exec(&["ping", "-c", "1", "-W", "2", "10.247.0.3"]);
    assert!(ping.status.success(), "a reaches b: {ping:?}");
    let ping = b.exec(&["ping", "-c", "1", "-W", "2", "10.247.0.2"]);
    assert!(ping.status.success(), "b reaches a: {ping:?}");
    for ns in [&a, &b] {
        let out = run("check", ns);
        assert!(out.status.success(), "check: {out:?}");
    }
    // DEL, and DEL again (idempotent); a's link and address are gone.
    for _ in 0..2 {
        let out = run("del", &a);
        assert!(out.status.success(), "del: {out:?}");
    }
    let links = String::from_utf8_lossy(&a.exec(&["ip", "-o", "link"]).stdout).to_string();
    assert!(!links.contains("eth0"), "{links}");
    let ping = b.exec(&["ping", "-c", "1", "-W", "1", "10.247.0.2"]);
    assert!(!ping.status.success(), "a's address is gone");
    // CHECK of what is gone fails (it passed above).
    let out = run("check", &a);
    assert!(!out.status.success(), "check after del: {out:?}");
    let out = run("del", &b);
    assert!(out.status.success(), "del: {out:?}");
    t.ok(&["network", "rm", "libcninet"]);
}

/// An IPv6-only network made by the first ADD (a `subnet6` and no IPv4 subnet): each
/// attachment gets an IPv6 address, the `::/0` route and no IPv4 address; they reach each other
/// and the gateway over IPv6.
#[test]
fn ipv6_only_attachments() {
    let t = Tapnet::new("cni-only6");
    t.ok(&["network", "ls"]);
    let conf = serde_json::json!({
        "cniVersion": "1.1.0",
        "name": "only6",
        "type": "tapnet-cni",
        "subnet6": "fd00:cb2::/64",
        "stateDir": t.dir.display().to_string(),
    })
    .to_string();
    let a = Netns::new("o6a");
    let b = Netns::new("o6b");
    for (ns, id, ip6) in [
        (&a, "ctr-6a", "fd00:cb2::2/64"),
        (&b, "ctr-6b", "fd00:cb2::3/64"),
    ] {
        let (r, code) = cni("ADD", id, &ns.path(), &conf);
        assert_eq!(code, 0, "{r}");
        assert_eq!(r["ips"].as_array().map(Vec::len), Some(1), "{r}");
        assert_eq!(r["ips"][0]["address"], ip6, "{r}");
        assert_eq!(r["ips"][0]["gateway"], "fd00:cb2::1", "{r}");
        assert_eq!(r["routes"][0]["dst"], "::/0", "{r}");
        let v4 = ns.text(&["ip", "-4", "addr", "show", "dev", "eth0"]);
        assert!(!v4.contains("inet "), "no IPv4 address: {v4}");
        let route = ns.text(&["ip", "-6", "route"]);
        assert!(
            route.contains("default via fd00:cb2::1 dev eth0"),
            "{route}"
        );
    }
    let view = t.json(&["network", "inspect", "only6"]);
    assert_eq!(view["subnet6"], "fd00:cb2::/64", "{view}");
    assert!(view["subnet"].is_null(), "{view}");
    let ping = a.exec(&["ping", "-6", "-c", "1", "-W", "2", "fd00:cb2::3"]);
    assert!(ping.status.success(), "a reaches b over IPv6: {ping:?}");
    let ping = b.exec(&["ping", "-6", "-c", "1", "-W", "2", "fd00:cb2::1"]);
    assert!(ping.status.success(), "b reaches the gateway: {ping:?}");
    // Restored after a restart (the state file holds no IPv4 address for them).
    t.stop_daemon(Signal::SIGTERM);
    t.ok(&["network", "ls"]);
    let ping = a.exec(&["ping", "-6", "-c", "1", "-W", "2", "fd00:cb2::3"]);
    assert!(ping.status.success(), "after a restart: {ping:?}");
    let (r, code) = cni("CHECK", "ctr-6a", &a.path(), &conf);
    assert_eq!(code, 0, "{r}");
    for (ns, id) in [(&a, "ctr-6a"), (&b, "ctr-6b")] {
        let (r, code) = cni("DEL", id, &ns.path(), &conf);
        assert_eq!(code, 0, "{r}");
    }
    t.ok(&["network", "rm", "only6"]);
}

#[test]
fn libcni_dual_stack_from_ipam_ranges() {
    let Some(cnitool) = cnitool() else { return };
    let t = Tapnet::new("cni-libcni6");
    t.ok(&["network", "ls"]);
    let confdir = t.dir.join("net.d");
    std::fs::create_dir_all(&confdir).expect("conf dir");
    // host-local's form: one set of ranges per family.
    let conflist = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "libcninet6",
        "plugins": [{
            "type": "tapnet-cni",
            "network": "libcninet6",
            "stateDir": t.dir.display().to_string(),
            "ipam": {
                "type": "host-local",
                "ranges": [
                    [{"subnet": "10.248.0.0/24", "gateway": "10.248.0.1"}],
                    [{"subnet": "fd00:cb1::/64", "gateway": "fd00:cb1::1"}],
                ],
            },
        }],
    });
    std::fs::write(confdir.join("10-libcni6.conflist"), conflist.to_string()).expect("conflist");
    let plugins = Path::new(env!("CARGO_BIN_EXE_tapnet-cni"))
        .parent()
        .expect("plugin dir");
    let run = |command: &str, ns: &Netns| {
        Command::new(&cnitool)
            .args([command, "libcninet6", &ns.path()])
            .env("NETCONFPATH", &confdir)
            .env("CNI_PATH", plugins)
            .env("CNI_CACHE_DIR", t.dir.join("cni-cache"))
            .output()
            .expect("run cnitool")
    };
    let a = Netns::new("l6a");
    let b = Netns::new("l6b");
    for (ns, ip, ip6) in [
        (&a, "10.248.0.2/24", "fd00:cb1::2/64"),
        (&b, "10.248.0.3/24", "fd00:cb1::3/64"),
    ] {
        let out = run("add", ns);
        assert!(out.status.success(), "add: {out:?}");
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ADD result");
        assert_eq!(r["ips"][0]["address"], ip, "{r}");
        assert_eq!(r["ips"][0]["gateway"], "10.248.0.1", "{r}");
        assert_eq!(r["ips"][1]["address"], ip6, "{r}");
        assert_eq!(r["ips"][1]["gateway"], "fd00:cb1::1", "{r}");
        assert_eq!(r["ips"][1]["interface"], 0, "{r}");
        assert_eq!(r["routes"][0]["dst"], "0.0.0.0/0", "{r}");
        assert_eq!(r["routes"][1]["dst"], "::/0", "{r}");
        assert_eq!(r["routes"][1]["gw"], "fd00:cb1::1", "{r}");
        let addrs = ns.text(&["ip", "-6", "addr", "show", "dev", "eth0"]);
        assert!(addrs.contains(ip6), "{addrs}");
        let route = ns.text(&["ip", "-6", "route"]);
        assert!(
            route.contains("default via fd00:cb1::1 dev eth0"),
            "{route}"
        );
    }
    let view = t.json(&["network", "inspect", "libcninet6"]);
    assert_eq!(view["subnet6"], "fd00:cb1::/64", "{view}");
    let ping = a.exec(&["ping", "-6", "-c", "1", "-W", "2", "fd00:cb1::3"]);
    assert!(ping.status.success(), "a reaches b over IPv6: {ping:?}");
    let ping = b.exec(&["ping", "-c", "1", "-W", "2", "10.248.0.2"]);
    assert!(ping.status.success(), "b reaches a over IPv4: {ping:?}");
    let ping = b.exec(&["ping", "-6", "-c", "1", "-W", "2", "fd00:cb1::1"]);
    assert!(
        ping.status.success(),
        "b reaches the gateway over IPv6: {ping:?}"
    );
    // A restarted daemon makes the TAPs again with both addresses and routes.
    t.stop_daemon(Signal::SIGTERM);
    t.ok(&["network", "ls"]);
    let addrs = a.text(&["ip", "-6", "addr", "show", "dev", "eth0"]);
    assert!(addrs.contains("fd00:cb1::2/64"), "after a restart: {addrs}");
    let route = a.text(&["ip", "-6", "route"]);
    assert!(
        route.contains("default via fd00:cb1::1 dev eth0"),
        "after a restart: {route}"
    );
    let ping = a.exec(&["ping", "-6", "-c", "1", "-W", "2", "fd00:cb1::3"]);
    assert!(
        ping.status.success(),
        "a reaches b over IPv6 after a restart: {ping:?}"
    );
    for ns in [&a, &b] {
        let out = run("check", ns);
        assert!(out.status.success(), "check: {out:?}");
    }
    for _ in 0..2 {
        let out = run("del", &a);
        assert!(out.status.success(), "del: {out:?}");
    }
    let ping = b.exec(&["ping", "-6", "-c", "1", "-W", "1", "fd00:cb1::2"]);
    assert!(!ping.status.success(), "a's IPv6 address is gone");
    let out = run("del", &b);
    assert!(out.status.success(), "del: {out:?}");
    // The addresses are free again: a new ADD gets the first of each family.
    let out = run("add", &a);
    assert!(out.status.success(), "add again: {out:?}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ADD result");
    assert_eq!(r["ips"][1]["address"], "fd00:cb1::2/64", "{r}");
    let out = run("del", &a);
    assert!(out.status.success(), "del: {out:?}");
    t.ok(&["network", "rm", "libcninet6"]);
}

/// tapnet-cni in chains, through libcni with the reference plugins: first, followed by `tuning`
/// (a sysctl on tapnet's interface) and `portmap` (a DNAT rule to tapnet's address, made in a
/// namespace standing for the host); and after `loopback`, whose interface and addresses it
/// keeps in front of its own. CHECK compares the attachment with the cached result: a result
/// edited to name another address fails it.
#[test]
fn libcni_chains_tapnet_cni_with_the_reference_plugins() {
    let Some(cnitool) = cnitool() else { return };
    if !common::skip::require(
        "libcni",
        &[
            need("/usr/lib/cni/tuning", "containernetworking-plugins"),
            need("iptables", "iptables"),
        ],
    ) {
        return;
    }
    let t = Tapnet::new("cni-chain");
    t.ok(&["network", "ls"]);
    let confdir = t.dir.join("net.d");
    std::fs::create_dir_all(&confdir).expect("conf dir");
    let state_dir = t.dir.display().to_string();
    let first = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "chainnet",
        "plugins": [
            {"type": "tapnet-cni", "subnet": "10.249.0.0/24", "stateDir": state_dir},
            {"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.arp_filter": "1"}},
            {"type": "portmap", "capabilities": {"portMappings": true}, "snat": false},
        ],
    });
    std::fs::write(confdir.join("10-chain.conflist"), first.to_string()).expect("conflist");
    let after = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "afterlo",
        "plugins": [
            {"type": "loopback"},
            {"type": "tapnet-cni", "network": "chainnet", "stateDir": state_dir},
        ],
    });
    std::fs::write(confdir.join("20-afterlo.conflist"), after.to_string()).expect("conflist");
    let plugins = format!(
        "{}:/usr/lib/cni",
        Path::new(env!("CARGO_BIN_EXE_tapnet-cni"))
            .parent()
            .expect("plugin dir")
            .display()
    );
    // portmap writes iptables rules where it runs: in a namespace of the test's, not the host's.
    let host = Netns::new("chost");
    let host_name = host
        .path()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let cache = t.dir.join("cni-cache");
    let run = |command: &str, network: &str, ns: &Netns| {
        Command::new("ip")
            .args(["netns", "exec", &host_name])
            .arg(&cnitool)
            .args([command, network, &ns.path()])
            .env("NETCONFPATH", &confdir)
            .env("CNI_PATH", &plugins)
            .env("CNI_CACHE_DIR", &cache)
            .env(
                "CAP_ARGS",
                r#"{"portMappings":[{"hostPort":18080,"containerPort":80,"protocol":"tcp"}]}"#,
            )
            .output()
            .expect("run cnitool")
    };
    let a = Netns::new("cha");
    let b = Netns::new("chb");

    let out = run("add", "chainnet", &a);
    assert!(out.status.success(), "add: {out:?}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ADD result");
    assert_eq!(r["interfaces"][0]["name"], "eth0", "{r}");
    assert_eq!(r["ips"][0]["address"], "10.249.0.2/24", "{r}");
    // tuning found tapnet's interface in the result it was handed, and set its sysctl.
    let sysctl = a.text(&["sysctl", "-n", "net.ipv4.conf.eth0.arp_filter"]);
    assert_eq!(sysctl.trim(), "1", "tuning's sysctl on eth0");
    // portmap read tapnet's address from the same result.
    let nat = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["netns", "exec", &host_name, "iptables", "-t", "nat", "-S"])
            .output()
            .expect("iptables")
            .stdout,
    )
    .to_string();
    assert!(
        nat.contains("10.249.0.2:80") && nat.contains("18080"),
        "portmap's DNAT to tapnet's address: {nat}"
    );
    // (No CHECK of this chain: Debian's portmap 1.1.1 checks an ip6tables chain even for an
    // IPv4-only container and fails, whatever the plugins before it did.)

    // After loopback: lo first, tapnet's eth0 second, its address pointing at index 1.
    let out = run("add", "afterlo", &b);
    assert!(out.status.success(), "add after loopback: {out:?}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ADD result");
    assert_eq!(r["interfaces"][0]["name"], "lo", "{r}");
    assert_eq!(r["interfaces"][1]["name"], "eth0", "{r}");
    let ours = r["ips"]
        .as_array()
        .and_then(|ips| ips.iter().find(|ip| ip["address"] == "10.249.0.3/24"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(ours["interface"], 1, "{r}");
    assert!(b.ping("10.249.0.2"), "b reaches a on the chained network");
    let out = run("check", "afterlo", &b);
    assert!(out.status.success(), "check after loopback: {out:?}");

    // CHECK against a cached result that names another address fails, naming it.
    let cached = std::fs::read_dir(cache.join("results"))
        .expect("libcni's result cache")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.to_string_lossy().contains("afterlo"))
        .expect("afterlo's cached result");
    let text = std::fs::read_to_string(&cached).expect("cached result");
    assert!(text.contains("10.249.0.3/24"), "{text}");
    std::fs::write(&cached, text.replace("10.249.0.3/24", "10.249.0.9/24")).expect("edit");
    let out = run("check", "afterlo", &b);
    assert!(!out.status.success(), "check of an edited result passed");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("10.249.0.3/24"), "{err}");
    std::fs::write(&cached, text).expect("restore");

    for (network, ns) in [("afterlo", &b), ("chainnet", &a)] {
        let out = run("del", network, ns);
        assert!(out.status.success(), "del: {out:?}");
    }
    let nat = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["netns", "exec", &host_name, "iptables", "-t", "nat", "-S"])
            .output()
            .expect("iptables")
            .stdout,
    )
    .to_string();
    assert!(
        !nat.contains("10.249.0.2:80"),
        "portmap's rule stays: {nat}"
    );
    assert!(!a.links().iter().any(|l| l == "eth0"));
    t.ok(&["network", "rm", "chainnet"]);
}

/// GC (CNI 1.1) with `cni.dev/valid-attachments` removes exactly the attachments of the
/// network that the runtime no longer lists; STATUS answers while the daemon runs and says
/// the plugin is not available (code 50) when it does not.
#[test]
fn gc_removes_exactly_the_stale_attachments_and_status_follows_the_daemon() {
    let t = Tapnet::new("cni-gc");
    t.ok(&["network", "ls"]);
    let conf = |extra: serde_json::Value| {
        let mut c = serde_json::json!({
            "cniVersion": "1.1.0",
            "name": "gcnet",
            "type": "tapnet-cni",
            "subnet": "10.250.0.0/24",
            "stateDir": t.dir.display().to_string(),
        });
        if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
            c.extend(extra.clone());
        }
        c.to_string()
    };
    let other = serde_json::json!({
        "cniVersion": "1.1.0",
        "name": "gcother",
        "type": "tapnet-cni",
        "subnet": "10.251.0.0/24",
        "stateDir": t.dir.display().to_string(),
    })
    .to_string();
    let ns: Vec<Netns> = ["gc1", "gc2", "gc3"]
        .iter()
        .map(|n| Netns::new(n))
        .collect();
    for (i, n) in ns.iter().enumerate() {
        let (r, code) = cni(
            "ADD",
            &format!("ctr-gc{i}"),
            &n.path(),
            &conf(serde_json::json!({})),
        );
        assert_eq!(code, 0, "{r}");
    }
    let o = Netns::new("gco");
    let (r, code) = cni("ADD", "ctr-other", &o.path(), &other);
    assert_eq!(code, 0, "{r}");
    // GC without the list is refused: it would remove everything.
    let (r, code) = cni("GC", "", "", &conf(serde_json::json!({})));
    assert_eq!(code, 1, "{r}");
    assert_eq!(r["code"], 7, "{r}");
    // The runtime still has ctr-gc0 and ctr-gc2: ctr-gc1 goes, and nothing of gcother.
    let valid = serde_json::json!({"cni.dev/valid-attachments": [
        {"containerID": "ctr-gc0", "ifname": "eth0"},
        {"containerID": "ctr-gc2", "ifname": "eth0"},
    ]});
    let (r, code) = cni("GC", "", "", &conf(valid));
    assert_eq!(code, 0, "{r}");
    assert!(ns[0].links().iter().any(|l| l == "eth0"), "ctr-gc0 kept");
    assert!(
        !ns[1].links().iter().any(|l| l == "eth0"),
        "ctr-gc1 collected"
    );
    assert!(ns[2].links().iter().any(|l| l == "eth0"), "ctr-gc2 kept");
    assert!(
        o.links().iter().any(|l| l == "eth0"),
        "another network's kept"
    );
    assert!(ns[2].ping("10.250.0.2"), "the kept ones still talk");
    let (r, code) = cni("STATUS", "", "", &conf(serde_json::json!({})));
    assert_eq!(code, 0, "{r}");
    t.stop_daemon(Signal::SIGTERM);
    let (r, code) = cni("STATUS", "", "", &conf(serde_json::json!({})));
    assert_eq!(code, 1, "{r}");
    assert_eq!(r["code"], 50, "{r}");
    t.ok(&["network", "ls"]);
    for (i, n) in ns.iter().enumerate() {
        let (r, code) = cni(
            "DEL",
            &format!("ctr-gc{i}"),
            &n.path(),
            &conf(serde_json::json!({})),
        );
        assert_eq!(code, 0, "{r}");
    }
    let (r, code) = cni("DEL", "ctr-other", &o.path(), &other);
    assert_eq!(code, 0, "{r}");
}
