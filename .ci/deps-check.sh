#!/usr/bin/env bash
# Dependency and license policy, for the Rust crates and the npm packages
# that xenrx ships.
#
# Rust (cargo-deny, policy in deny.toml), with the default features and with
# --all-features (the prebuilt binaries use the feature `xen`):
#   - licenses: permissive licenses only (the allow-list of deny.toml);
#     GPL-3.0-only only for xenctrl-sys (feature `xen`) and xenstore-rs
#     (tests). This script also checks that the default build does not
#     depend on xenctrl-sys and that only dev-dependency edges reach
#     xenstore-rs.
#   - bans: no wildcard version requirement; duplicate versions are reported.
#   - sources: crates.io only.
#   - advisories (RustSec): checked when the advisory database can be
#     fetched, and then any vulnerability fails. When it cannot be fetched
#     (no network), the check is skipped with the reason, and does not fail.
#
# npm (`npm audit`), policy:
#   - production dependencies (`--omit=dev`, what `npm install xenrx`
#     installs): a high or critical advisory fails (`--audit-level=high`);
#     low and moderate ones are reported.
#   - dev dependencies: reported, never failing (they are in no package).
#   - when the registry's audit endpoint does not answer, the audit is
#     skipped with the reason, and does not fail.
#
# cargo-deny is installed at the pinned version with `cargo install --locked`
# (from crates.io sources) into $CARGO_HOME/bin, unless that exact version
# is already there.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CARGO_DENY_VERSION=0.20.2
ADVISORY_DB_URL=https://github.com/RustSec/advisory-db
step() { printf '\n== deps-check: %s\n' "$*"; }

# cargo_tool CRATE VERSION: installs CRATE@VERSION unless cargo lists that
# version as installed and its binary is on PATH. `--debug`: the checks take
# seconds on this graph either way, and an unoptimised build halves the cold
# install (about 2 instead of 4 CPU-minutes for cargo-deny).
cargo_tool() {
  local crate=$1 version=$2 tmp
  if cargo install --list | grep -qx "$crate v$version:" && command -v "$crate" >/dev/null 2>&1; then
    return 0
  fi
  echo "deps-check: installing $crate $version (cargo install --locked --debug)"
  tmp=$(mktemp -d)
  cargo install --locked --debug --quiet --force --target-dir "$tmp" "$crate@$version"
  rm -rf "$tmp"
}

start=$(date +%s)
step "cargo-deny $CARGO_DENY_VERSION"
t0=$(date +%s)
cargo_tool cargo-deny "$CARGO_DENY_VERSION"
cargo deny --version
echo "deps-check: cargo-deny ready in $(( $(date +%s) - t0 )) s"

# --hide-inclusion-graph: a duplicate-version warning names the crates,
# without the full tree of each (`cargo tree -i CRATE` shows it).
deny=(cargo deny --log-level warn)
check=(check --show-stats --hide-inclusion-graph)

step "Rust, default features: licenses, bans, sources"
# deny.toml also lists what only the feature `xen` brings (its
# GPL exception, BSD-3-Clause): not an error without the feature.
"${deny[@]}" "${check[@]}" \
  -A license-not-encountered -A license-exception-not-encountered \
  licenses bans sources

step "Rust, --all-features: licenses, bans, sources"
# Here every allow-list entry and exception must be in use: a stale one fails.
"${deny[@]}" --all-features "${check[@]}" \
  -D license-not-encountered -D license-exception-not-encountered \
  licenses bans sources

step "Rust, --all-features: licenses found (number of crates)"
"${deny[@]}" --all-features list --layout license --format human | sed 's/:.*//'

step "Rust: where the GPL-3.0-only crates may appear"
# reaches FEATURE-ARGS... CRATE: the normal and build dependency edges
# from xen-core to CRATE, on every target (empty when there are none).
reaches() {
  local crate=${*: -1}
  cargo tree --quiet --target all -e normal,build "${@:1:$#-1}" -i "$crate" 2>/dev/null || true
}
if [ -n "$(reaches xenctrl-sys)" ]; then
  echo "deps-check: the default build depends on xenctrl-sys (GPL-3.0-only); it must stay behind the feature xen:" >&2
  reaches xenctrl-sys >&2
  exit 1
fi
if [ -z "$(reaches --features xen xenctrl-sys)" ]; then
  echo "deps-check: the feature xen no longer brings xenctrl-sys: update the exception in deny.toml" >&2
  exit 1
fi
if [ -n "$(reaches --all-features xenstore-rs)" ]; then
  echo "deps-check: xenstore-rs (GPL-3.0-only) is reachable through a normal or build dependency:" >&2
  reaches --all-features xenstore-rs >&2
  exit 1
fi
echo "xenctrl-sys: only with the feature xen; xenstore-rs: only a dev-dependency"

step "Rust: advisories (RustSec)"
# cargo-deny fetches the database with git; probe it first with a short
# timeout so that a machine without network skips instead of hanging.
probe_log=$(mktemp)
if GIT_TERMINAL_PROMPT=0 timeout 30 git ls-remote --heads "$ADVISORY_DB_URL" main >/dev/null 2>"$probe_log"; then
  rm -f "$probe_log"
  "${deny[@]}" "${check[@]}" advisories
  "${deny[@]}" --all-features "${check[@]}" advisories
else
  rc=$?
  reason=$(grep -v '^\s*$' "$probe_log" | tail -n 1 || true)
  [ "$rc" -eq 124 ] && reason="no answer within 30 s"
  rm -f "$probe_log"
  echo "advisories: skipped, advisory database unreachable (${reason:-git exit status $rc})"
fi

step "npm audit"
# One probe decides whether the audit endpoint answers: a report has
# `auditReportVersion`, an unreachable or refusing endpoint gives none.
audit_json=$(mktemp)
timeout 120 npm audit --omit=dev --json > "$audit_json" 2>/dev/null || true
if node -e 'const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")); process.exit(r.auditReportVersion ? 0 : 1)' "$audit_json" 2>/dev/null; then
  rm -f "$audit_json"
  echo "-- production dependencies (fails on high or critical):"
  npm audit --omit=dev --audit-level=high
  echo "-- all dependencies, dev included (report only):"
  npm audit || echo "deps-check: dev dependencies have advisories (reported, not failing)"
else
  reason=$(node -e '
    let r = {}; try { r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")); } catch {}
    console.log(r.message || (r.error && (r.error.summary || r.error.code)) || "no report");
  ' "$audit_json")
  rm -f "$audit_json"
  echo "npm audit: skipped, audit endpoint unreachable ($reason)"
fi

echo
echo "deps-check: passed in $(( $(date +%s) - start )) s"
