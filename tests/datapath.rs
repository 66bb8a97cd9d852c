//! The switch itself: flooding and learning seen from inside sandboxes, malformed and oversize
//! frames, offloads on and off, jumbo MTU, datapath threads.

mod common;

use common::{Tapnet, port_stats, traffic_script, wait_until};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const EXPERIMENTAL_ETHERTYPE: &str = "88b5";

fn frame(dst: &str, src: &str, ethertype: &str, payload_len: usize) -> String {
    format!(
        "{}{}{ethertype}{}",
        dst.replace(':', ""),
        src.replace(':', ""),
        "ab".repeat(payload_len)
    )
}

fn raw_send(t: &Tapnet, sandbox: &str, frames: &[String]) {
    let script = traffic_script();
    let mut args = vec!["python3", script.to_str().unwrap_or(""), "raw-send", "eth0"];
    args.extend(frames.iter().map(String::as_str));
    t.exec_ok(sandbox, &args);
}

#[test]
fn floods_unknown_and_broadcast_and_forwards_learned_unicast() {
    let mut t = Tapnet::new("flood");
    t.ok(&["network", "create", "n"]);
    t.ok(&["network", "create", "other"]);
    for s in ["a", "b", "c"] {
        t.ok(&["sandbox", "create", s, "--net", "n"]);
    }
    t.ok(&["sandbox", "create", "d", "--net", "other"]);
    let a_mac = "02:42:ac:12:00:02";
    let b_mac = "02:42:ac:12:00:03";
    // Teach the switch where b is.
    assert!(t.ping("b", "172.18.0.2"));
    let filter = ["ether", "proto", "0x88b5"];
    let caps: Vec<usize> = ["b", "c", "d"]
        .iter()
        .map(|s| t.spawn_capture(s, "eth0", &filter))
        .collect();
    raw_send(
        &t,
        "a",
        &[
            frame("ff:ff:ff:ff:ff:ff", a_mac, EXPERIMENTAL_ETHERTYPE, 50),
            frame("02:00:00:00:00:99", a_mac, EXPERIMENTAL_ETHERTYPE, 51),
            frame(b_mac, a_mac, EXPERIMENTAL_ETHERTYPE, 52),
        ],
    );
    // tcpdump header lines read "TIME SRC > DST, ethertype ...": keep the destinations.
    let destinations = |lines: Vec<String>| -> Vec<String> {
        lines
            .iter()
            .filter_map(|l| l.split(" > ").nth(1)?.split(',').next().map(str::to_string))
            .collect()
    };
    let seen: Vec<Vec<String>> = caps
        .into_iter()
        .map(|c| destinations(t.captured(c)))
        .collect();
    assert_eq!(
        seen[0],
        ["ff:ff:ff:ff:ff:ff", "02:00:00:00:00:99", b_mac],
        "b sees broadcast, unknown and its own unicast"
    );
    assert_eq!(
        seen[1],
        ["ff:ff:ff:ff:ff:ff", "02:00:00:00:00:99"],
        "c sees the floods but not b's unicast"
    );
    assert!(
        seen[2].is_empty(),
        "another network sees nothing: {:?}",
        seen[2]
    );
}

