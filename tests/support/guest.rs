//! A small VM guest for tests/vm.rs, built offline from Debian packages: the kernel of
//! `linux-image-amd64` (downloaded with `apt-get download`, never installed on the host) and an
//! initramfs made here: the host's static busybox, the kernel's virtio-net modules and an /init
//! that configures eth0 (DHCP first, else the address on the kernel command line) and then runs
//! a shell on the serial console, which the test drives (`Vm::run`).
//!
//! Built once per kernel version and cached under the target dir (a lock serialises the tests
//! of a run that want it at the same time).
//!
//! Shared by tests/vm.rs and tests/vm_bench.rs, which use different parts of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

/// virtio-net's modules, in load order; those built into the kernel are simply absent.
const MODULES: &[(&str, &str)] = &[
    ("virtio_ring", "drivers/virtio"),
    ("virtio", "drivers/virtio"),
    ("virtio_pci_modern_dev", "drivers/virtio"),
    ("virtio_pci_legacy_dev", "drivers/virtio"),
    ("virtio_pci", "drivers/virtio"),
    ("failover", "net/core"),
    ("net_failover", "drivers/net"),
    ("virtio_net", "drivers/net"),
];

const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox mkdir -p /usr/bin /usr/sbin /proc /sys /dev /tmp /etc
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net; do
    [ -f /modules/$m.ko ] && insmod /modules/$m.ko
done
arg() { for w in $(cat /proc/cmdline); do case $w in $1=*) echo "${w#*=}";; esac; done; }
IP=$(arg tapnet.ip)
GW=$(arg tapnet.gw)
ip link set lo up
i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
ip link set eth0 up
if [ "$(arg tapnet.dhcp)" = 1 ] && udhcpc -i eth0 -n -q -t 4 -T 1 -s /etc/udhcpc.sh >/dev/null 2>&1; then
    echo TAPNET-ADDRESS dhcp
else
    ip addr add "$IP" dev eth0
    ip route add default via "$GW"
    echo "nameserver $GW" > /etc/resolv.conf
    echo TAPNET-ADDRESS static
fi
stty -echo 2>/dev/null
export PS1=''
echo TAPNET-READY
# Under load a guest's shell has been seen to read end-of-file from the console and exit
# (with epoll and io_uring datapaths alike); init must not exit with it, or the kernel panics
# and QEMU is gone: a new shell takes the console, and the log says so.
while :; do sh; echo "TAPNET-SHELL-RESTARTED $?"; done
"#;

const UDHCPC_SCRIPT: &str = r#"#!/bin/sh
case "$1" in
bound|renew)
    # IPv4 only: a plain flush also takes the IPv6 link-local address, perhaps mid-DAD, and
    # the guest's IPv6 then sent once from an address its port does not own (CI, twice).
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    [ -n "$router" ] && ip route add default via "${router%% *}"
    [ -n "$dns" ] && echo "nameserver ${dns%% *}" > /etc/resolv.conf
    ;;
esac
exit 0
"#;

pub struct Guest {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// The kernel package, e.g. linux-image-6.1.0-57-amd64.
    pub package: String,
}

