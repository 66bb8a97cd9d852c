#!/usr/bin/env bash
# Run every tapnet test on a Debian machine, as root: install what the end-to-end tests use
# (iproute2, ping, tcpdump, ethtool, python3), make sure /dev/net/tun exists, check formatting
# and lints, then run the unit and end-to-end tests. CI (.ci/run) calls exactly this.
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
have python3 || missing+=(python3)
have timeout || missing+=(coreutils)
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

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked
