#!/usr/bin/env bash
# Release dry run: what the release workflow publishes, packed here without
# publishing, with the SBOMs beside the tarballs.
#
#   .ci/release-dry-run.sh [OUTDIR]     (default: a temporary directory, removed)
#
# In a staged copy (the work tree is left alone), as the publish job does:
# the host's addon (native/xenrx.<platform>.node, from `npm run build`) goes
# into its per-platform package, `napi prepublish --skip-optional-publish`
# adds the platform packages to the main package's optionalDependencies,
# then `npm pack` packs every per-platform package of npm/ and the main
# package, and .ci/sbom.sh writes the two SBOMs. Checks:
#   - every tarball is non-empty and has package.json and LICENSE; the host's
#     platform package carries its binary; the main package carries none;
#   - each SBOM is valid JSON with bomFormat "CycloneDX" and lists the direct
#     dependencies (xenrx: rxjs, commander; xen-core: napi).
# The platform packages of other architectures have no binary here (the
# release workflow builds each on its own machine): they are packed without
# it and reported.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
work=$(mktemp -d -t xenrx-release-dry-run.XXXXXX)
trap 'rm -rf "$work"' EXIT
if [ $# -ge 1 ]; then
  out=$1
  mkdir -p "$out"
  out=$(cd "$out" && pwd)
else
  out="$work/out"
  mkdir -p "$out"
fi
step() { printf '\n== release-dry-run: %s\n' "$*"; }
fail() { echo "release-dry-run: $*" >&2; exit 1; }

version=$(node -p 'require("./package.json").version')
case "$(node -p process.arch)" in
  x64) host_tag=linux-x64-gnu ;;
  arm64) host_tag=linux-arm64-gnu ;;
  *) fail "no platform package for $(node -p process.arch)" ;;
esac
[ -f "native/xenrx.$host_tag.node" ] || fail "native/xenrx.$host_tag.node missing: run npm run build first"
[ -f dist/index.js ] || fail "dist/ missing: run npm run build first"

step "stage the packages as the publish job does"
stage="$work/stage"
# The host's target, which package.json must list.
host_triple=$(node -e '
  const t = require("./package.json").napi.targets;
  const want = { "linux-x64-gnu": "x86_64-unknown-linux-gnu", "linux-arm64-gnu": "aarch64-unknown-linux-gnu" }[process.argv[1]];
  if (!t.includes(want)) process.exit(1);
  console.log(want);
' "$host_tag") || fail "package.json napi.targets has no target for $host_tag"
# shellcheck source=.ci/stage-packages.sh
source "$root/.ci/stage-packages.sh"
stage_packages "$stage" "$work" "$host_tag" "$host_triple"

step "npm pack: every per-platform package and the main package"
for dir in "$stage"/npm/*/; do
  (cd "$dir" && npm pack --silent --pack-destination "$out" >/dev/null)
done
(cd "$stage" && npm pack --ignore-scripts --silent --pack-destination "$out" >/dev/null)

step "SBOMs"
bash .ci/sbom.sh "$out"

step "check the tarballs"
n=0
for tgz in "$out"/*.tgz; do
  n=$((n + 1))
  [ -s "$tgz" ] || fail "$tgz is empty"
  tar -tzf "$tgz" > "$work/files.txt" || fail "$tgz is not a gzip tarball"
  grep -qx 'package/package.json' "$work/files.txt" || fail "$tgz has no package.json"
  grep -qx 'package/LICENSE' "$work/files.txt" || fail "$tgz has no LICENSE"
  name=$(basename "$tgz" "-$version.tgz")
  case "$name" in
    xenrx)
      if grep -q '\.node$' "$work/files.txt"; then fail "the main package must not carry a binary"; fi
      grep -qx 'package/dist/index.js' "$work/files.txt" || fail "the main package has no dist/index.js"
      node -e '
        const p = JSON.parse(require("child_process").execFileSync("tar", ["-xzOf", process.argv[1], "package/package.json"]));
        const dep = process.argv[2];
        if (!p.optionalDependencies || p.optionalDependencies[dep] !== p.version) {
          console.error(`release-dry-run: main package does not depend on ${dep}@${p.version}`); process.exit(1);
        }
      ' "$tgz" "xenrx-$host_tag"
      note="main package"
      ;;
    "xenrx-$host_tag")
      grep -qx "package/xenrx.$host_tag.node" "$work/files.txt" || fail "$tgz has no binary"
      note="platform package, binary sha256 $(tar -xzOf "$tgz" "package/xenrx.$host_tag.node" | sha256sum | cut -d' ' -f1)"
      ;;
    xenrx-*)
      note="platform package, no binary here (built by the release workflow on its own machine)"
      ;;
    *) fail "unexpected tarball $tgz" ;;
  esac
  printf '%-40s %9s bytes, %3s files  %s\n' "$(basename "$tgz")" "$(stat -c %s "$tgz")" "$(wc -l < "$work/files.txt")" "$note"
done
platforms=$(find npm -mindepth 1 -maxdepth 1 -type d | wc -l)
[ "$n" -eq $((platforms + 1)) ] || fail "expected $((platforms + 1)) tarballs, found $n"

step "check the SBOMs"
node - "$out/xenrx.cdx.json" "$out/xen-core.cdx.json" <<'EOF'
const fs = require('fs');
const [npmBom, crateBom] = process.argv.slice(2);
const want = { [npmBom]: ['rxjs', 'commander'], [crateBom]: ['napi'] };
for (const [file, direct] of Object.entries(want)) {
  let bom;
  try { bom = JSON.parse(fs.readFileSync(file, 'utf8')); } catch (e) {
    console.error(`release-dry-run: ${file} is not valid JSON: ${e.message}`); process.exit(1);
  }
  if (bom.bomFormat !== 'CycloneDX') { console.error(`release-dry-run: ${file}: bomFormat is ${bom.bomFormat}`); process.exit(1); }
  const names = new Set((bom.components || []).map((c) => c.name));
  const rootRef = bom.metadata && bom.metadata.component && bom.metadata.component['bom-ref'];
  const rootDeps = ((bom.dependencies || []).find((d) => d.ref === rootRef) || {}).dependsOn || [];
  const refName = new Map((bom.components || []).map((c) => [c['bom-ref'], c.name]));
  const directNames = new Set(rootDeps.map((r) => refName.get(r)));
  for (const d of direct) {
    if (!names.has(d)) { console.error(`release-dry-run: ${file} lists no component ${d}`); process.exit(1); }
    if (!directNames.has(d)) { console.error(`release-dry-run: ${file} does not list ${d} as a direct dependency`); process.exit(1); }
  }
  console.log(`${file.split('/').pop()}: ${bom.bomFormat} ${bom.specVersion}, ${names.size} components, direct: ${[...directNames].sort().join(', ')}`);
}
EOF

step "passed"
ls -l "$out"