fn sh(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The kernel package `linux-image-amd64` depends on (apt's lists are updated once if they do
/// not know it).
fn kernel_package() -> String {
    let find = || {
        let out = Command::new("apt-cache")
            .args(["depends", "linux-image-amd64"])
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Depends: "))
            .find(|p| p.starts_with("linux-image-") && p.ends_with("-amd64"))
            .map(str::to_string)
    };
    if let Some(p) = find() {
        return p;
    }
    sh(Command::new("apt-get").args(["update", "-qq"]));
    find().expect("apt-cache knows no linux-image-amd64: cannot build the VM guest")
}

/// The guest, built if this kernel's is not cached yet.
pub fn guest() -> Guest {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("vm-guest");
    std::fs::create_dir_all(&root).expect("create guest cache");
    let lock = std::fs::File::create(root.join("lock")).expect("guest lock");
    let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("lock guest cache");
    let package = kernel_package();
    // The scripts are in the key: a changed init is not served from an older cache.
    let mut scripts = std::hash::DefaultHasher::new();
    std::hash::Hash::hash(&(INIT, UDHCPC_SCRIPT), &mut scripts);
    let key = std::hash::Hasher::finish(&scripts);
    let dir = root.join(format!("{package}-{key:016x}"));
    let kernel = dir.join("vmlinuz");
    let initrd = dir.join("initrd.cpio");
    if kernel.exists() && initrd.exists() {
        return Guest {
            kernel,
            initrd,
            package,
        };
    }
    let _ = std::fs::remove_dir_all(&dir);
    let work = dir.join("work");
    std::fs::create_dir_all(&work).expect("create guest work dir");
    // apt's sandbox user cannot write here; the download runs as root, which apt warns about.
    sh(Command::new("apt-get")
        .args(["download", "-qq", &package])
        .current_dir(&work));
    let deb = std::fs::read_dir(&work)
        .expect("read work dir")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("apt-get download left no .deb");
    let version = package
        .strip_prefix("linux-image-")
        .expect("kernel package name");
    // Only the kernel and the virtio modules out of the package (dpkg-deb -x of all of it is
    // hundreds of MiB).
    let mut wanted = vec![format!("./boot/vmlinuz-{version}")];
    for (m, sub) in MODULES {
        wanted.push(format!("./lib/modules/{version}/kernel/{sub}/{m}.ko*"));
    }
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "dpkg-deb --fsys-tarfile '{}' | tar -x --wildcards --no-wildcards-match-slash -C '{}' {}",
            deb.display(),
            work.display(),
            wanted
                .iter()
                .map(|w| format!("'{w}'"))
                .collect::<Vec<_>>()
                .join(" ")
        ))
        .status()
        .expect("run dpkg-deb");
    // tar fails for patterns of modules built into the kernel; the kernel must be there.
    let _ = status;
    let vmlinuz = work.join(format!("boot/vmlinuz-{version}"));
    assert!(vmlinuz.exists(), "no kernel in {}", deb.display());
    let mut cpio = Cpio::default();
    for d in [
        "bin", "sbin", "dev", "proc", "sys", "etc", "tmp", "modules", "usr", "root",
    ] {
        cpio.dir(d);
    }
    cpio.char_dev("dev/console", 5, 1);
    let busybox = std::fs::read("/bin/busybox").expect("read /bin/busybox (busybox-static)");
    cpio.file("bin/busybox", 0o755, &busybox);
    cpio.file("init", 0o755, INIT.as_bytes());
    cpio.file("etc/udhcpc.sh", 0o755, UDHCPC_SCRIPT.as_bytes());
    for (m, sub) in MODULES {
        let ko = work.join(format!("lib/modules/{version}/kernel/{sub}/{m}.ko"));
        if let Ok(bytes) = std::fs::read(&ko) {
            cpio.file(&format!("modules/{m}.ko"), 0o644, &bytes);
        }
    }
    std::fs::write(dir.join("initrd.tmp"), cpio.finish()).expect("write initrd");
    std::fs::copy(&vmlinuz, dir.join("vmlinuz.tmp")).expect("copy kernel");
    std::fs::rename(dir.join("vmlinuz.tmp"), &kernel).expect("rename kernel");
    std::fs::rename(dir.join("initrd.tmp"), &initrd).expect("rename initrd");
    let _ = std::fs::remove_dir_all(&work);
    Guest {
        kernel,
        initrd,
        package,
    }
}

/// A newc cpio archive, as the kernel unpacks an initramfs.
#[derive(Default)]
struct Cpio {
    out: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        self.ino += 1;
        let fields = [
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len() as u32,
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0,
        ];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while self.out.len() % 4 != 0 {
            self.out.push(0);
        }
    }

    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, (0, 0), &[]);
    }

    fn char_dev(&mut self, name: &str, major: u32, minor: u32) {
        self.entry(name, 0o020600, (major, minor), &[]);
    }

    fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, 0o100000 | perm, (0, 0), data);
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.out
    }
}

/// A running QEMU with the guest, its serial console on QEMU's stdio.
pub struct Vm {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    next: u32,
    /// Everything the console printed, for failure messages.
    pub log: String,
    /// Seconds from QEMU's start to the guest's READY line.
    pub boot_secs: f64,
}