#[test]
fn malformed_frames_are_dropped_and_counted() {
    let mut t = Tapnet::new("malformed");
    t.ok(&["network", "create", "n"]);
    t.ok(&["sandbox", "create", "a", "--net", "n"]);
    t.ok(&["sandbox", "create", "b", "--net", "n"]);
    let on_b = t.spawn_capture("b", "eth0", &["ether", "proto", "0x88b5"]);
    raw_send(
        &t,
        "a",
        &[
            // Group (multicast) source address.
            frame(
                "ff:ff:ff:ff:ff:ff",
                "01:00:5e:00:00:01",
                EXPERIMENTAL_ETHERTYPE,
                46,
            ),
            // All-zero source address.
            frame(
                "ff:ff:ff:ff:ff:ff",
                "00:00:00:00:00:00",
                EXPERIMENTAL_ETHERTYPE,
                46,
            ),
            // Broadcast source address.
            frame(
                "02:42:ac:12:00:03",
                "ff:ff:ff:ff:ff:ff",
                EXPERIMENTAL_ETHERTYPE,
                46,
            ),
            // Positive control: a good frame, which b's capture must see.
            frame(
                "ff:ff:ff:ff:ff:ff",
                "02:42:ac:12:00:02",
                EXPERIMENTAL_ETHERTYPE,
                47,
            ),
        ],
    );
    assert!(wait_until(Duration::from_secs(3), || port_stats(
        &t, "a/eth0"
    )["rx_malformed"]
        == 3));
    // Header lines only (tcpdump prints the payload of unknown ethertypes on tab-led lines).
    let seen: Vec<String> = t
        .captured(on_b)
        .into_iter()
        .filter(|l| !l.starts_with('\t'))
        .collect();
    assert_eq!(
        seen.len(),
        1,
        "b got the good frame and none of the malformed ones: {seen:?}"
    );
    assert!(seen[0].contains("02:42:ac:12:00:02"), "{seen:?}");
    assert!(t.ping("a", "172.18.0.3"), "the switch carries on");
    let fdb = t.json(&["fdb", "n"]).to_string();
    assert!(
        !fdb.contains("01:00:5e") && !fdb.contains("00:00:00:00:00:00"),
        "{fdb}"
    );
}

#[test]
fn frames_over_the_network_mtu_are_dropped_and_counted() {
    let t = Tapnet::new("oversize");
    t.ok(&["network", "create", "n", "--mtu", "1500"]);
    t.ok(&["sandbox", "create", "a", "--net", "n"]);
    t.ok(&["sandbox", "create", "b", "--net", "n"]);
    assert!(t.ping("a", "172.18.0.3"));
    // a lies about its MTU; the switch holds the network's.
    t.exec_ok("a", &["ip", "link", "set", "eth0", "mtu", "9000"]);
    let out = t.exec(
        "a",
        &[
            "ping",
            "-c",
            "2",
            "-W",
            "1",
            "-M",
            "do",
            "-s",
            "3000",
            "172.18.0.3",
        ],
    );
    assert!(!out.status.success());
    assert_eq!(port_stats(&t, "a/eth0")["rx_oversize"], 2);
    assert!(
        t.exec(
            "a",
            &["ping", "-c", "1", "-W", "1", "-s", "1472", "172.18.0.3"]
        )
        .status
        .success()
    );
}

#[test]
fn jumbo_mtu_carries_tcp_and_large_pings() {
    let mut t = Tapnet::new("jumbo");
    t.ok(&["network", "create", "big", "--mtu", "65520"]);
    t.ok(&["sandbox", "create", "a", "--net", "big"]);
    t.ok(&["sandbox", "create", "b", "--net", "big"]);
    let link = t.exec_ok("a", &["ip", "-o", "link", "show", "eth0"]);
    assert!(link.contains("mtu 65520"), "{link}");
    assert!(
        t.exec(
            "a",
            &[
                "ping",
                "-c",
                "2",
                "-W",
                "1",
                "-M",
                "do",
                "-s",
                "65000",
                "172.18.0.3"
            ]
        )
        .status
        .success()
    );
    let (sent, received) = t.tcp_transfer("a", "b", "172.18.0.3", 20 << 20);
    assert_eq!(sent, received);
}

/// Start `tapnet daemon ARGS` for `t` in the background and wait until it answers.
fn start_daemon(t: &Tapnet, args: &[&str]) -> Child {
    let mut full = vec!["daemon"];
    full.extend(args);
    let child = t
        .command(&full)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("daemon");
    assert!(wait_until(Duration::from_secs(5), || t
        .dir
        .join("tapnet.sock")
        .exists()));
    child
}

fn ethtool_feature(t: &Tapnet, sandbox: &str, feature: &str) -> String {
    let out = t.exec_ok(sandbox, &["ethtool", "-k", "eth0"]);
    out.lines()
        .find(|l| l.trim_start().starts_with(&format!("{feature}:")))
        .unwrap_or_else(|| panic!("{feature} not in {out}"))
        .to_string()
}

#[test]
fn offloads_off_for_the_daemon_with_one_datapath_thread() {
    let mut t = Tapnet::new("nooffload");
    let mut daemon = start_daemon(&t, &["--offload", "off", "--datapath-threads", "1"]);
    t.ok(&["network", "create", "n"]);
    t.ok(&["sandbox", "create", "a", "--net", "n"]);
    t.ok(&["sandbox", "create", "b", "--net", "n"]);
    assert!(ethtool_feature(&t, "a", "tcp-segmentation-offload").ends_with("off"));
    let (sent, received) = t.tcp_transfer("a", "b", "172.18.0.3", 10 << 20);
    assert_eq!(sent, received);
    let _ = Command::new("kill").arg(daemon.id().to_string()).status();
    let _ = daemon.wait();
}

#[test]
fn offloads_per_network() {
    let mut t = Tapnet::new("netoffload");
    t.ok(&["network", "create", "plain", "--offload", "off"]);
    t.ok(&["network", "create", "fast"]);
    t.ok(&["sandbox", "create", "a", "--net", "plain"]);
    t.ok(&["sandbox", "create", "b", "--net", "plain"]);
    t.ok(&["network", "connect", "fast", "a"]);
    assert_eq!(t.json(&["network", "inspect", "plain"])["offload"], false);
    assert!(ethtool_feature(&t, "b", "tcp-segmentation-offload").ends_with("off"));
    let on = t.exec_ok("a", &["ethtool", "-k", "eth1"]);
    assert!(on.contains("tcp-segmentation-offload: on"), "{on}");
    let (sent, received) = t.tcp_transfer("a", "b", "172.18.0.3", 10 << 20);
    assert_eq!(sent, received);
}

/// Frames each datapath thread has read so far (`tapnet info`).
fn frames_read(t: &Tapnet) -> Vec<u64> {
    t.json(&["info"])["frames_read"]
        .as_array()
        .expect("frames_read")
        .iter()
        .map(|v| v.as_u64().expect("a count"))
        .collect()
}

/// Frames each thread read while sandbox a pinged b `count` times.
fn frames_read_during_pings(t: &Tapnet, count: usize) -> Vec<u64> {
    let before = frames_read(t);
    let n = count.to_string();
    t.exec_ok("a", &["ping", "-c", &n, "-i", "0.01", "-q", "172.18.0.3"]);
    frames_read(t)
        .iter()
        .zip(&before)
        .map(|(after, before)| after - before)
        .collect()
}

fn queues_of_eth0(t: &Tapnet, sandbox: &str) -> Vec<String> {
    let out = t.exec_ok(sandbox, &["ls", "/sys/class/net/eth0/queues"]);
    out.split_whitespace().map(str::to_string).collect()
}

#[test]
fn a_reply_comes_back_to_the_thread_that_forwarded_the_request() {
    const PINGS: usize = 60;
    // Multi-queue TAPs (the default): tun's flow table puts b's reply on the queue the
    // request was written through, which the same thread polls.
    let mut t = Tapnet::new("mq");
    let mut daemon = start_daemon(&t, &["--datapath-threads", "2"]);
    assert_eq!(t.json(&["info"])["tap_queues"], 2);
    t.ok(&["network", "create", "n"]);
    t.ok(&["sandbox", "create", "a", "--net", "n"]);
    t.ok(&["sandbox", "create", "b", "--net", "n"]);
    assert_eq!(queues_of_eth0(&t, "a"), ["rx-0", "rx-1", "tx-0", "tx-1"]);
    assert!(t.ping("a", "172.18.0.3"));
    let read = frames_read_during_pings(&t, PINGS);
    let (most, least) = (read.iter().max(), read.iter().min());
    assert!(
        most >= Some(&(2 * PINGS as u64)) && least <= Some(&(PINGS as u64 / 10)),
        "one thread should read both the requests and the replies: {read:?}"
    );
    let (sent, received) = t.tcp_transfer("a", "b", "172.18.0.3", 10 << 20);
    assert_eq!(sent, received);
    let _ = Command::new("kill").arg(daemon.id().to_string()).status();
    let _ = daemon.wait();

    // Positive control: single-queue TAPs, a's port polled by one thread and b's by the
    // other, so each thread reads one frame of every round trip.
    let t = Tapnet::new("sq");
    let mut daemon = start_daemon(&t, &["--datapath-threads", "2", "--tap-queues", "single"]);
    assert_eq!(t.json(&["info"])["tap_queues"], 1);
    t.ok(&["network", "create", "n"]);
    t.ok(&["sandbox", "create", "a", "--net", "n"]);
    t.ok(&["sandbox", "create", "b", "--net", "n"]);
    assert_eq!(queues_of_eth0(&t, "a"), ["rx-0", "tx-0"]);
    assert!(t.ping("a", "172.18.0.3"));
    let read = frames_read_during_pings(&t, PINGS);
    assert!(
        read.iter().all(|&n| n >= PINGS as u64),
        "each thread should read one side of every round trip: {read:?}"
    );
    let _ = Command::new("kill").arg(daemon.id().to_string()).status();
    let _ = daemon.wait();
}

