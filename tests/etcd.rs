//! The cluster store (`daemon --store etcd://...`) against a real etcd server on loopback:
//! networks made on one host appear on the other, addresses are claimed cluster-wide, sandboxes
//! on two hosts ping and resolve each other by name, a host killed with `kill -9` leaves the
//! other's tables when its lease ends, and both hosts ride through a store restart. Each test
//! starts its own etcd (free loopback ports, a temp data dir, killed on drop) and daemons whose
//! VTEPs bind loopback addresses of their own. Without etcd installed the tests fail, unless
//! `TAPNET_TEST_SKIP` names `etcd` (see tests/common/skip.rs).

mod common;

#[cfg(feature = "etcd")]
mod with_store {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::path::PathBuf;
    use std::process::{Child, Command, Stdio};
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use nix::sys::signal::Signal;

    use super::common::{Tapnet, skip, wait_until};

    static NEXT: AtomicU32 = AtomicU32::new(2);

    /// A loopback address no other test of this run uses (port 4789 is free on each).
    fn loopback() -> String {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        format!("127.79.{}.{n}", std::process::id() % 250)
    }

    /// Standard base64 with padding (etcd's JSON gateway takes keys so).
    fn base64(bytes: &[u8]) -> String {
        const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(char::from(ABC[(n >> (18 - 6 * i) & 63) as usize]));
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free loopback port")
    }

    /// A real etcd server on loopback, killed (and its data dir removed) on drop.
    struct Etcd {
        child: Option<Child>,
        dir: PathBuf,
        client: u16,
        peer: u16,
        /// An address it serves clients on besides 127.0.0.1 (another host's way to it).
        also_on: Option<String>,
    }

    impl Etcd {
        /// None when etcd is missing and `TAPNET_TEST_SKIP` names `etcd` (the skip is said and
        /// logged); a missing etcd otherwise fails the test.
        fn start(tag: &str) -> Option<Etcd> {
            Etcd::start_on(tag, None)
        }

        /// As `start`, serving clients on `also_on` too.
        fn start_on(tag: &str, also_on: Option<&str>) -> Option<Etcd> {
            if !skip::require("etcd", &[skip::need("etcd", "etcd-server")]) {
                return None;
            }
            let dir =
                std::env::temp_dir().join(format!("tapnet-etcd-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let mut etcd = Etcd {
                child: None,
                dir,
                client: free_port(),
                peer: free_port(),
                also_on: also_on.map(str::to_string),
            };
            etcd.run();
            Some(etcd)
        }

        fn url(&self) -> String {
            format!("etcd://127.0.0.1:{}", self.client)
        }

        /// Its URL for a host that reaches it at `ip` (`also_on`).
        fn url_on(&self, ip: &str) -> String {
            format!("etcd://{ip}:{}", self.client)
        }

        /// Start (again) on the same data dir and ports; waits until it is healthy.
        fn run(&mut self) {
            let mut client = format!("http://127.0.0.1:{}", self.client);
            if let Some(ip) = &self.also_on {
                client.push_str(&format!(",http://{ip}:{}", self.client));
            }
            let peer = format!("http://127.0.0.1:{}", self.peer);
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.with_extension("log"))
                .expect("etcd log");
            let child = Command::new("etcd")
                .arg("--data-dir")
                .arg(&self.dir)
                .args(["--listen-client-urls", &client])
                .args(["--advertise-client-urls", &client])
                .args(["--listen-peer-urls", &peer])
                .args(["--initial-advertise-peer-urls", &peer])
                .args(["--initial-cluster", &format!("default={peer}")])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start etcd");
            self.child = Some(child);
            assert!(
                wait_until(Duration::from_secs(20), || self.healthy()),
                "etcd on port {} did not become healthy",
                self.client
            );
        }

