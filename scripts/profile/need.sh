# Sourced by scripts/profile-*.sh: what every profile needs before it starts.
#
#   need_root WHAT      exit unless root; WHAT says why ("perf -a and namespaces")
#   need_tools CMD:PKG  install the Debian package PKG of each missing command CMD (one apt-get)
#   need_tracefs        mount tracefs where bpftrace looks for tracepoints, if it is not
#   need_tapnet         TAPNET, built with cargo build --release unless it is set
need_root() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "$(basename "$0"): $1 need root" >&2
        exit 1
    fi
}

need_tools() {
    local missing=() pair
    for pair in "$@"; do
        command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
    fi
}

need_tracefs() {
    [ -d /sys/kernel/tracing/events ] || mount -t tracefs nodev /sys/kernel/tracing
}

need_tapnet() {
    if [ -z "${TAPNET:-}" ]; then
        (cd "$REPO" && cargo build --release >&2)
        TAPNET=${CARGO_TARGET_DIR:-$REPO/target}/release/tapnet
    fi
}
