//! The state file is data: a restarted daemon checks every field as the API would have, and
//! never follows a link planted under the state dir.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::{Tapnet, wait_until};
use nix::sys::signal::Signal;
use serde_json::{Value, json};

/// A daemon with network `n` (10.61.0.0/24) and sandbox `a` on it, stopped.
fn stopped_world(tag: &str) -> Tapnet {
    let t = Tapnet::new(tag);
    t.ok(&["network", "create", "n", "--subnet", "10.61.0.0/24"]);
    t.ok(&["sandbox", "create", "a", "--net", "n"]);
    t.stop_daemon(Signal::SIGTERM);
    t
}

fn sandbox_a(v: &mut Value) -> &mut Value {
    v["sandboxes"]
        .as_array_mut()
        .expect("sandboxes")
        .iter_mut()
        .find(|s| s["name"] == "a")
        .expect("sandbox a")
}

/// Edit state.json, start the daemon: it must exit 1 with one line naming the file and every
/// word of `want`, and leave the edited file as it was. The original file is put back after.
fn restart_refuses(tag: &str, edit: impl Fn(&mut Value), want: &[&str]) {
    let t = stopped_world(tag);
    let path = t.dir.join("state.json");
    let original = std::fs::read(&path).expect("state file");
    let mut v: Value = serde_json::from_slice(&original).expect("state JSON");
    edit(&mut v);
    let edited = serde_json::to_vec_pretty(&v).expect("encode");
    std::fs::write(&path, &edited).expect("write edited state");
    let mut daemon = t
        .command(&["daemon"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start daemon");
    let exited = wait_until(Duration::from_secs(15), || {
        daemon.try_wait().ok().flatten().is_some()
    });
    if !exited {
        let _ = daemon.kill();
        let _ = daemon.wait();
        std::fs::write(&path, &original).expect("restore state");
        panic!("{tag}: the daemon started on an edited state file");
    }
    let out = daemon.wait_with_output().expect("daemon output");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{tag}: {err}");
    let line = err
        .lines()
        .find(|l| l.contains("state file"))
        .unwrap_or_else(|| panic!("{tag}: no line names the state file: {err}"));
    assert!(line.contains(&path.display().to_string()), "{tag}: {line}");
    for w in want {
        assert!(line.contains(w), "{tag}: {line:?} does not say {w:?}");
    }
    assert_eq!(
        std::fs::read(&path).expect("state file"),
        edited,
        "{tag}: the refused file was changed"
    );
    std::fs::write(&path, &original).expect("restore state");
}

#[test]
fn a_hostname_with_a_newline_is_refused() {
    restart_refuses(
        "st-hostname",
        |v| sandbox_a(v)["hostname"] = json!("x\n10.0.0.1 evil"),
        &["sandbox \"a\"", "invalid hostname \"x\\n10.0.0.1 evil\""],
    );
}

#[test]
fn an_address_outside_the_subnet_is_refused() {
    restart_refuses(
        "st-address",
        |v| sandbox_a(v)["endpoints"][0]["ipv4"] = json!("10.99.0.5"),
        &[
            "sandbox \"a\"",
            "endpoint on network n",
            "10.99.0.5 is not a usable address of subnet 10.61.0.0/24",
        ],
    );
}

#[test]
fn a_duplicated_sandbox_is_refused() {
    restart_refuses(
        "st-duplicate",
        |v| {
            let again = sandbox_a(v).clone();
            v["sandboxes"]
                .as_array_mut()
                .expect("sandboxes")
                .push(again);
        },
        &["sandbox \"a\"", "listed twice"],
    );
}

#[test]
fn a_multicast_subnet_is_refused() {
    restart_refuses(
        "st-multicast",
        |v| {
            let n = v["networks"]
                .as_array_mut()
                .expect("networks")
                .iter_mut()
                .find(|n| n["name"] == "n")
                .expect("network n");
            n["subnet"] = json!("224.1.0.0/16");
            n["gateway"] = json!("224.1.0.1");
        },
        &["network \"n\"", "224.1.0.0/16", "multicast"],
    );
}

/// A temp dir of the test's own, outside the state dir, removed on drop.
struct Victims(PathBuf);

impl Victims {
    fn new(tag: &str) -> Self {
        let d = std::env::temp_dir().join(format!("tapnet-victims-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("victim dir");
        Victims(d)
    }
}

impl Drop for Victims {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn is_regular(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_file())
}

#[test]
fn links_under_the_state_dir_are_never_written_through() {
    let victims = Victims::new("links");
    let t = Tapnet::new("st-links");
    t.ok(&["network", "create", "n", "--subnet", "10.62.0.0/24"]);
    t.ok(&["network", "create", "n2", "--subnet", "10.63.0.0/24"]);
    t.ok(&["sandbox", "create", "a", "--net", "n"]);
    t.ok(&["sandbox", "create", "c", "--net", "n"]);
    t.stop_daemon(Signal::SIGTERM);
    // a's files: a symbolic link, a hard link and a dangling link to files outside.
    let victim = victims.0.join("victim");
    std::fs::write(&victim, "precious\n").expect("victim");
    let etc_a = t.dir.join("etc/a");
    std::fs::remove_file(etc_a.join("hosts")).expect("rm hosts");
    std::os::unix::fs::symlink(&victim, etc_a.join("hosts")).expect("symlink");
    std::fs::remove_file(etc_a.join("hostname")).expect("rm hostname");
    std::fs::hard_link(&victim, etc_a.join("hostname")).expect("hard link");
    let dangling = victims.0.join("made");
    std::fs::remove_file(etc_a.join("resolv.conf")).expect("rm resolv.conf");
    std::os::unix::fs::symlink(&dangling, etc_a.join("resolv.conf")).expect("symlink");
    // c's whole directory: a link to a directory outside.
    let victim_dir = victims.0.join("dir");
    std::fs::create_dir(&victim_dir).expect("victim dir");
    let etc_c = t.dir.join("etc/c");
    std::fs::remove_dir_all(&etc_c).expect("rm etc/c");
    std::os::unix::fs::symlink(&victim_dir, &etc_c).expect("symlink dir");

    // The restart rewrites the files of live sandboxes; connecting rewrites them again.
    t.ok(&["sandbox", "ls"]);
    t.ok(&["network", "connect", "n2", "a"]);
    t.ok(&["network", "connect", "n2", "c"]);

    assert_eq!(
        std::fs::read_to_string(&victim).expect("victim"),
        "precious\n",
        "written through a link"
    );
    assert!(
        !dangling.exists(),
        "a file was made through a dangling link"
    );
    assert_eq!(
        std::fs::read_dir(&victim_dir).expect("victim dir").count(),
        0,
        "files were written into a linked directory"
    );
    // The links were replaced by the sandbox's own files, which it sees.
    for name in ["hosts", "hostname", "resolv.conf"] {
        assert!(is_regular(&etc_a.join(name)), "etc/a/{name} is not a file");
    }
    let hosts = std::fs::read_to_string(etc_a.join("hosts")).expect("hosts");
    assert!(
        hosts.contains("10.62.0.2\ta") && hosts.contains("10.63.0."),
        "{hosts}"
    );
    let seen = t.exec_ok("a", &["cat", "/etc/hosts"]);
    assert!(seen.contains("10.63.0."), "{seen}");
    // The linked directory was refused by name, not followed.
    let log = std::fs::read_to_string(t.dir.join("daemon.log")).unwrap_or_default();
    assert!(
        log.contains(&format!("{}: it is not a directory", etc_c.display())),
        "{log}"
    );
}