        fn healthy(&self) -> bool {
            let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.client)) else {
                return false;
            };
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
            let mut body = String::new();
            let _ = s.read_to_string(&mut body);
            body.contains("\"health\":\"true\"")
        }

        /// How many keys the store holds under `prefix` (etcd's JSON gateway, `count_only`).
        fn count(&self, prefix: &str) -> u64 {
            let mut end = prefix.as_bytes().to_vec();
            if let Some(last) = end.last_mut() {
                *last += 1;
            }
            let body = format!(
                r#"{{"key":"{}","range_end":"{}","count_only":true}}"#,
                base64(prefix.as_bytes()),
                base64(&end)
            );
            let mut s = TcpStream::connect(("127.0.0.1", self.client)).expect("etcd");
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let request = format!(
                "POST /v3/kv/range HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            s.write_all(request.as_bytes()).expect("etcd request");
            let mut answer = String::new();
            let _ = s.read_to_string(&mut answer);
            let json = answer.split("\r\n\r\n").nth(1).unwrap_or("");
            let v: serde_json::Value =
                serde_json::from_str(json).unwrap_or_else(|e| panic!("etcd said {answer}: {e}"));
            // Counts are strings in etcd's JSON (int64), absent when 0.
            v["count"]
                .as_str()
                .map_or(0, |c| c.parse().expect("a count"))
        }

        fn kill(&mut self) {
            if let Some(mut c) = self.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    impl Drop for Etcd {
        fn drop(&mut self) {
            self.kill();
            if std::thread::panicking() {
                let log =
                    std::fs::read_to_string(self.dir.with_extension("log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                eprintln!(
                    "--- etcd log (last lines, newest first) ---\n{}",
                    tail.join("\n")
                );
            }
            let _ = std::fs::remove_dir_all(&self.dir);
            let _ = std::fs::remove_file(self.dir.with_extension("log"));
        }
    }

    /// A second host's network namespace, joined to the test's by a veth pair: 10.250.N.1/30 on
    /// this side, 10.250.N.2/30 inside, no other route. Deleted on drop.
    struct HostLink {
        netns: String,
        veth: String,
        near: String,
        far: String,
    }

    impl HostLink {
        fn new() -> HostLink {
            let pid = std::process::id();
            let n = pid % 250;
            let link = HostLink {
                netns: format!("tnhost-{pid}"),
                veth: format!("tnv{}", pid % 10_000_000),
                near: format!("10.250.{n}.1"),
                far: format!("10.250.{n}.2"),
            };
            let ip = |args: &[&str]| {
                let ok = Command::new("ip")
                    .args(args)
                    .status()
                    .is_ok_and(|s| s.success());
                assert!(ok, "ip {args:?}");
            };
            ip(&["netns", "add", &link.netns]);
            ip(&[
                "link",
                "add",
                &link.veth,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &link.netns,
            ]);
            ip(&[
                "addr",
                "add",
                &format!("{}/30", link.near),
                "dev",
                &link.veth,
            ]);
            ip(&["link", "set", &link.veth, "up"]);
            let inside = |args: &[&str]| {
                let mut full = vec!["-n", link.netns.as_str()];
                full.extend_from_slice(args);
                ip(&full);
            };
            inside(&["addr", "add", &format!("{}/30", link.far), "dev", "eth0"]);
            inside(&["link", "set", "eth0", "up"]);
            inside(&["link", "set", "lo", "up"]);
            link
        }
    }

    impl Drop for HostLink {
        fn drop(&mut self) {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.netns])
                .status();
            let _ = Command::new("ip")
                .args(["link", "del", &self.veth])
                .stderr(Stdio::null())
                .status();
        }
    }

    /// One host: a daemon with the store and its own VTEP.
    struct Host {
        t: Tapnet,
        vtep: String,
        daemon: Option<Child>,
        /// The store's URL as this host reaches it.
        store: String,
        /// The network namespace its daemon runs in (none: the test's own).
        netns: Option<String>,
    }

    impl Host {
        fn new(tag: &str, etcd: &Etcd) -> Host {
            Host::with_env(tag, etcd, &[])
        }

        /// A host whose daemon has `env` set (test hooks).
        fn with_env(tag: &str, etcd: &Etcd, env: &[(&str, &str)]) -> Host {
            Host::start(tag, etcd, env, "3s")
        }

        /// A host whose daemon has `env` set and a lease of `lease`.
        fn start(tag: &str, etcd: &Etcd, env: &[(&str, &str)], lease: &str) -> Host {
            Host::start_in(tag, None, &loopback(), &etcd.url(), env, lease)
        }

        /// A host whose daemon runs in `netns` (if any) with its VTEP on `vtep` and the store
        /// at `store`.
        fn start_in(
            tag: &str,
            netns: Option<&str>,
            vtep: &str,
            store: &str,
            env: &[(&str, &str)],
            lease: &str,
        ) -> Host {
            let t = Tapnet::new(tag);
            std::fs::create_dir_all(&t.dir).expect("state dir");
            let mut host = Host {
                t,
                vtep: format!("{vtep}:4789"),
                daemon: None,
                store: store.to_string(),
                netns: netns.map(str::to_string),
            };
            host.spawn(env, lease);
            host
        }

        /// Start the host's daemon (again: same state dir and VTEP) and wait for its socket.
        fn spawn(&mut self, env: &[(&str, &str)], lease: &str) {
            let vtep = self.vtep.trim_end_matches(":4789").to_string();
            let _ = std::fs::remove_file(self.t.dir.join("tapnet.sock"));
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.t.dir.join("daemon.log"))
                .expect("daemon log");
            let mut cmd = self.t.command(&[
                "daemon",
                "--vtep",
                &vtep,
                "--store",
                &self.store,
                "--store-lease",
                lease,
            ]);
            if let Some(ns) = &self.netns {
                // The same command, run by `ip netns exec` in the host's namespace.
                let mut inner = Command::new("ip");
                inner
                    .args(["netns", "exec", ns])
                    .arg(cmd.get_program())
                    .args(cmd.get_args());
                for (k, v) in cmd.get_envs() {
                    if let Some(v) = v {
                        inner.env(k, v);
                    }
                }
                cmd = inner;
            }
            let daemon = cmd
                .envs(env.iter().copied())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("daemon");
            assert!(
                wait_until(Duration::from_secs(10), || self
                    .t
                    .dir
                    .join("tapnet.sock")
                    .exists()),
                "daemon of {} did not start: {}",
                self.t.dir.display(),
                std::fs::read_to_string(self.t.dir.join("daemon.log")).unwrap_or_default()
            );
            self.daemon = Some(daemon);
        }

        fn ip_of(&self, sandbox: &str) -> String {
            let v = self.t.json(&["sandbox", "inspect", sandbox]);
            let cidr = v["interfaces"][0]["ipv4"]
                .as_str()
                .unwrap_or("")
                .to_string();
            cidr.split('/').next().unwrap_or("").to_string()
        }

        /// Sandbox names of the network's remote endpoints, with their host.
        fn remote_endpoints(&self, net: &str) -> Vec<(String, String)> {
            let v = self.t.json(&["network", "inspect", net]);
            v["overlay"]["remote_endpoints"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|e| {
                            (
                                e["sandbox"].as_str().unwrap_or("").to_string(),
                                e["host"].as_str().unwrap_or("").to_string(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default()
        }

        fn sees(&self, net: &str, sandbox: &str) -> bool {
            self.remote_endpoints(net).iter().any(|(s, _)| s == sandbox)
        }

        fn getent(&self, sandbox: &str, name: &str) -> Option<String> {
            let out = self.t.exec(sandbox, &["getent", "hosts", name]);
            out.status.success().then(|| {
                String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_string()
            })
        }
    }

    impl Drop for Host {
        fn drop(&mut self) {
            if let Some(mut d) = self.daemon.take() {
                // A daemon still running stops cleanly at the Tapnet's reset; reap it after.
                if let Ok(None) = d.try_wait() {
                    let _ = self
                        .t
                        .command(&["--no-autostart", "system", "reset"])
                        .output();
                }
                let _ = d.kill();
                let _ = d.wait();
            }
        }
    }

    fn overlay_on(h: &Host, name: &str, subnet: &str) {
        h.t.ok(&[
            "network", "create", name, "--driver", "overlay", "--subnet", subnet,
        ]);
    }

    #[test]
    fn a_network_made_on_one_host_works_on_the_other_with_names_and_unique_addresses() {
        let Some(etcd) = Etcd::start("share") else {
            return;
        };
        let a = Host::new("etcd-a", &etcd);
        let b = Host::new("etcd-b", &etcd);
        overlay_on(&a, "ov", "10.91.0.0/24");
        assert!(
            wait_until(Duration::from_secs(10), || b
                .t
                .network_names()
                .contains(&"ov".to_string())),
            "the network made on host A did not appear on host B"
        );
        let vni_a = a.t.json(&["network", "inspect", "ov"])["vni"].clone();
        assert_eq!(b.t.json(&["network", "inspect", "ov"])["vni"], vni_a);
        // Both hosts hand out addresses at once: every one differs.
        std::thread::scope(|s| {
            for (h, prefix) in [(&a, "a"), (&b, "b")] {
                s.spawn(move || {
                    for i in 1..=3 {
                        h.t.ok(&["sandbox", "create", &format!("{prefix}{i}"), "--net", "ov"]);
                    }
                });
            }
        });
        let mut ips: Vec<String> = (1..=3)
            .flat_map(|i| [a.ip_of(&format!("a{i}")), b.ip_of(&format!("b{i}"))])
            .collect();
        assert!(ips.iter().all(|ip| ip.starts_with("10.91.0.")), "{ips:?}");
        ips.sort();
        ips.dedup();
        assert_eq!(ips.len(), 6, "two hosts handed out one address: {ips:?}");
        // The other host's endpoints are known from the store, with their host, before any
        // frame crossed.
        assert!(wait_until(Duration::from_secs(10), || (1..=3).all(|i| a
            .sees("ov", &format!("b{i}"))
            && b.sees("ov", &format!("a{i}")))));
        assert!(
            a.remote_endpoints("ov")
                .iter()
                .all(|(_, host)| *host == b.vtep),
            "{:?} should all be on {}",
            a.remote_endpoints("ov"),
            b.vtep
        );
        let (ip_a1, ip_b1) = (a.ip_of("a1"), b.ip_of("b1"));
        assert!(a.t.ping("a1", &ip_b1), "a1 -> b1 {ip_b1}");
        assert!(b.t.ping("b1", &ip_a1), "b1 -> a1 {ip_a1}");
        // ARP for a remote address the store knows is answered by the local VTEP.
        let answered = |h: &Host| {
            h.t.json(&["network", "inspect", "ov"])["overlay"]["arp_answered"]
                .as_u64()
                .unwrap_or(0)
        };
        let before = answered(&a);
        let ip_b2 = b.ip_of("b2");
        assert!(a.t.ping("a2", &ip_b2), "a2 -> b2 {ip_b2}");
        assert!(
            answered(&a) > before,
            "a2's ARP for {ip_b2} was not answered locally"
        );
        assert_eq!(
            a.getent("a1", "b2").as_deref(),
            Some(b.ip_of("b2").as_str())
        );
        assert_eq!(
            b.getent("b3", "a3.ov").as_deref(),
            Some(a.ip_of("a3").as_str())
        );
        // Negative beside it: a name nobody has does not resolve.
        assert_eq!(a.getent("a1", "nobody-here"), None);
        // A removed sandbox leaves the other host's table and frees its address.
        b.t.ok(&["sandbox", "rm", "b3"]);
        assert!(wait_until(Duration::from_secs(10), || !a.sees("ov", "b3")));
        assert!(a.sees("ov", "b2"), "the others stay");
    }

    /// The sandbox's IPv6 address (without the prefix length).
    fn ip6_of(h: &Host, sandbox: &str) -> String {
        let v = h.t.json(&["sandbox", "inspect", sandbox]);
        let cidr = v["interfaces"][0]["ipv6"]
            .as_str()
            .unwrap_or("")
            .to_string();
        cidr.split('/').next().unwrap_or("").to_string()
    }

    #[test]
    fn dual_stack_overlay_addresses_of_both_families_are_claimed_cluster_wide() {
        let Some(etcd) = Etcd::start("dual") else {
            return;
        };
        let a = Host::new("etcd-6a", &etcd);
        let b = Host::new("etcd-6b", &etcd);
        a.t.ok(&[
            "network",
            "create",
            "ov",
            "--driver",
            "overlay",
            "--subnet",
            "10.92.0.0/24",
            "--ipv6",
            "--subnet",
            "fd92::/64",
        ]);
        assert!(
            wait_until(Duration::from_secs(10), || b
                .t
                .network_names()
                .contains(&"ov".to_string())),
            "the network made on host A did not appear on host B"
        );
        // Both hosts hand out addresses at once: no two alike in either family.
        std::thread::scope(|s| {
            for (h, prefix) in [(&a, "a"), (&b, "b")] {
                s.spawn(move || {
                    for i in 1..=3 {
                        h.t.ok(&["sandbox", "create", &format!("{prefix}{i}"), "--net", "ov"]);
                    }
                });
            }
        });
        let mut v6: Vec<String> = (1..=3)
            .flat_map(|i| [ip6_of(&a, &format!("a{i}")), ip6_of(&b, &format!("b{i}"))])
            .collect();
        assert!(v6.iter().all(|ip| ip.starts_with("fd92::")), "{v6:?}");
        v6.sort();
        v6.dedup();
        assert_eq!(v6.len(), 6, "two hosts handed out one IPv6 address: {v6:?}");
        let mut v4: Vec<String> = (1..=3)
            .flat_map(|i| [a.ip_of(&format!("a{i}")), b.ip_of(&format!("b{i}"))])
            .collect();
        v4.sort();
        v4.dedup();
        assert_eq!(v4.len(), 6, "two hosts handed out one IPv4 address: {v4:?}");

        assert!(wait_until(Duration::from_secs(10), || (1..=3).all(|i| a
            .sees("ov", &format!("b{i}"))
            && b.sees("ov", &format!("a{i}")))));
        // IPv6 across the hosts (Neighbour Discovery flooded to the store's peers), and the
        // other host's sandboxes in DNS with their IPv6 address (AAAA).
        let (a1, b1) = (ip6_of(&a, "a1"), ip6_of(&b, "b1"));
        let ping6 = |h: &Host, sb: &str, ip: &str| {
            h.t.exec(sb, &["ping", "-6", "-c", "2", "-i", "0.2", "-W", "1", ip])
                .status
                .success()
        };
        let nd_answered = |h: &Host| {
            h.t.json(&["network", "inspect", "ov"])["overlay"]["nd_answered"]
                .as_u64()
                .unwrap_or(0)
        };
        let before = nd_answered(&a);
        assert!(ping6(&a, "a1", &b1), "a1 -> b1 {b1}");
        assert!(ping6(&b, "b1", &a1), "b1 -> a1 {a1}");
        // a1's Neighbour Solicitation for b1's address was answered by its own host's VTEP.
        assert!(
            nd_answered(&a) > before,
            "a1's solicitation for {b1} was not answered locally"
        );
        // The store's record of b1 carries its IPv6 address.
        let v = a.t.json(&["network", "inspect", "ov"]);
        let eps = v["overlay"]["remote_endpoints"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            eps.iter()
                .any(|e| e["sandbox"] == "b1" && e["ipv6"] == b1.as_str()),
            "{v}"
        );
        let aaaa = |h: &Host, sb: &str, name: &str| {
            let out = h.t.exec(sb, &["getent", "ahostsv6", name]);
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_string()
        };
        assert_eq!(aaaa(&a, "a2", "b2"), ip6_of(&b, "b2"));
        assert_eq!(aaaa(&b, "b3", "a3.ov"), ip6_of(&a, "a3"));

        // An IPv6 address another host holds is refused, naming it; a free one is taken.
        let err =
            b.t.fails(&["sandbox", "create", "x", "--net", "ov", "--ip6", &a1]);
        assert!(err.contains(&a1), "{err}");
        b.t.ok(&["sandbox", "create", "y", "--net", "ov", "--ip6", "fd92::77"]);
        assert_eq!(ip6_of(&b, "y"), "fd92::77");
        // Removed, its IPv6 address is free for the other host.
        b.t.ok(&["sandbox", "rm", "y"]);
        assert!(wait_until(Duration::from_secs(10), || !a.sees("ov", "y")));
        a.t.ok(&["sandbox", "create", "z", "--net", "ov", "--ip6", "fd92::77"]);
        assert_eq!(ip6_of(&a, "z"), "fd92::77");
    }

    /// An IPv6-only overlay network in the store: its endpoints are known (and claimed) by
    /// their IPv6 address. Both hosts hand out addresses at once, none twice; they reach each
    /// other over IPv6 and by name (AAAA); an address the other host holds is refused.
    #[test]
    fn ipv6_only_overlay_addresses_are_claimed_cluster_wide() {
        let Some(etcd) = Etcd::start("only6") else {
            return;
        };
        let a = Host::new("etcd-o6a", &etcd);
        let b = Host::new("etcd-o6b", &etcd);
        a.t.ok(&[
            "network",
            "create",
            "ov6",
            "--driver",
            "overlay",
            "--ipv6",
            "--no-ipv4",
            "--subnet",
            "fd93::/64",
        ]);
        assert!(
            wait_until(Duration::from_secs(10), || b
                .t
                .network_names()
                .contains(&"ov6".to_string())),
            "the network made on host A did not appear on host B"
        );
        std::thread::scope(|s| {
            for (h, prefix) in [(&a, "a"), (&b, "b")] {
                s.spawn(move || {
                    for i in 1..=3 {
                        h.t.ok(&["sandbox", "create", &format!("{prefix}{i}"), "--net", "ov6"]);
                    }
                });
            }
        });
        let mut v6: Vec<String> = (1..=3)
            .flat_map(|i| [ip6_of(&a, &format!("a{i}")), ip6_of(&b, &format!("b{i}"))])
            .collect();
        assert!(v6.iter().all(|ip| ip.starts_with("fd93::")), "{v6:?}");
        v6.sort();
        v6.dedup();
        assert_eq!(v6.len(), 6, "two hosts handed out one IPv6 address: {v6:?}");
        assert_eq!(a.ip_of("a1"), "", "no IPv4 address on an IPv6-only network");
        assert!(wait_until(Duration::from_secs(10), || (1..=3).all(|i| a
            .sees("ov6", &format!("b{i}"))
            && b.sees("ov6", &format!("a{i}")))));
        let (a1, b1) = (ip6_of(&a, "a1"), ip6_of(&b, "b1"));
        let ping6 = |h: &Host, sb: &str, ip: &str| {
            h.t.exec(sb, &["ping", "-6", "-c", "2", "-i", "0.2", "-W", "1", ip])
                .status
                .success()
        };
        assert!(ping6(&a, "a1", &b1), "a1 -> b1 {b1}");
        assert!(ping6(&b, "b2", &a1), "b2 -> a1 {a1}");
        let v = a.t.json(&["network", "inspect", "ov6"]);
        let eps = v["overlay"]["remote_endpoints"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            eps.iter().any(|e| e["sandbox"] == "b1"
                && e["ipv6"] == b1.as_str()
                && e.get("ipv4").is_none()),
            "{v}"
        );
        let out = a.t.exec("a2", &["getent", "ahostsv6", "b1"]);
        let got = String::from_utf8_lossy(&out.stdout);
        assert_eq!(got.split_whitespace().next(), Some(b1.as_str()), "{got}");
        let err =
            b.t.fails(&["sandbox", "create", "x", "--net", "ov6", "--ip6", &a1]);
        assert!(err.contains(&a1), "{err}");
        // Removed, its address is free for the other host.
        let b3 = ip6_of(&b, "b3");
        b.t.ok(&["sandbox", "rm", "b3"]);
        assert!(wait_until(Duration::from_secs(10), || !a.sees("ov6", "b3")));
        a.t.ok(&["sandbox", "create", "z", "--net", "ov6", "--ip6", &b3]);
        assert_eq!(ip6_of(&a, "z"), b3);
    }

    #[test]
    fn a_host_killed_with_kill_9_leaves_the_other_hosts_table_when_its_lease_ends() {
        let Some(etcd) = Etcd::start("lease") else {
            return;
        };
        let a = Host::new("etcd-la", &etcd);
        let b = Host::new("etcd-lb", &etcd);
        overlay_on(&a, "ov", "10.92.0.0/24");
        assert!(wait_until(Duration::from_secs(10), || b
            .t
            .network_names()
            .contains(&"ov".to_string())));
        a.t.ok(&["sandbox", "create", "a", "--net", "ov"]);
        b.t.ok(&["sandbox", "create", "b", "--net", "ov"]);
        // Positive control: the endpoint is there while its host lives.
        assert!(wait_until(Duration::from_secs(10), || a.sees("ov", "b")));
        assert!(a.t.ping("a", &b.ip_of("b")));
        std::thread::sleep(Duration::from_secs(4));
        assert!(
            a.sees("ov", "b"),
            "a live host's endpoint stays past its lease's TTL"
        );
        b.t.stop_daemon(Signal::SIGKILL);
        assert!(
            wait_until(Duration::from_secs(15), || !a.sees("ov", "b")),
            "the dead host's endpoint is still listed: {:?}",
            a.remote_endpoints("ov")
        );
        assert_eq!(a.getent("a", "b"), None, "its name left the gateway too");
    }

    /// Two hosts create different networks with one VNI at the same instant: the store's
    /// transaction (the name's key and the VNI's, both absent) has one winner, the other gets
    /// one clear error naming the VNI, and no host ends up with both. Removed, the VNI is free.
    #[test]
    fn one_vni_created_on_two_hosts_at_once_has_one_winner() {
        let Some(etcd) = Etcd::start("vnirace") else {
            return;
        };
        let a = Host::new("etcd-va", &etcd);
        // B's store requests wait 500 ms first: its create still holds the VNI when A's
        // network comes from the store, which B must make once its own create lost.
        let b = Host::with_env("etcd-vb", &etcd, &[("TAPNET_TEST_SLOW_STORE_MS", "500")]);
        for round in 0..3u32 {
            let vni = (4242 + round).to_string();
            let (x, y) = (format!("x{round}"), format!("y{round}"));
            let create = |h: &Host, name: &str, subnet: &str| {
                h.t.run(&[
                    "network", "create", name, "--driver", "overlay", "--vni", &vni, "--subnet",
                    subnet,
                ])
            };
            let (ra, rb) = std::thread::scope(|s| {
                let ta = s.spawn(|| create(&a, &x, &format!("10.93.{round}.0/24")));
                let tb = s.spawn(|| create(&b, &y, &format!("10.94.{round}.0/24")));
                (ta.join().expect("a"), tb.join().expect("b"))
            });
            assert!(
                ra.status.success() != rb.status.success(),
                "round {round}: exactly one create wins: {ra:?} {rb:?}"
            );
            let loser = if ra.status.success() { &rb } else { &ra };
            let err = String::from_utf8_lossy(&loser.stderr);
            assert!(err.contains(&format!("VNI {vni}")), "{err}");
            assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
            let (winner, name) = if ra.status.success() {
                (&a, &x)
            } else {
                (&b, &y)
            };
            let other = if ra.status.success() { &b } else { &a };
            // The winner's network reaches the other host; the loser's exists nowhere.
            assert!(wait_until(Duration::from_secs(10), || other
                .t
                .network_names()
                .contains(name)));
            let lost = if ra.status.success() { &y } else { &x };
            assert!(!winner.t.network_names().contains(lost));
            assert!(!other.t.network_names().contains(lost));
        }
        // Removed everywhere, a VNI is free for another name.
        for h in [&a, &b] {
            for n in h.t.network_names() {
                if n.starts_with('x') || n.starts_with('y') {
                    h.t.ok(&["network", "rm", &n]);
                }
            }
        }
        a.t.ok(&[
            "network",
            "create",
            "z",
            "--driver",
            "overlay",
            "--vni",
            "4242",
            "--subnet",
            "10.95.0.0/24",
        ]);
    }

    /// A daemon stopped cleanly revokes its lease: its endpoints leave the other host at once,
    /// not when the (here 60 s) lease would have run out, and their addresses are free.
    #[test]
    fn a_clean_stop_revokes_the_lease_at_once() {
        let Some(etcd) = Etcd::start("revoke") else {
            return;
        };
        let mut a = Host::start("etcd-ra", &etcd, &[], "60s");
        let b = Host::new("etcd-rb", &etcd);
        overlay_on(&a, "ov", "10.92.0.0/24");
        assert!(wait_until(Duration::from_secs(10), || b
            .t
            .network_names()
            .contains(&"ov".to_string())));
        a.t.ok(&["sandbox", "create", "a1", "--net", "ov"]);
        let a1 = a.ip_of("a1");
        assert!(wait_until(Duration::from_secs(10), || b.sees("ov", "a1")));
        let stopped = std::time::Instant::now();
        if let Some(mut daemon) = a.daemon.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(daemon.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = daemon.wait();
        }
        assert!(
            wait_until(Duration::from_secs(5), || !b.sees("ov", "a1")),
            "a1 still on host B {:?} after a clean stop",
            stopped.elapsed()
        );
        // Its address is free for host B now.
        b.t.ok(&["sandbox", "create", "b1", "--net", "ov", "--ip", &a1]);
        assert_eq!(b.ip_of("b1"), a1);
    }

    #[test]
    fn both_hosts_ride_through_a_store_restart() {
        let Some(mut etcd) = Etcd::start("restart") else {
            return;
        };
        let a = Host::new("etcd-ra", &etcd);
        let b = Host::new("etcd-rb", &etcd);
        overlay_on(&a, "ov", "10.93.0.0/24");
        assert!(wait_until(Duration::from_secs(10), || b
            .t
            .network_names()
            .contains(&"ov".to_string())));
        a.t.ok(&["sandbox", "create", "a", "--net", "ov"]);
        b.t.ok(&["sandbox", "create", "b", "--net", "ov"]);
        assert!(wait_until(Duration::from_secs(10), || a.sees("ov", "b")
            && b.sees("ov", "a")));
        let ip_b = b.ip_of("b");
        assert!(
            a.t.ping("a", &ip_b),
            "positive control: traffic flows with the store"
        );
        etcd.kill();
        // Without the store: forwarding goes on with what is known.
        assert!(a.t.ping("a", &ip_b), "traffic stopped with the store");
        assert!(a.sees("ov", "b"), "the known endpoint was forgotten");
        let err = b.t.fails(&["sandbox", "create", "late", "--net", "ov"]);
        assert!(err.contains("cluster store"), "{err}");
        etcd.run();
        // Back: a sandbox made now is seen by the other host, and reached.
        let created = wait_until(Duration::from_secs(20), || {
            b.t.run(&["sandbox", "create", "c", "--net", "ov"])
                .status
                .success()
        });
        assert!(
            created,
            "no sandbox could be made after the store came back"
        );
        assert!(
            wait_until(Duration::from_secs(15), || a.sees("ov", "c")),
            "the new sandbox did not reach the other host: {:?}",
            a.remote_endpoints("ov")
        );
        assert!(a.t.ping("a", &b.ip_of("c")));
        assert!(
            a.sees("ov", "b"),
            "the old endpoint is back after the restart"
        );
    }

    /// A CNI configuration of `network` for host `h`'s daemon.
    fn cni_conf(h: &Host, network: &str) -> String {
        serde_json::json!({
            "cniVersion": "1.0.0",
            "name": network,
            "type": "tapnet-cni",
            "network": network,
            "stateDir": h.t.dir.display().to_string(),
        })
        .to_string()
    }

    /// CNI ADD of `pods` pods on `h` at once (one thread each) into `network`: each pod's
    /// namespace and its address.
    fn cni_add_pods(
        h: &Host,
        network: &str,
        tag: &str,
        pods: usize,
    ) -> Vec<(super::common::cni::Netns, String)> {
        let conf = cni_conf(h, network);
        let spaces: Vec<super::common::cni::Netns> = (0..pods)
            .map(|i| super::common::cni::Netns::new(&format!("{tag}{i}")))
            .collect();
        let ips: Vec<String> = std::thread::scope(|s| {
            let runs: Vec<_> = spaces
                .iter()
                .enumerate()
                .map(|(i, ns)| {
                    let conf = &conf;
                    s.spawn(move || {
                        let id = format!("{tag}-pod{i}");
                        let run = super::common::cni::run_cni("ADD", &id, &ns.path(), "eth0", conf);
                        assert_eq!(run.code, 0, "ADD {id}: {}", run.stdout);
                        let cidr = run.json["ips"][0]["address"].as_str().unwrap_or("");
                        cidr.split('/').next().unwrap_or("").to_string()
                    })
                })
                .collect();
            runs.into_iter()
                .map(|r| r.join().expect("ADD thread"))
                .collect()
        });
        spaces.into_iter().zip(ips).collect()
    }

    fn cni_del_pods(
        h: &Host,
        network: &str,
        tag: &str,
        pods: &[(super::common::cni::Netns, String)],
    ) {
        let conf = cni_conf(h, network);
        for (i, (ns, _)) in pods.iter().enumerate() {
            let run = super::common::cni::run_cni(
                "DEL",
                &format!("{tag}-pod{i}"),
                &ns.path(),
                "eth0",
                &conf,
            );
            assert_eq!(run.code, 0, "DEL: {}", run.stdout);
        }
    }

    /// A pod network across two hosts (the test's namespace and one joined to it by a veth,
    /// VXLAN between them over it, one etcd): CNI ADD of 30 pods on each host at once into one
    /// overlay network hands out 60 different addresses, each claimed in the store; pods reach
    /// pods of the other host; a host killed with `kill -9` keeps its pods' addresses from the
    /// other host while its lease lasts, and has them back when it returns in time; DEL of every
    /// pod leaves no claim in the store.
    #[test]
    fn cni_pods_on_two_hosts_get_addresses_claimed_in_the_store() {
        // Host A is the test's namespace, host B a namespace of its own joined to it by a
        // veth; the store listens on A's side of the link too.
        let link = HostLink::new();
        let Some(etcd) = Etcd::start_on("cnipods", Some(&link.near)) else {
            return;
        };
        let a = Host::start_in("etcd-ca", None, &link.near, &etcd.url(), &[], "3s");
        let mut b = Host::start_in(
            "etcd-cb",
            Some(&link.netns),
            &link.far,
            &etcd.url_on(&link.near),
            &[],
            "8s",
        );
        overlay_on(&a, "pods", "10.97.0.0/24");
        assert!(wait_until(Duration::from_secs(10), || b
            .t
            .network_names()
            .contains(&"pods".to_string())));
        let claims = "/tapnet/v1/endpoints/pods/";
        assert_eq!(etcd.count(claims), 0);
        let started = std::time::Instant::now();
        let (pods_a, pods_b) = std::thread::scope(|s| {
            let ta = s.spawn(|| cni_add_pods(&a, "pods", "ca", 30));
            let tb = s.spawn(|| cni_add_pods(&b, "pods", "cb", 30));
            (ta.join().expect("host a"), tb.join().expect("host b"))
        });
        eprintln!(
            "cni: 60 ADDs on two hosts at once in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let mut ips: Vec<&String> = pods_a.iter().chain(&pods_b).map(|(_, ip)| ip).collect();
        assert!(ips.iter().all(|ip| ip.starts_with("10.97.0.")), "{ips:?}");
        ips.sort();
        ips.dedup();
        assert_eq!(ips.len(), 60, "two hosts handed out one address: {ips:?}");
        assert_eq!(etcd.count(claims), 60, "every pod's address is claimed");
        // Attachments are endpoints in the other host's view, by their record's name.
        assert!(wait_until(Duration::from_secs(10), || {
            a.remote_endpoints("pods").len() == 30 && b.remote_endpoints("pods").len() == 30
        }));
        assert!(
            a.remote_endpoints("pods")
                .iter()
                .all(|(name, host)| name.starts_with("cni:cb-pod") && *host == b.vtep),
            "{:?}",
            a.remote_endpoints("pods")
        );
        // Pods reach pods on the other host, both ways.
        for i in [0, 17, 29] {
            assert!(pods_a[i].0.ping(&pods_b[29 - i].1), "a{i} -> b{}", 29 - i);
            assert!(pods_b[i].0.ping(&pods_a[i].1), "b{i} -> a{i}");
        }

        // Host B dies (kill -9) with its 30 pods: host A's next pods do not get their
        // addresses while B's 8 s lease lasts.
        b.t.stop_daemon(Signal::SIGKILL);
        let killed = std::time::Instant::now();
        let more_a = cni_add_pods(&a, "pods", "cc", 5);
        for (_, ip) in &more_a {
            assert!(
                !pods_b.iter().any(|(_, b_ip)| b_ip == ip),
                "host A handed out {ip}, a pod's on the dead host B"
            );
        }
        assert_eq!(etcd.count(claims), 65);
        // B returns in time: its pods are its own again and reachable.
        if let Some(mut d) = b.daemon.take() {
            let _ = d.wait();
        }
        b.spawn(&[], "8s");
        b.t.ok(&["network", "ls"]);
        let reached = wait_until(Duration::from_secs(10), || pods_a[3].0.ping(&pods_b[3].1));
        // Every pod's TAP was made again, even where the dead daemon's was still going away.
        let log = std::fs::read_to_string(b.t.dir.join("daemon.log")).unwrap_or_default();
        assert!(!log.contains("cannot restore CNI attachment"), "{log}");
        assert!(
            reached,
            "a3 does not reach b3 after host B came back\n{log}"
        );
        // Past the dead daemon's lease, the claims stand: the new daemon holds them.
        std::thread::sleep(Duration::from_secs(10).saturating_sub(killed.elapsed()));
        assert_eq!(etcd.count(claims), 65, "B's claims are its own again");
        assert_eq!(a.remote_endpoints("pods").len(), 30);
        assert!(
            pods_a[4].0.ping(&pods_b[4].1),
            "a4 -> b4 past the old lease"
        );

        // DEL of every pod leaves no claim in the store.
        cni_del_pods(&a, "pods", "ca", &pods_a);
        cni_del_pods(&a, "pods", "cc", &more_a);
        cni_del_pods(&b, "pods", "cb", &pods_b);
        assert!(
            wait_until(Duration::from_secs(10), || etcd.count(claims) == 0),
            "{} claims left after DEL of every pod",
            etcd.count(claims)
        );
        assert!(a.remote_endpoints("pods").is_empty());
    }

    /// Run `args` while every store request is made `slow` (`TAPNET_TEST_SLOW_STORE_MS`):
    /// `stats` answers in under 100 ms meanwhile, and the command did wait for the store (the
    /// positive control).
    fn stats_answers_during(h: &Host, slow: Duration, args: &[&str]) {
        let began = std::time::Instant::now();
        let command =
            h.t.command(args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("the slow command");
        std::thread::sleep(Duration::from_millis(300));
        let started = std::time::Instant::now();
        h.t.ok(&["stats"]);
        let took = started.elapsed();
        eprintln!("stats answered in {took:?} during {args:?}");
        let out = command.wait_with_output().expect("the slow command");
        let command_took = began.elapsed();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            command_took >= slow - Duration::from_millis(100),
            "{args:?} took {command_took:?}: the store was not slow"
        );
        assert!(
            took < Duration::from_millis(100),
            "stats waited {took:?} behind {args:?}"
        );
    }

    #[test]
    fn stats_answers_while_the_store_is_slow() {
        let Some(etcd) = Etcd::start("slow") else {
            return;
        };
        let slow = Duration::from_millis(2000);
        let h = Host::with_env("slowstore", &etcd, &[("TAPNET_TEST_SLOW_STORE_MS", "2000")]);
        stats_answers_during(
            &h,
            slow,
            &[
                "network",
                "create",
                "ov",
                "--driver",
                "overlay",
                "--subnet",
                "10.235.0.0/24",
            ],
        );
        stats_answers_during(&h, slow, &["sandbox", "create", "a", "--net", "ov"]);
        h.t.ok(&["sandbox", "create", "b"]);
        stats_answers_during(&h, slow, &["network", "connect", "ov", "b"]);
        assert_eq!(h.ip_of("a"), "10.235.0.2");
        let b = h.t.json(&["sandbox", "inspect", "b"]);
        assert!(
            b.to_string().contains("10.235.0.3"),
            "b has the next address on ov: {b}"
        );
    }

    #[test]
    fn bad_and_unreachable_stores_are_one_clear_error() {
        let t = Tapnet::new("etcd-bad");
        // A malformed or incomplete --store is a usage error (status 2); an unreachable one
        // is a failure (status 1).
        let err = t.misuse(&[
            "daemon",
            "--vtep",
            "127.0.0.1",
            "--store",
            "http://127.0.0.1:2379",
        ]);
        assert!(err.contains("--store") && err.contains("etcd://"), "{err}");
        let err = t.misuse(&["daemon", "--store", "etcd://127.0.0.1:2379"]);
        assert!(err.contains("--vtep"), "{err}");
        let err = t.misuse(&[
            "daemon",
            "--vtep",
            "127.0.0.1",
            "--store",
            "etcd://127.0.0.1:2379",
            "--store-lease",
            "1s",
        ]);
        assert!(err.contains("--store-lease") && err.contains("1s"), "{err}");
        let port = free_port();
        let err = t.fails(&[
            "daemon",
            "--vtep",
            &loopback(),
            "--store",
            &format!("etcd://127.0.0.1:{port}"),
        ]);
        assert!(
            err.contains("cannot reach") && err.contains(&port.to_string()),
            "{err}"
        );
    }
}

#[cfg(not(feature = "etcd"))]
#[test]
fn without_the_etcd_feature_store_says_how_to_get_it() {
    let t = common::Tapnet::new("etcd-nofeature");
    let err = t.fails(&[
        "daemon",
        "--vtep",
        "127.0.0.1",
        "--store",
        "etcd://127.0.0.1:2379",
    ]);
    assert!(err.contains("--features etcd"), "{err}");
    assert!(
        !t.dir.exists(),
        "no lock or log left in the state dir it made"
    );
}