/// Where the guest connects and what it is.
pub struct VmSpec<'a> {
    pub socket: &'a Path,
    pub mac: &'a str,
    /// CIDR, the static fallback.
    pub ip: &'a str,
    pub gateway: &'a str,
    /// Try DHCP first.
    pub dhcp: bool,
    /// How QEMU reaches `socket`.
    pub netdev: Netdev,
}

/// QEMU's side of the port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Netdev {
    /// `-netdev stream` (`--qemu-socket`).
    #[default]
    Stream,
    /// `-netdev vhost-user` (`--vhost-user`): the guest's RAM is a shared memfd the backend maps.
    VhostUser,
    /// `-netdev user`: QEMU's own user networking (slirp), no switch outside QEMU; `socket` is
    /// not used. The guest is 10.0.2.15/24 and reaches the host's loopback at 10.0.2.2.
    User,
}

/// How QEMU runs the guest: `-accel` and, for KVM, `-cpu`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    Tcg,
    Kvm(&'static str),
}

impl Accel {
    /// For reports: `tcg`, `kvm-host`, `kvm-qemu64`.
    pub fn name(self) -> String {
        match self {
            Accel::Tcg => "tcg".to_string(),
            Accel::Kvm(cpu) => format!("kvm-{cpu}"),
        }
    }
}

/// The guest's RAM in MiB (and the vhost-user memory object's size).
const GUEST_MIB: u32 = 256;

impl Vm {
    /// Start QEMU (TCG) and wait for the guest's shell; `Err` with the console's log when it
    /// did not come up.
    pub fn boot(
        guest: &Guest,
        spec: &VmSpec<'_>,
        run_as: Option<(u32, u32)>,
    ) -> Result<Vm, String> {
        Vm::boot_with(guest, spec, run_as, Accel::Tcg, Duration::from_secs(180))
    }

