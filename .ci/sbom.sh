#!/usr/bin/env bash
# Software bills of materials (CycloneDX 1.5, JSON) of what xenrx ships:
#
#   .ci/sbom.sh OUTDIR
#
#   OUTDIR/xenrx.cdx.json     the npm package `xenrx`: its production
#                             dependencies (from package-lock.json) and theirs.
#   OUTDIR/xen-core.cdx.json  the Rust crate of the native addon, with the
#                             features of the prebuilt binaries (default +
#                             `xen`; XENRX_SBOM_FEATURES overrides), for the
#                             host's target (x86_64 and aarch64 Linux have
#                             the same crates): its normal and build
#                             dependencies with versions, licenses and
#                             crates.io checksums.
#
# Both work offline. The npm one comes from `npm sbom` (npm >= 10): npm's own
# `--omit dev` drops production packages that a dev dependency also uses
# (npm/cli#7909; here rxjs's tslib), so this script takes npm's full SBOM and
# keeps what package.json's dependencies and optionalDependencies reach. The
# crate's comes from cargo-cyclonedx, installed at the pinned version with
# `cargo install --locked` into $CARGO_HOME/bin unless that version is there.
# Timestamps are the commit time (SOURCE_DATE_EPOCH) and neither SBOM has a
# random serial number, so the same commit gives the same files.
set -euo pipefail

out=${1:?usage: .ci/sbom.sh OUTDIR}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$root"

CARGO_CYCLONEDX_VERSION=0.5.9
features=${XENRX_SBOM_FEATURES-xen}
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -c safe.directory="$root" log -1 --format=%ct HEAD 2>/dev/null || date +%s)}
export SOURCE_DATE_EPOCH

# Installs cargo-cyclonedx unless cargo lists that version as installed and it
# is on PATH. `--debug`: it runs for a second here either way, and an
# unoptimised build installs in about half the time.
if ! cargo install --list | grep -qx "cargo-cyclonedx v$CARGO_CYCLONEDX_VERSION:" \
  || ! command -v cargo-cyclonedx >/dev/null 2>&1; then
  echo "sbom: installing cargo-cyclonedx $CARGO_CYCLONEDX_VERSION (cargo install --locked --debug)"
  tmp=$(mktemp -d)
  cargo install --locked --debug --quiet --force --target-dir "$tmp" "cargo-cyclonedx@$CARGO_CYCLONEDX_VERSION"
  rm -rf "$tmp"
fi

echo "sbom: npm package (npm $(npm --version))"
npm sbom --sbom-format cyclonedx --sbom-type library --package-lock-only > "$out/xenrx.full.cdx.json"
node - "$out/xenrx.full.cdx.json" "$out/xenrx.cdx.json" <<'EOF'
const fs = require('fs');
const [full, dest] = process.argv.slice(2);
const bom = JSON.parse(fs.readFileSync(full, 'utf8'));
const pkg = JSON.parse(fs.readFileSync('package.json', 'utf8'));
const root = bom.metadata.component;
// npm names the root component after the directory it ran in.
root.name = pkg.name;
const byRef = new Map(bom.dependencies.map((d) => [d.ref, d.dependsOn || []]));
// The root's edges in npm's graph include the dev dependencies: keep those to
// the packages that package.json lists as dependencies or optionalDependencies.
const production = new Set(Object.keys({ ...pkg.dependencies, ...pkg.optionalDependencies }));
const nameOf = (ref) => ref.slice(0, ref.lastIndexOf('@'));
const direct = (byRef.get(root['bom-ref']) || []).filter((ref) => production.has(nameOf(ref)));
const keep = new Set();
const queue = [...direct];
while (queue.length) {
  const ref = queue.shift();
  if (keep.has(ref)) continue;
  keep.add(ref);
  queue.push(...(byRef.get(ref) || []));
}
bom.components = bom.components.filter((c) => keep.has(c['bom-ref']));
bom.dependencies = bom.dependencies
  .filter((d) => keep.has(d.ref) || d.ref === root['bom-ref'])
  .map((d) => (d.ref === root['bom-ref'] ? { ...d, dependsOn: direct } : d));
bom.metadata.timestamp = new Date(Number(process.env.SOURCE_DATE_EPOCH) * 1000).toISOString();
// A random serial number would make every run differ; cargo-cyclonedx leaves
// it out under SOURCE_DATE_EPOCH, and so does this (it is optional).
delete bom.serialNumber;
fs.writeFileSync(dest, JSON.stringify(bom, null, 2) + '\n');
EOF
rm -f "$out/xenrx.full.cdx.json"

echo "sbom: Rust crate xen-core (cargo-cyclonedx $CARGO_CYCLONEDX_VERSION; features: default${features:+ + $features})"
generated="crates/xen-core/xen-core.cdx.json"
trap 'rm -f "$root/$generated"' EXIT
cargo cyclonedx --quiet --manifest-path crates/xen-core/Cargo.toml \
  --format json --spec-version 1.5 --override-filename xen-core.cdx \
  ${features:+--features "$features"}
# cargo names the workspace crate by its absolute path (path+file:///...):
# the same fixed name as in the binaries (.ci/repro-check.sh) instead.
node -e '
  const fs = require("fs");
  const [src, dest, ...roots] = process.argv.slice(1);
  let text = fs.readFileSync(src, "utf8");
  for (const r of roots) text = text.split(`path+file://${r}/`).join("path+file:///xenrx/");
  fs.writeFileSync(dest, text);
' "$generated" "$out/xen-core.cdx.json" "$root" "$(pwd -P)"
rm -f "$generated"

for f in "$out/xenrx.cdx.json" "$out/xen-core.cdx.json"; do
  node -e '
    const b = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    console.log(`${process.argv[1]}: ${b.bomFormat} ${b.specVersion}, ${b.metadata.component.name} ${b.metadata.component.version}, ${(b.components || []).length} components`);
  ' "$f"
done
