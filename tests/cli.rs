//! The command line as a user meets it: help, usage errors with TAPNET_STATE_DIR set, shell
//! completions, man pages, version, the install script, tables that show every field, sorted
//! stats, run's generated names, the demo's state dir, and the gateway's DNS answering
//! NAME.NETWORK, reverse (PTR) and AAAA queries inside sandboxes.

mod common;

use common::{Tapnet, bin};
use std::process::{Command, Output};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// tapnet with no state dir flag: the environment decides.
fn bare(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env("TAPNET_NAT_ALLOW", "127.0.0.0/8")
        .output()
        .unwrap_or_else(|e| panic!("cannot run tapnet {args:?}: {e}"))
}

#[test]
fn help_documents_every_option_with_global_options_last() {
    let out = bare(&["network", "create", "--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    let own = help.find("\nOptions:").expect("Options heading");
    let global = help
        .find("\nGlobal options:")
        .expect("Global options heading");
    assert!(own < global, "{help}");
    for expected in [
        "mac_aging=SECONDS",
        "nat_udp_timeout=SECONDS",
        "[default: bridge]",
        "[default: 1500]",
        "Name of the network",
    ] {
        assert!(help.contains(expected), "{expected} missing:\n{help}");
    }
    let (_, globals) = help.split_at(global);
    assert!(globals.contains("--state-dir") && globals.contains("--no-autostart"));
    assert!(!help[..global].contains("--state-dir"), "{help}");
}

#[test]
fn usage_errors_do_not_show_the_state_dir_from_the_environment() {
    let t = Tapnet::new("envdir");
    t.ok(&["network", "create", "viaflag"]);
    let out = Command::new(bin())
        .args(["network", "create"])
        .env("TAPNET_STATE_DIR", &t.dir)
        .output()
        .expect("run tapnet");
    assert_eq!(out.status.code(), Some(2), "usage error");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("Usage: tapnet network create <NAME>"),
        "{stderr}"
    );
    assert!(!stderr.contains("--state-dir"), "{stderr}");
    // The variable still chooses the daemon.
    let out = Command::new(bin())
        .args(["--no-autostart", "network", "ls"])
        .env("TAPNET_STATE_DIR", &t.dir)
        .output()
        .expect("run tapnet");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("viaflag"));
}