    /// `boot` with an accelerator and a limit on the wait for the guest's shell.
    pub fn boot_with(
        guest: &Guest,
        spec: &VmSpec<'_>,
        run_as: Option<(u32, u32)>,
        accel: Accel,
        ready_within: Duration,
    ) -> Result<Vm, String> {
        let append = format!(
            "console=ttyS0 quiet panic=-1 tapnet.ip={} tapnet.gw={} tapnet.dhcp={}",
            spec.ip,
            spec.gateway,
            u8::from(spec.dhcp)
        );
        let mut net_args: Vec<String> = Vec::new();
        match spec.netdev {
            Netdev::Stream => net_args.extend([
                "-netdev".into(),
                format!(
                    "stream,id=n0,server=off,addr.type=unix,addr.path={}",
                    spec.socket.display()
                ),
            ]),
            Netdev::VhostUser => net_args.extend([
                "-object".into(),
                format!("memory-backend-memfd,id=mem,size={GUEST_MIB}M,share=on"),
                "-numa".into(),
                "node,memdev=mem".into(),
                "-chardev".into(),
                format!("socket,id=c0,path={}", spec.socket.display()),
                "-netdev".into(),
                "vhost-user,id=n0,chardev=c0".into(),
            ]),
            Netdev::User => net_args.extend(["-netdev".into(), "user,id=n0".into()]),
        }
        let mut accel_args: Vec<&str> = Vec::new();
        match accel {
            Accel::Tcg => accel_args.extend(["-accel", "tcg"]),
            Accel::Kvm(cpu) => accel_args.extend(["-accel", "kvm", "-cpu", cpu]),
        }
        let mut cmd = match run_as {
            Some((uid, gid)) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .args(["--clear-groups", "--", "qemu-system-x86_64"]);
                c
            }
            None => Command::new("qemu-system-x86_64"),
        };
        cmd.args(&accel_args)
            .args([
                "-m",
                &GUEST_MIB.to_string(),
                "-nodefaults",
                "-no-user-config",
                "-no-reboot",
                "-display",
                "none",
                "-serial",
                "stdio",
                "-kernel",
            ])
            .arg(&guest.kernel)
            .arg("-initrd")
            .arg(&guest.initrd)
            .args(["-append", &append])
            .args(&net_args)
            .arg("-device")
            .arg(match spec.netdev {
                Netdev::Stream | Netdev::User => {
                    format!("virtio-net-pci,netdev=n0,mac={}", spec.mac)
                }
                // No MSI-X: QEMU 7.2 under TCG crashes setting up vhost's MSI-X vector notifiers.
                Netdev::VhostUser => format!("virtio-net-pci,netdev=n0,mac={},vectors=0", spec.mac),
            })
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let start = Instant::now();
        let mut child = cmd.spawn().map_err(|e| format!("cannot start QEMU: {e}"))?;
        let stdin = child.stdin.take().ok_or("no QEMU stdin")?;
        let stdout = child.stdout.take().ok_or("no QEMU stdout")?;
        let stderr = child.stderr.take().ok_or("no QEMU stderr")?;
        let (tx, lines) = channel();
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).split(b'\n').map_while(Result::ok) {
                let line = String::from_utf8_lossy(&line)
                    .trim_end_matches('\r')
                    .to_string();
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx2.send(format!("qemu: {line}")).is_err() {
                    return;
                }
            }
        });
        let mut vm = Vm {
            child,
            stdin,
            lines,
            next: 0,
            log: String::new(),
            boot_secs: 0.0,
        };
        match vm.wait_for(|l| l == "TAPNET-READY", ready_within) {
            Ok(_) => {
                vm.boot_secs = start.elapsed().as_secs_f64();
                Ok(vm)
            }
            Err(e) => Err(format!("guest did not come up: {e}\n{}", vm.log)),
        }
    }

    /// QEMU's process ID (its CPU time is the guest's cost, and with `Netdev::User` the
    /// switch's too).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn wait_for(
        &mut self,
        done: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.log.push_str(&line);
                    self.log.push('\n');
                    if done(&line) {
                        return Ok(line);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!("timed out after {timeout:?}"));
                }
                Err(RecvTimeoutError::Disconnected) => return Err("QEMU exited".to_string()),
            }
        }
    }

    /// Run a shell command in the guest; its exit status and output.
    pub fn run(&mut self, cmd: &str, timeout: Duration) -> (i32, String) {
        self.next += 1;
        let marker = format!("TAPNET-END-{}", self.next);
        let mark = self.log.len();
        writeln!(self.stdin, "{cmd} 2>&1; echo {marker} $?").expect("write to the guest");
        self.stdin.flush().expect("flush to the guest");
        let prefix = format!("{marker} ");
        let end = self
            .wait_for(|l| l.starts_with(&prefix), timeout)
            .unwrap_or_else(|e| panic!("guest command {cmd:?}: {e}\n{}", self.log));
        let rc = end[prefix.len()..].trim().parse().unwrap_or(-1);
        let out = self.log[mark..]
            .lines()
            .filter(|l| !l.starts_with(&prefix) && !l.contains(&marker))
            .collect::<Vec<_>>()
            .join("\n");
        (rc, out)
    }

    /// Fill `path` in the guest with `kib` KiB from `source` (`/dev/urandom`, `/dev/zero`);
    /// its SHA-256, hex.
    pub fn make_file(&mut self, path: &str, source: &str, kib: usize, timeout: Duration) -> String {
        // Whole MiB in big blocks: a KiB at a time is slow under emulation.
        let (bs, count) = if kib % 1024 == 0 {
            (1_048_576, kib / 1024)
        } else {
            (1024, kib)
        };
        let out = self.ok(
            &format!(
                "dd if={source} of={path} bs={bs} count={count} 2>/dev/null && sha256sum {path}"
            ),
            timeout,
        );
        // The console may show other lines first (the shell's banner).
        out.lines()
            .find(|l| l.trim_end().ends_with(&format!(" {path}")))
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or_else(|| panic!("no sha256sum line in {out:?}"))
            .to_string()
    }

    /// Run and insist on exit status 0; the output.
    pub fn ok(&mut self, cmd: &str, timeout: Duration) -> String {
        let (rc, out) = self.run(cmd, timeout);
        assert_eq!(rc, 0, "guest command {cmd:?} failed: {out}");
        out
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
