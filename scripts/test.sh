#!/usr/bin/env bash
# Run every tapnet test on a Debian machine, as root: install what the end-to-end tests use
# (iproute2, ping, tcpdump, ethtool, python3, dig, util-linux's setpriv/unshare/nsenter, uidmap's
# newuidmap; etcd-server and protobuf-compiler for the cluster store; docker.io and
# busybox-static for tests/docker.rs; golang-go and golang-github-appc-cni-dev for
# tests/cni.rs's libcni client; podman for tests/podman.rs), make sure /dev/net/tun exists,
# create the unprivileged users the rootless tests run as, check formatting and lints, run the
# unit and end-to-end tests, then every fuzz target for FUZZ_SECONDS (10) each. CI (.ci/run)
# calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/test.sh: the end-to-end tests create namespaces and TAP devices: run as root" >&2
    exit 1
fi

missing=()
have() { command -v "$1" >/dev/null 2>&1; }
have ip || missing+=(iproute2)
have ping || missing+=(iputils-ping)
have tcpdump || missing+=(tcpdump)
have ethtool || missing+=(ethtool)
have nsenter || missing+=(util-linux)
have setpriv || missing+=(util-linux)
have python3 || missing+=(python3)
# tests/ipv6_gateway.rs asks the gateway's DNS for AAAA and ip6.arpa PTR records with dig.
have dig || missing+=(bind9-dnsutils)
have timeout || missing+=(coreutils)
have newuidmap || missing+=(uidmap)
have useradd || missing+=(passwd)
# tests/cni.rs: libcni's own client, built offline from Debian's libcni source with Go.
have go || missing+=(golang-go)
# tests/podman.rs: one podman run with podman's CNI backend.
have podman || missing+=(podman)
# ... run by runc: crun refuses machines that boot with cgroups in hybrid mode.
have runc || missing+=(runc)
[ -d /usr/share/gocode/src/github.com/containernetworking/cni/libcni ] || missing+=(golang-github-appc-cni-dev)
# ... and the reference plugins chained after tapnet-cni (tuning, portmap with iptables).
{ [ -x /usr/lib/cni/tuning ] && [ -x /usr/lib/cni/portmap ]; } || missing+=(containernetworking-plugins)
have iptables || missing+=(iptables)
# tests/docker.rs: a private dockerd (with its containerd) and a busybox image built from it.
have dockerd || missing+=(docker.io)
{ [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1; } || missing+=(busybox-static)
# tests/etcd.rs: a real etcd server on loopback (the cluster store); the `etcd` feature's client
# (etcd-client) compiles etcd's .proto files at build time with protoc.
have etcd || missing+=(etcd-server)
have protoc || missing+=(protobuf-compiler)
# tests/vm.rs: QEMU guests on socket ports (the guest's kernel is downloaded by the test).
have qemu-system-x86_64 || missing+=(qemu-system-x86)
# protoc's own .proto files (google/protobuf/descriptor.proto), a Recommends of protobuf-compiler
# that an install with --no-install-recommends leaves out.
[ -f /usr/include/google/protobuf/descriptor.proto ] || missing+=(libprotobuf-dev)
if [ ${#missing[@]} -gt 0 ]; then
    echo "scripts/test.sh: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -c /dev/net/tun ]; then
    mkdir -p /dev/net
    mknod /dev/net/tun c 10 200
    chmod 0666 /dev/net/tun
fi
# Rootless tests need the tun device open to every user, as most distributions ship it;
# restore what the machine had when the run ends.
tun_mode=$(stat -c %a /dev/net/tun)
if [ "$tun_mode" != 666 ]; then
    chmod 0666 /dev/net/tun
else
    tun_mode=""
fi
results=$(mktemp)
# Tests that need an outside tool fail without it unless TAPNET_TEST_SKIP names them (e.g.
# TAPNET_TEST_SKIP=docker,podman,etcd,libcni); each skip is appended here, for the summary.
skips=$(mktemp)
export TAPNET_TEST_SKIP_LOG=$skips
trap 'rm -f "$results" "$skips"; [ -z "$tun_mode" ] || chmod "$tun_mode" /dev/net/tun' EXIT

# The rootless tests' users: tapnet-test with a subordinate ID range (newuidmap path),
# tapnet-test1 without one (single-ID mapping).
for user in tapnet-test tapnet-test1; do
    id "$user" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$user"
done
for file in /etc/subuid /etc/subgid; do
    touch "$file"
    grep -q '^tapnet-test:' "$file" || echo "tapnet-test:400000:65536" >>"$file"
    sed -i '/^tapnet-test1:/d' "$file"
done

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
# The cluster store is a cargo feature (it needs protoc): lint it and test with it.
cargo clippy --all-targets --locked --features etcd -- -D warnings
# Every test binary runs even when one fails (--no-fail-fast), so the summary counts them all.
test_status=0
cargo test --locked --no-fail-fast --features etcd 2>&1 | tee "$results" || test_status=$?
# Every parser of untrusted bytes, fuzzed for a few seconds each (scripts/fuzz.sh N for longer).
fuzz_status=0
scripts/fuzz.sh "${FUZZ_SECONDS:-10}" || fuzz_status=$?
# One closing line for the whole run: every test binary's counts added up, and the skipped
# tests, listed just before it. cargo counts a skipped test as passed: it is not, here.
cat "$skips"
skipped=$(wc -l <"$skips")
awk -v k="$skipped" '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed", p - k, f; if (k > 0) printf ", %d skipped", k; printf "\n" }' "$results"
[ "$test_status" -eq 0 ] && [ "$fuzz_status" -eq 0 ]