#[test]
fn bash_completion_parses_and_completes_subcommands() {
    let out = bare(&["completion", "bash"]);
    assert!(out.status.success());
    let dir = std::env::temp_dir().join(format!("tapnet-e2e-completion-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let script = dir.join("tapnet.bash");
    std::fs::write(&script, &out.stdout).expect("write script");
    // Load it and ask for the completions of `tapnet netw`, as bash would on TAB.
    let probe = format!(
        "source {} && COMP_WORDS=(tapnet netw) COMP_CWORD=1 COMP_LINE='tapnet netw' \
         COMP_POINT=11 && _tapnet tapnet netw tapnet && printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display()
    );
    let syntax = Command::new("bash").arg("-n").arg(&script).output();
    let completed = Command::new("bash").arg("-c").arg(&probe).output();
    let _ = std::fs::remove_dir_all(&dir);
    let syntax = syntax.expect("bash -n");
    assert!(syntax.status.success(), "{}", text(&syntax.stderr));
    let completed = completed.expect("bash");
    assert_eq!(
        text(&completed.stdout).trim(),
        "network",
        "{}",
        text(&completed.stderr)
    );
    for shell in ["zsh", "fish"] {
        let out = bare(&["completion", shell]);
        assert!(out.status.success() && !out.stdout.is_empty(), "{shell}");
    }
    assert_eq!(bare(&["completion", "tcsh"]).status.code(), Some(2));
}

#[test]
fn man_pages_and_version() {
    let out = bare(&["man"]);
    assert!(out.status.success());
    let page = text(&out.stdout);
    assert!(
        page.contains(".TH tapnet 1") && page.contains("completion"),
        "{page}"
    );

    let out = bare(&["version"]);
    assert!(out.status.success());
    let version = text(&out.stdout);
    let expected_rev = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or_else(
            || "unknown".to_string(),
            |o| text(&o.stdout).trim().to_string(),
        );
    assert_eq!(
        version.trim(),
        format!("tapnet {} (git {expected_rev})", env!("CARGO_PKG_VERSION"))
    );
    let out = bare(&["--version"]);
    assert!(text(&out.stdout).contains(&expected_rev));
}

#[test]
fn install_script_installs_binary_pages_and_completions() {
    let dest = std::env::temp_dir().join(format!("tapnet-e2e-install-{}", std::process::id()));
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/install.sh"))
        .env("DESTDIR", &dest)
        .env("PREFIX", "/usr")
        .env("TAPNET_BIN", bin())
        .output()
        .expect("run scripts/install.sh");
    let exists = |path: &str| dest.join(path).is_file();
    let found = [
        "usr/bin/tapnet",
        "usr/share/man/man1/tapnet.1",
        "usr/share/man/man1/tapnet-network-create.1",
        "usr/share/man/man1/tapnet-sandbox-inspect.1",
        "usr/share/bash-completion/completions/tapnet",
        "usr/share/zsh/site-functions/_tapnet",
        "usr/share/fish/vendor_completions.d/tapnet.fish",
    ]
    .map(|p| (p, exists(p)));
    let _ = std::fs::remove_dir_all(&dest);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for (path, present) in found {
        assert!(present, "{path} not installed");
    }
}

/// Every scalar value of a JSON document (strings unquoted), with its key.
fn leaves(value: &serde_json::Value, key: &str, out: &mut Vec<(String, String)>) {
    match value {
        serde_json::Value::Object(map) => map.iter().for_each(|(k, v)| leaves(v, k, out)),
        serde_json::Value::Array(items) => items.iter().for_each(|v| leaves(v, key, out)),
        serde_json::Value::Null => {}
        serde_json::Value::String(s) => out.push((key.to_string(), s.clone())),
        other => out.push((key.to_string(), other.to_string())),
    }
}

fn assert_table_shows_json(t: &Tapnet, args: &[&str], skip: &[&str]) -> String {
    let json = t.json(args);
    let table = t.ok(args);
    let mut found = Vec::new();
    leaves(&json, "", &mut found);
    for (key, value) in found.iter().filter(|(k, _)| !skip.contains(&k.as_str())) {
        assert!(
            table.contains(value.as_str()),
            "{args:?}: {key} = {value} missing from the table:\n{table}"
        );
    }
    table
}

#[test]
fn inspect_tables_show_ports_aliases_options_and_nat_flows() {
    let t = Tapnet::new("tables");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    t.ok(&[
        "network",
        "create",
        "n",
        "--opt",
        "mac_aging=60",
        "--opt",
        "nat_udp_timeout=7",
        "--subnet",
        "172.18.0.0/16",
        "--ip-range",
        "172.18.5.0/24",
    ]);
    t.ok(&["network", "create", "m", "--internal"]);
    let publish = format!("127.0.0.1:{port}:80");
    t.ok(&["sandbox", "create", "web", "--net", "n", "-p", &publish]);
    t.ok(&["network", "connect", "m", "web", "--alias", "api"]);

    // `offload: true` prints as "on".
    let net = assert_table_shows_json(&t, &["network", "inspect", "n"], &["offload"]);
    assert!(net.contains("mac_aging=60, nat_udp_timeout=7"), "{net}");
    assert!(net.contains("NAT flows:  0 TCP, 0 UDP"), "{net}");
    assert!(net.contains("Offloads:   on"), "{net}");
    let internal = assert_table_shows_json(&t, &["network", "inspect", "m"], &["offload"]);
    assert!(internal.contains("api"), "{internal}");
    let sandbox = assert_table_shows_json(&t, &["sandbox", "inspect", "web"], &[]);
    assert!(
        sandbox.contains(&format!("127.0.0.1:{port}->80/tcp")),
        "{sandbox}"
    );
    let list = t.ok(&["sandbox", "ls"]);
    assert!(
        list.contains(&format!("127.0.0.1:{port}->80/tcp")),
        "{list}"
    );
}

#[test]
fn stats_rows_are_sorted_with_drop_reasons_and_fdb_ages_have_units() {
    let t = Tapnet::new("statsorder");
    t.ok(&["network", "create", "n"]);
    t.ok(&["sandbox", "create", "zeta", "--net", "n"]);
    t.ok(&["sandbox", "create", "alpha", "--net", "n"]);
    assert!(t.ping("alpha", "172.18.0.2"));
    let stats = t.ok(&["stats", "n"]);
    let mut lines = stats.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split("   ")
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .collect();
    assert_eq!(
        header,
        [
            "NETWORK",
            "PORT",
            "RX PKTS",
            "RX BYTES",
            "TX PKTS",
            "TX BYTES",
            "DROPS",
            "MALFORMED",
            "OVERSIZE",
            "TX DROPPED",
            "SPOOFED",
            "FILTERED",
            "LEARN REFUSED"
        ]
    );
    let ports: Vec<&str> = lines.filter_map(|l| l.split_whitespace().nth(1)).collect();
    assert_eq!(ports, ["alpha/eth0", "gateway", "zeta/eth0"], "{stats}");
    let json = t.json(&["stats"]);
    let json_rows: Vec<(&str, &str)> = json
        .as_array()
        .expect("rows")
        .iter()
        .filter_map(|r| Some((r["network"].as_str()?, r["port"].as_str()?)))
        .collect();
    assert!(json_rows.len() >= 4, "{json}");
    assert!(json_rows.is_sorted(), "{json_rows:?}");

    let fdb = t.ok(&["fdb", "n"]);
    let ages: Vec<&str> = fdb
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    assert!(ages.len() >= 2, "{fdb}");
    for age in ages {
        let seconds = age.strip_suffix('s').unwrap_or_else(|| panic!("{fdb}"));
        assert!(seconds.parse::<u32>().is_ok(), "{fdb}");
    }
}

/// The name `run` printed on stderr.
fn run_name(out: &Output) -> String {
    let stderr = text(&out.stderr);
    let name = stderr
        .lines()
        .find_map(|l| l.strip_prefix("tapnet: sandbox "))
        .unwrap_or_else(|| panic!("no name on stderr: {stderr}"))
        .trim()
        .to_string();
    let (adjective, noun) = name.split_once('_').unwrap_or_else(|| panic!("{name}"));
    assert!(
        adjective.bytes().all(|b| b.is_ascii_lowercase())
            && noun.bytes().all(|b| b.is_ascii_alphanumeric()),
        "{name}"
    );
    name
}

#[test]
fn run_names_sandboxes_adjective_noun_and_prints_the_name_on_stderr() {
    let t = Tapnet::new("runnames");
    t.ok(&["network", "create", "n"]);
    let mut names = Vec::new();
    for _ in 0..3 {
        let out = t.run(&["run", "--net", "n", "--", "hostname"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let name = run_name(&out);
        // stdout is the command's alone.
        assert_eq!(text(&out.stdout).trim(), name);
        names.push(name);
    }
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), names.len(), "{names:?}");
    let listed = t.ok(&["sandbox", "ls"]);
    assert!(
        names.iter().all(|n| listed.contains(n.as_str())),
        "{listed}"
    );

    let out = t.run(&["run", "--rm", "--net", "n", "--", "true"]);
    assert!(out.status.success());
    let removed = run_name(&out);
    assert!(!t.ok(&["sandbox", "ls"]).contains(&removed));
    // A given name is used as is and not announced.
    let out = t.run(&["run", "--name", "given", "--net", "n", "--", "hostname"]);
    assert_eq!(text(&out.stdout).trim(), "given");
    assert!(!text(&out.stderr).contains("tapnet: sandbox"));
}

#[test]
fn demo_uses_a_fresh_state_dir_and_refuses_an_existing_one() {
    let busy = Tapnet::new("demobusy");
    busy.ok(&["network", "create", "keep"]);
    let refused = busy.fails(&["demo"]);
    assert!(refused.contains("exists"), "{refused}");
    assert!(busy.network_names().contains(&"keep".to_string()));
    let unused = busy.dir.with_extension("unused");
    let out = bare(&[
        "--state-dir",
        &unused.to_string_lossy(),
        "--no-autostart",
        "demo",
    ]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a flag the demo cannot honour: usage"
    );
    let refused = text(&out.stderr);
    assert!(refused.contains("--no-autostart"), "{refused}");
    assert!(!unused.exists());

    let fresh = Tapnet::new("demofresh");
    assert!(!fresh.dir.exists());
    let out = fresh.ok(&["demo"]);
    assert!(
        out.contains(&format!("state dir {}", fresh.dir.display())),
        "{out}"
    );
    assert!(
        out.contains("MAC table of backend") && out.contains("KIND"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains("gateway") && l.trim_end().ends_with("gateway")),
        "{out}"
    );
    assert!(!fresh.dir.exists(), "the demo removes its state dir");
}

/// A DNS query from inside a sandbox: "RCODE ANSWER..." with A addresses and PTR names.
const DNS_QUERY: &str = r#"
import socket, struct, sys
server, name, qtype = sys.argv[1], sys.argv[2], int(sys.argv[3])
query = struct.pack(">HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0)
for label in name.split("."):
    query += bytes([len(label)]) + label.encode()
query += b"\0" + struct.pack(">HH", qtype, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
s.sendto(query, (server, 53))
r = s.recv(4096)
def read_name(pos):
    labels = []
    while True:
        n = r[pos]
        if n >= 0xC0:
            return labels + read_name(((n & 0x3F) << 8) | r[pos + 1])[0], pos + 2
        pos += 1
        if n == 0:
            return labels, pos
        labels.append(r[pos:pos + n].decode())
        pos += n
out = [str(r[3] & 15)]
pos = len(query)
for _ in range(struct.unpack(">H", r[6:8])[0]):
    _, pos = read_name(pos)
    rtype, _, _, rdlen = struct.unpack(">HHIH", r[pos:pos + 10])
    pos += 10
    if rtype == 1:
        out.append(socket.inet_ntoa(r[pos:pos + 4]))
    elif rtype == 12:
        out.append(".".join(read_name(pos)[0]))
    pos += rdlen
print(" ".join(out))
"#;

fn dns(t: &Tapnet, sandbox: &str, server: &str, name: &str, qtype: u16) -> String {
    t.exec_ok(
        sandbox,
        &["python3", "-c", DNS_QUERY, server, name, &qtype.to_string()],
    )
    .trim()
    .to_string()
}

fn getent(t: &Tapnet, sandbox: &str, key: &str) -> Option<String> {
    let out = t.exec(sandbox, &["getent", "hosts", key]);
    out.status.success().then(|| {
        text(&out.stdout)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    })
}

#[test]
fn dns_answers_name_dot_network_reverse_and_empty_aaaa() {
    let t = Tapnet::new("dnsnames");
    t.ok(&["network", "create", "backend"]);
    t.ok(&["network", "create", "frontend"]);
    t.ok(&["sandbox", "create", "alpha", "--net", "backend"]);
    t.ok(&["sandbox", "create", "beta", "--net", "backend"]);
    t.ok(&["sandbox", "create", "gamma", "--net", "frontend"]);
    t.ok(&["network", "connect", "frontend", "beta", "--alias", "db"]);
    let gw = "172.18.0.1";

    // NAME.NETWORK, aliases too, in any case.
    assert_eq!(
        getent(&t, "alpha", "beta.backend").as_deref(),
        Some("172.18.0.3 beta.backend")
    );
    assert_eq!(dns(&t, "alpha", gw, "Beta.BACKEND", 1), "0 172.18.0.3");
    assert_eq!(
        dns(&t, "gamma", "172.19.0.1", "db.frontend", 1),
        "0 172.19.0.3"
    );
    // Names of another network do not resolve, qualified or not.
    assert_eq!(getent(&t, "gamma", "alpha.backend"), None);

    // Reverse lookups name the sandbox with its network.
    assert_eq!(
        dns(&t, "alpha", gw, "3.0.18.172.in-addr.arpa", 12),
        "0 beta.backend"
    );
    assert_eq!(
        getent(&t, "alpha", "172.18.0.3").as_deref(),
        Some("172.18.0.3 beta.backend")
    );
    assert_eq!(
        dns(&t, "gamma", "172.19.0.1", "3.0.19.172.in-addr.arpa", 12),
        "0 beta.frontend"
    );

    // AAAA of a known name: NOERROR and no records, not forwarded (which gives SERVFAIL here:
    // the test daemon's NAT, and so its forwarding, reaches loopback only).
    assert_eq!(dns(&t, "alpha", gw, "beta", 28), "0");
    assert_eq!(dns(&t, "alpha", gw, "beta.backend", 28), "0");
    assert_eq!(dns(&t, "alpha", gw, "nobody.backend", 28), "2");

    // Names follow the sandboxes.
    t.ok(&["sandbox", "rm", "beta"]);
    assert_eq!(getent(&t, "alpha", "beta.backend"), None);
    assert_eq!(
        dns(&t, "alpha", gw, "3.0.18.172.in-addr.arpa", 12),
        "2",
        "forwarded, and nothing upstream answers"
    );
}

/// A reader that goes away (`| head -1`) ends a command quietly: status 0, nothing on stderr
/// (it panicked with a backtrace on EPIPE). The reader here closes the pipe before tapnet
/// writes, so every write fails; the positive control reads the whole output.
#[test]
fn commands_stop_quietly_when_their_reader_goes_away() {
    let t = Tapnet::new("epipe");
    t.ok(&["network", "create", "n"]);
    let cases: &[&[&str]] = &[
        &["completion", "bash"],
        &["man"],
        &["network", "ls"],
        &["network", "inspect", "n", "--format", "json"],
        &["version"],
    ];
    for args in cases {
        let mut child = t
            .command(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        // Close the read end at once: tapnet's first write meets a pipe with no reader.
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("wait");
        assert_eq!(
            out.status.code(),
            Some(0),
            "tapnet {args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            out.stderr.is_empty(),
            "tapnet {args:?}: {}",
            text(&out.stderr)
        );
        let whole = t.run(args);
        assert!(
            whole.status.success() && !whole.stdout.is_empty(),
            "positive control: tapnet {args:?} writes output"
        );
    }
}
