#!/usr/bin/env bash
# Runs one cargo-fuzz target of xen-core for a while.
#
#   crates/xen-core/fuzz/run.sh <target> [seconds] [libFuzzer args...]
#
# Targets: ring_consumer, xenstore_wire, state_restore, blk_request, net_tx (see fuzz_targets/). Default 60 s.
# Installs cargo-fuzz when `cargo fuzz` is missing. Builds with the nightly
# toolchain when rustup has one, else with stable and RUSTC_BOOTSTRAP=1
# (cargo fuzz needs -Z flags; stable ships the sanitizer runtimes). Prints
# the number of executions; exits non-zero when the target crashed (the
# input is then under fuzz/artifacts/<target>/). FUZZ_STABLE=1 takes the
# stable path even where nightly exists (to check that fallback).
set -euo pipefail

usage() {
    echo "usage: $0 <target> [seconds] [libFuzzer args...]" >&2
    exit 2
}

[ $# -ge 1 ] || usage
target=$1
seconds=${2:-60}
shift
[ $# -ge 1 ] && shift
case $seconds in '' | *[!0-9]*) usage ;; esac

here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
if [ ! -f "fuzz_targets/$target.rs" ]; then
    echo "unknown target '$target'; targets:" $(cd fuzz_targets && ls | sed 's/\.rs$//') >&2
    exit 2
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

toolchain=()
if [ "${FUZZ_STABLE:-0}" != 1 ] && command -v rustup >/dev/null 2>&1 &&
    rustup toolchain list | grep -q '^nightly'; then
    toolchain=(+nightly)
    echo "== toolchain: nightly" >&2
else
    if command -v rustup >/dev/null 2>&1; then
        toolchain=(+stable)
    fi
    export RUSTC_BOOTSTRAP=1
    echo "== toolchain: stable with RUSTC_BOOTSTRAP=1" >&2
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
mkdir -p "corpus/$target"
set +e
cargo "${toolchain[@]}" fuzz run "$target" -- -max_total_time="$seconds" -print_final_stats=1 "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e

# libFuzzer ends a clean run with "Done N runs in S second(s)"; after a
# crash, the last status line "#N ..." is the count so far.
runs=$(grep -Eo '^Done [0-9]+ runs' "$log" | tail -1 | awk '{print $2}' || true)
if [ -z "$runs" ]; then
    runs=$(grep -Eo '^#[0-9]+' "$log" | tail -1 | tr -d '#' || true)
fi
echo "== $target: ${runs:-0} executions in at most $seconds s (exit status $status)"
if [ "$status" -ne 0 ]; then
    echo "== $target: FAILED; crash inputs:" $(ls "artifacts/$target" 2>/dev/null) >&2
fi
exit "$status"
