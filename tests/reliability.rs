//! Issue 8, the daemon's life: a killed daemon is replaced by the first command, a crash half way
//! through a create leaves nothing that blocks the name, the state dir and socket are private
//! whatever the umask and only their owner (or a granted group) may steer the daemon, and slow
//! teardown does not block other requests.

mod common;

use common::{Tapnet, wait_until};
use nix::sys::signal::Signal;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn first_command_after_kill_9_starts_a_new_daemon() {
    let t = Tapnet::new("kill9-first");
    t.ok(&["network", "create", "n"]);
    t.ok(&["sandbox", "create", "a", "--net", "n"]);
    t.ok(&["sandbox", "create", "b", "--net", "n"]);
    for round in 0..5 {
        let pid = t.pid().expect("pid");
        // No waiting for the old daemon to be gone: the command races its death.
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL).expect("kill");
        let started = Instant::now();
        let out = t.run(&["network", "ls"]);
        assert!(
            out.status.success(),
            "round {round}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_ne!(t.pid(), Some(pid), "round {round}: a new daemon answers");
        assert!(t.ping("a", "172.18.0.3"), "round {round}: traffic again");
        eprintln!("round {round}: traffic again after {:?}", started.elapsed());
    }
}

#[test]
fn a_create_killed_half_way_leaves_nothing_behind() {
    let t = Tapnet::new("crash-create");
    t.ok(&["network", "create", "n"]);
    // Debris as a crash leaves it: pins and /etc files of a sandbox the model does not know.
    t.stop_daemon(Signal::SIGTERM);
    let ghost_net = t.dir.join("netns/ghost");
    let ghost_uts = t.dir.join("utsns/ghost");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "touch {n} {u} && unshare --net --uts sh -c 'mount --bind /proc/self/ns/net {n} && mount --bind /proc/self/ns/uts {u}'",
            n = ghost_net.display(),
            u = ghost_uts.display()
        ))
        .status()
        .expect("make debris");
    assert!(status.success());
    std::fs::create_dir_all(t.dir.join("etc/ghost")).expect("etc debris");
    assert!(
        tapnet_is_mounted(&ghost_net),
        "positive control: the debris is a pin"
    );
    // The restarted daemon reconciles: the name is free and works.
    t.ok(&["sandbox", "create", "ghost", "--net", "n"]);
    t.ok(&["sandbox", "rm", "ghost"]);
    assert!(!ghost_net.exists() && !t.dir.join("etc/ghost").exists());

    // The real thing: kill -9 at random points of creates, then every name still works.
    for i in 0..10u64 {
        let name = format!("s{i}");
        let mut create = t
            .command(&["sandbox", "create", &name, "--net", "n"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("create");
        std::thread::sleep(Duration::from_millis(5 + (i * 7) % 40));
        if let Some(pid) = t.pid() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = create.wait();
        let out = t.run(&["sandbox", "create", &name, "--net", "n"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() || err.contains("already exists"),
            "{name}: {err}"
        );
        assert!(t.ping(&name, "172.18.0.1"), "{name} works");
    }
    // Nothing in the state dir that the model does not know.
    let known: Vec<String> = t
        .json(&["sandbox", "ls"])
        .as_array()
        .expect("list")
        .iter()
        .map(|s| s["name"].as_str().unwrap_or("").to_string())
        .collect();
    for dir in ["netns", "utsns", "etc"] {
        for entry in std::fs::read_dir(t.dir.join(dir)).expect(dir).flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            assert!(known.contains(&name), "{dir}/{name} is debris: {known:?}");
        }
    }
}

fn tapnet_is_mounted(path: &std::path::Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let path = path.display().to_string();
    info.lines()
        .any(|l| l.split(' ').nth(4) == Some(path.as_str()))
}

#[test]
fn state_dir_and_socket_are_private_whatever_the_umask() {
    let t = Tapnet::new("umask");
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "umask 000 && exec {} --state-dir {} network create n",
            common::bin(),
            t.dir.display()
        ))
        .env("TAPNET_NAT_ALLOW", "127.0.0.0/8")
        .output()
        .expect("tapnet");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(mode(&t.dir), 0o700);
    assert_eq!(mode(&t.dir.join("tapnet.sock")), 0o600);
    assert_eq!(mode(&t.dir.join("state.json")), 0o600);
    assert_eq!(mode(&t.dir.join("state.journal")), 0o600);
    assert_eq!(mode(&t.dir.join("daemon.log")), 0o600);
    t.ok(&["sandbox", "create", "a", "--net", "n"]);
    // /etc files are read through bind mounts by any user in the sandbox.
    assert_eq!(mode(&t.dir.join("etc/a/hosts")), 0o644);
    let hosts = t.exec_ok(
        "a",
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "cat",
            "/etc/hosts",
        ],
    );
    assert!(hosts.contains("172.18.0.2\ta"), "{hosts}");
}

#[test]
fn only_the_owner_or_a_granted_group_may_use_the_socket() {
    let user = common::test_user("tapnet-test");
    let t = Tapnet::new("peercred");
    t.ok(&["network", "ls"]);
    // Loosen the file modes by hand: the daemon still refuses another user.
    std::fs::set_permissions(&t.dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::set_permissions(
        t.dir.join("tapnet.sock"),
        std::fs::Permissions::from_mode(0o777),
    )
    .expect("chmod");
    let as_user = |extra: &[&str]| {
        Command::new("setpriv")
            .arg(format!("--reuid={}", user.uid))
            .arg(format!("--regid={}", user.gid))
            .args(["--clear-groups", "--"])
            .arg(common::public_bin())
            .arg("--state-dir")
            .arg(&t.dir)
            .args(extra)
            .output()
            .expect("tapnet as user")
    };
    let out = as_user(&["network", "ls"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("permission denied") && err.contains(&format!("uid {}", user.uid)),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(t.pid().map(|_| ()), Some(()), "the daemon is still there");

    // With --group, the group's members get in.
    t.stop_daemon(Signal::SIGTERM);
    let daemon = t
        .command(&["daemon", "--group", &user.gid.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("daemon");
    assert!(wait_until(Duration::from_secs(5), || t
        .dir
        .join("tapnet.sock")
        .exists()));
    assert_eq!(mode(&t.dir.join("tapnet.sock")), 0o660);
    let out = Command::new("setpriv")
        .arg(format!("--reuid={}", user.uid))
        .arg(format!("--regid={}", user.gid))
        .args(["--clear-groups", "--"])
        .arg(common::public_bin())
        .arg("--state-dir")
        .arg(&t.dir)
        .args(["--no-autostart", "network", "ls"])
        .output()
        .expect("tapnet as group member");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    t.stop_daemon(Signal::SIGTERM);
    let _ = daemon.wait_with_output();
}

#[test]
fn a_relative_state_dir_works_from_anywhere() {
    let t = Tapnet::new("relative");
    let parent = t.dir.parent().expect("parent").to_path_buf();
    let rel = t
        .dir
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let run = |cwd: &std::path::Path, args: &[&str]| {
        Command::new(common::bin())
            .arg("--state-dir")
            .arg(&rel)
            .args(args)
            .current_dir(cwd)
            .env("TAPNET_NAT_ALLOW", "127.0.0.0/8")
            .output()
            .expect("tapnet")
    };
    assert!(run(&parent, &["network", "create", "n"]).status.success());
    assert!(
        run(&parent, &["sandbox", "create", "a", "--net", "n"])
            .status
            .success()
    );
    // exec from another directory finds the same daemon through the absolute path it kept.
    let out = t.exec("a", &["hostname"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "a");
    let info = t.json(&["info"]);
    assert_eq!(
        info["state_dir"].as_str(),
        Some(t.dir.to_str().unwrap_or(""))
    );
    // reset through the relative path leaves no mount behind.
    assert!(run(&parent, &["system", "reset"]).status.success());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    assert!(
        !mounts.contains(t.dir.to_str().unwrap_or("?")),
        "mounts left"
    );
    assert!(!t.dir.exists());
}

#[test]
fn slow_teardown_does_not_block_other_requests() {
    let mut t = Tapnet::new("slowrm");
    t.ok(&["network", "create", "n"]);
    t.ok(&["sandbox", "create", "a", "--net", "n"]);
    t.stop_daemon(Signal::SIGTERM);
    // Restart the daemon with killing made slow (as a process stuck in the kernel would be).
    let daemon = t
        .command(&["daemon"])
        .env("TAPNET_TEST_SLOW_KILL_MS", "2000")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("daemon");
    assert!(wait_until(Duration::from_secs(5), || t
        .run(&["--no-autostart", "network", "ls"])
        .status
        .success()));
    let _sleeper = t.spawn_server("a", &["tcp-serve", "0.0.0.0", "5001"]);
    let rm = t
        .command(&["sandbox", "rm", "--force", "a"])
        .spawn()
        .expect("rm");
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    t.ok(&["stats"]);
    t.ok(&["fdb", "n"]);
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_millis(1000),
        "stats and fdb waited {waited:?} behind sandbox rm"
    );
    // Positive control: the rm itself did take the slow path.
    let rm_started = started - Duration::from_millis(300);
    let out = rm.wait_with_output().expect("rm");
    assert!(out.status.success());
    assert!(
        rm_started.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        rm_started.elapsed()
    );
    t.stop_daemon(Signal::SIGTERM);
    drop(daemon);
}

#[test]
fn autostart_shows_the_daemons_own_error_at_once() {
    let t = Tapnet::new("corrupt-client");
    t.ok(&["network", "create", "keep"]);
    t.stop_daemon(Signal::SIGTERM);
    std::fs::write(t.dir.join("state.json"), "{ not json").expect("corrupt");
    let started = Instant::now();
    let err = t.fails(&["network", "ls"]);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(
        err.contains("state.json") && err.contains("corrupt"),
        "{err}"
    );
    std::fs::remove_file(t.dir.join("state.json")).expect("clean");
}

#[test]
fn a_failed_create_leaves_no_etc_files() {
    let t = Tapnet::new("failed-create");
    t.ok(&["network", "create", "n"]);
    // A directory where the pin file must go makes namespace creation fail.
    std::fs::create_dir_all(t.dir.join("netns/blocked/x")).expect("blocker");
    let err = t.fails(&["sandbox", "create", "blocked", "--net", "n"]);
    assert!(err.contains("blocked"), "{err}");
    assert!(
        !t.dir.join("etc/blocked").exists(),
        "etc/blocked left behind"
    );
    std::fs::remove_dir_all(t.dir.join("netns/blocked")).expect("unblock");
    t.ok(&["sandbox", "create", "blocked", "--net", "n"]);
}
