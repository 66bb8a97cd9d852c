//! Clients across a daemon's death: after `kill -9`, clients started at once all get an answer
//! from the one new daemon, and a create whose answer was lost with the daemon is not done
//! twice (nor refused as "already exists") when the client sends it again.

mod common;

use common::Tapnet;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::process::Stdio;
use std::time::{Duration, Instant};

const CLIENTS: usize = 4;

#[test]
fn clients_started_at_once_after_kill_9_all_succeed() {
    let t = Tapnet::new("kill9-many");
    t.ok(&["network", "create", "n"]);
    t.ok(&["sandbox", "create", "a", "--net", "n"]);
    let rounds = 20;
    let mut failures = Vec::new();
    let mut slowest = Duration::ZERO;
    for round in 0..rounds {
        let pid = t.pid().expect("daemon pid");
        kill(Pid::from_raw(pid), Signal::SIGKILL).expect("kill -9");
        let started = Instant::now();
        let clients: Vec<_> = (0..CLIENTS)
            .map(|i| {
                let args: &[&str] = if i % 2 == 0 {
                    &["sandbox", "ls"]
                } else {
                    &["network", "inspect", "n"]
                };
                t.command(args)
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("client")
            })
            .collect();
        for client in clients {
            let out = client.wait_with_output().expect("client");
            if !out.status.success() {
                failures.push(format!(
                    "round {round}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }
        slowest = slowest.max(started.elapsed());
        assert_ne!(t.pid(), Some(pid), "round {round}: a new daemon answers");
    }
    eprintln!(
        "{} of {} clients failed; slowest round {slowest:?}",
        failures.len(),
        rounds * CLIENTS
    );
    assert!(failures.is_empty(), "{failures:#?}");
    // One daemon serves the state dir, and it works.
    assert!(t.ping("a", "172.18.0.1"), "traffic after the last restart");
}

/// The daemon is killed at random points of a create; the create's own retry must report
/// success whether the dead daemon committed it or not. (Before request ids, a commit whose
/// answer was lost came back as "sandbox sN already exists" from the retry.)
#[test]
fn a_create_whose_answer_died_with_the_daemon_succeeds_once() {
    let t = Tapnet::new("kill9-retry");
    t.ok(&["network", "create", "n"]);
    t.ok(&["sandbox", "ls"]);
    let mut failures = Vec::new();
    let mut killed = 0;
    for i in 0..30u64 {
        let name = format!("s{i}");
        let create = t
            .command(&["sandbox", "create", &name, "--net", "n"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("create");
        // Spread the kills over the create: before, during and after its commit.
        std::thread::sleep(Duration::from_millis(2 + (i * 11) % 60));
        if let Some(pid) = t.pid() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            killed += 1;
        }
        let out = create.wait_with_output().expect("create");
        if !out.status.success() {
            failures.push(format!(
                "{name}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
            continue;
        }
        // The answer is the sandbox's id, as a create that was never interrupted prints.
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let view = t.json(&["sandbox", "inspect", &name]);
        assert_eq!(view["id"].as_str(), Some(id.as_str()), "{name}");
    }
    assert!(
        killed >= 25,
        "positive control: the daemon was killed ({killed})"
    );
    assert!(failures.is_empty(), "{failures:#?}");
    let names: Vec<String> = t
        .json(&["sandbox", "ls"])
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|s| s["name"].as_str().map(str::to_string))
        .collect();
    assert_eq!(names.len(), 30, "each create made one sandbox: {names:?}");
}

/// A daemon that cannot start leaves nothing in a state dir that was made for it.
#[test]
fn a_daemon_that_cannot_start_leaves_no_state_dir_behind() {
    let t = Tapnet::new("nostart");
    // A metrics address that cannot be bound: the daemon fails after taking the lock.
    let holder = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken = holder.local_addr().expect("addr").to_string();
    let out = t.run(&["daemon", "--metrics", &taken]);
    assert_eq!(out.status.code(), Some(1), "the daemon refused to start");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&taken), "{err}");
    assert!(
        !t.dir.exists(),
        "{} survived: {:?}",
        t.dir.display(),
        std::fs::read_dir(&t.dir).map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
    );
    // The same through a client's autostart (the daemon takes --metrics from the
    // environment): the client says why, and removes the state dir it made.
    let out = t
        .command(&["network", "ls"])
        .env("TAPNET_METRICS", &taken)
        .output()
        .expect("client");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("could not start") && err.contains(&taken),
        "{err}"
    );
    assert!(!t.dir.exists(), "the client's state dir was removed");
    // Positive control: a state dir the daemon did not make keeps what was there.
    std::fs::create_dir_all(&t.dir).expect("mkdir");
    std::fs::write(t.dir.join("keep"), "x").expect("write");
    let out = t.run(&["daemon", "--metrics", &taken]);
    assert_eq!(out.status.code(), Some(1));
    assert!(t.dir.join("keep").exists());
    assert!(!t.dir.join("tapnet.pid").exists());
}