/// The daemon's user + system CPU time so far, in clock ticks (/proc/PID/stat).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("daemon stat");
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').expect("stat format").1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

#[test]
fn an_idle_daemon_uses_no_cpu_after_traffic() {
    let mut t = Tapnet::new("idle");
    let mut daemon = start_daemon(&t, &[]);
    t.ok(&["network", "create", "n"]);
    t.ok(&["sandbox", "create", "a", "--net", "n"]);
    t.ok(&["sandbox", "create", "b", "--net", "n"]);
    // Positive control: forwarding shows up in the same counter.
    let before = cpu_ticks(daemon.id());
    let (sent, received) = t.tcp_transfer("a", "b", "172.18.0.3", 256 << 20);
    assert_eq!(sent, received);
    let busy = cpu_ticks(daemon.id()) - before;
    assert!(busy >= 3, "a 256 MiB transfer cost the daemon {busy} ticks");
    // Short gaps open the workers' spin windows; idle, they must close and the threads sleep.
    t.exec_ok(
        "a",
        &["ping", "-c", "50", "-i", "0.002", "-q", "172.18.0.3"],
    );
    std::thread::sleep(Duration::from_millis(500));
    let before = cpu_ticks(daemon.id());
    std::thread::sleep(Duration::from_secs(5));
    let idle = cpu_ticks(daemon.id()) - before;
    // A spinning worker takes hundreds; the gateways' timers and tick sampling, on a machine
    // busy with the other tests, have shown up to 2 (0.4 % of a core).
    assert!(idle <= 2, "the idle daemon used {idle} ticks in 5 s");
    let _ = Command::new("kill").arg(daemon.id().to_string()).status();
    let _ = daemon.wait();
}

#[test]
fn a_sandbox_deleting_its_interface_does_not_busy_the_daemon() {
    let mut t = Tapnet::new("deleted");
    let mut daemon = start_daemon(&t, &[]);
    t.ok(&["network", "create", "n"]);
    for s in ["a", "b", "c"] {
        t.ok(&["sandbox", "create", s, "--net", "n"]);
    }
    assert!(t.ping("a", "172.18.0.3"));
    // Positive control: forwarding shows up in the counter the assertion below reads.
    let before = cpu_ticks(daemon.id());
    let (sent, received) = t.tcp_transfer("b", "c", "172.18.0.4", 256 << 20);
    assert_eq!(sent, received);
    let busy = cpu_ticks(daemon.id()) - before;
    assert!(busy >= 3, "a 256 MiB transfer cost the daemon {busy} ticks");
    // The TAP's fds now fail with EBADFD and stay readable to a level-triggered poll.
    t.exec_ok("a", &["ip", "link", "del", "eth0"]);
    std::thread::sleep(Duration::from_millis(500));
    let before = cpu_ticks(daemon.id());
    std::thread::sleep(Duration::from_secs(3));
    let spent = cpu_ticks(daemon.id()) - before;
    assert!(
        spent <= 2,
        "the daemon used {spent} ticks in 3 s after a's TAP went (spinning on it took 425)"
    );
    assert!(t.ping("b", "172.18.0.4"), "the others still switch");
    t.ok(&["sandbox", "rm", "a"]);
    let _ = Command::new("kill").arg(daemon.id().to_string()).status();
    let _ = daemon.wait();
}
