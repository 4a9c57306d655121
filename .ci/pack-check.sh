#!/usr/bin/env bash
# `npm run pack:check`: proves that a user's `npm install xenrx` of a prebuilt
# binary works. Builds the release addon, stages the platform package and the
# main package as `napi pre-publish` prepares them for publishing, packs both
# with `npm pack`, installs the two tarballs into an empty directory with no
# Rust toolchain on PATH, and runs the CLI from there. Then it checks the
# fallback for platforms without a prebuilt binary: the main package alone,
# plus `npx xenrx build-native`.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=$(mktemp -d -t xenrx-pack-check.XXXXXX)
trap 'rm -rf "$work"' EXIT
step() { printf '\n== pack:check: %s\n' "$*"; }

cd "$root"
arch=$(node -p 'process.arch')
case "$arch" in
  x64) triple=x86_64-unknown-linux-gnu ;;
  arm64) triple=aarch64-unknown-linux-gnu ;;
  *) echo "pack:check: no napi target for $arch" >&2; exit 1 ;;
esac
tag="linux-$arch-gnu"
version=$(node -p 'require("./package.json").version')

step "build the release addon and the TypeScript"
npm run --silent build

step "stage the packages as napi pre-publish does (targets: $triple)"
stage="$work/stage"
# shellcheck source=.ci/stage-packages.sh
source "$root/.ci/stage-packages.sh"
stage_packages "$stage" "$work" "$tag" "$triple"
node -e '
  const p = require(process.argv[1]);
  const want = process.argv[2];
  if (!p.optionalDependencies || p.optionalDependencies[want] !== p.version) {
    console.error("pack:check: main package does not depend on " + want); process.exit(1);
  }
' "$stage/package.json" "xenrx-$tag"

step "npm pack both packages"
(cd "$stage/npm/$tag" && npm pack --silent --pack-destination "$work" >/dev/null)
(cd "$stage" && npm pack --ignore-scripts --silent --pack-destination "$work" >/dev/null)
ls -l "$work"/*.tgz
tar -tzf "$work/xenrx-$version.tgz" > "$work/main-files.txt"
grep -qx 'package/native/binding.js' "$work/main-files.txt" || { echo "loader missing from main package" >&2; exit 1; }
grep -qx 'package/systemd/xenrx.service' "$work/main-files.txt" || { echo "systemd unit missing from main package" >&2; exit 1; }
if grep -q '\.node$' "$work/main-files.txt"; then echo "main package must not carry a binary" >&2; exit 1; fi
# Every source map and declaration map names sources the package ships,
# so stack traces and "go to definition" lead to files that exist.
mkdir -p "$work/unpacked"
tar -xzf "$work/xenrx-$version.tgz" -C "$work/unpacked"
node -e '
const fs = require("fs"), path = require("path");
const missing = [];
let maps = 0;
(function walk(dir) {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) walk(p);
    else if (p.endsWith(".map")) {
      maps += 1;
      const map = JSON.parse(fs.readFileSync(p, "utf8"));
      for (const s of map.sources) {
        if (!fs.existsSync(path.resolve(path.dirname(p), map.sourceRoot || "", s))) missing.push(`${p}: ${s}`);
      }
    }
  }
})(process.argv[1]);
if (maps === 0 || missing.length > 0) { console.error(`source maps: ${maps} found; missing sources:\n${missing.slice(0, 10).join("\n")}`); process.exit(1); }
console.log(`${maps} source maps, every source shipped`);
' "$work/unpacked/package"

step "licenses: the main package MIT, the platform package (feature xen, xenctrl-sys) GPL-3.0-only"
license_of() { tar -xzOf "$1" package/package.json | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).license))'; }
grep -qx 'package/LICENSE' "$work/main-files.txt" || { echo "LICENSE missing from the main package" >&2; exit 1; }
tar -xzOf "$work/xenrx-$version.tgz" package/LICENSE > "$work/main-license.txt"
grep -q '^MIT License' "$work/main-license.txt" || { echo "main package LICENSE is not MIT" >&2; exit 1; }
[ "$(license_of "$work/xenrx-$version.tgz")" = MIT ] || { echo "main package license field is not MIT" >&2; exit 1; }
platform_tgz="$work/xenrx-$tag-$version.tgz"
# Listings and files go to disk before grep reads them: `grep -q` stops at
# the first match, and under pipefail the writer's SIGPIPE would fail the
# check at random.
tar -tzf "$platform_tgz" > "$work/platform-files.txt"
grep -qx 'package/LICENSE' "$work/platform-files.txt" || { echo "LICENSE missing from the platform package" >&2; exit 1; }
tar -xzOf "$platform_tgz" package/LICENSE > "$work/platform-license.txt"
grep -q 'GNU GENERAL PUBLIC LICENSE' "$work/platform-license.txt" || { echo "platform package LICENSE is not the GPL" >&2; exit 1; }
[ "$(license_of "$platform_tgz")" = GPL-3.0-only ] || { echo "platform package license field is not GPL-3.0-only" >&2; exit 1; }

# PATH without any Rust toolchain: only node/npm's directory and the base system.
nodedir=$(dirname "$(command -v node)")
norust_path="$nodedir:/usr/bin:/bin"
if PATH="$norust_path" command -v cargo >/dev/null 2>&1; then
  echo "pack:check: cargo is still reachable on $norust_path" >&2; exit 1
fi

step "install the prebuilt package in an empty directory, without Rust"
user="$work/user"
mkdir -p "$user"
(
  cd "$user"
  export PATH="$norust_path"
  npm init -y --silent >/dev/null
  # npm 11 warns about a dependency's install scripts (a tarball's
  # `prepare` too) that allowScripts does not cover: the packages ship
  # none, so a user's install prints no such warning.
  npm install --no-audit --no-fund --loglevel warn "$work/xenrx-$version.tgz" "$work/xenrx-$tag-$version.tgz" 2>&1 | tee "$work/install.log"
  if grep -q 'install-scripts' "$work/install.log"; then
    echo "pack:check: npm found install scripts in the packages (see above)" >&2; exit 1
  fi
  npx --no-install xenrx --help
  info=$(npx --no-install xenrx info)
  echo "$info"
  node -e '
    const info = JSON.parse(process.argv[1]);
    if (info.version !== info.package) { console.error("native core version mismatch"); process.exit(1); }
  ' "$info"
  node --input-type=module -e 'import { nativeInfo, version } from "xenrx"; console.log("import xenrx:", version, nativeInfo().target);'
  # The README's XenStore example, twice on one state file: the second
  # daemon finds the first one's counter.
  state=$(mktemp -d)
  cat > xenstore-example.mjs <<EOF
import { XenStore, Xenstored } from 'xenrx';

const daemon = Xenstored.start({ socket: '$state/xs.sock', stateFile: '$state/xs.state', log: false });
const xs = await XenStore.connect({ path: daemon.socket });
await xs.write('/local/domain/1/name', 'guest1');
await xs.setPerms('/local/domain/1', ['n0', 'r1']);
await xs.transaction(async (tx) => {
  const n = Number((await tx.tryRead('/counter')) ?? '0');
  await tx.write('/counter', String(n + 1));
});
console.log('counter', await xs.read('/counter'));
xs.close();
daemon.stop();
EOF
  [ "$(node xenstore-example.mjs)" = "counter 1" ]
  [ "$(node xenstore-example.mjs)" = "counter 2" ]
  [ -f "$state/xs.state.journal.0" ]
  npx --no-install xenrx xenstored --help > xenstored-help.txt
  grep -q -- '--no-fsync' xenstored-help.txt
  echo "XenStore example: the counter survived a daemon restart"
  rm -rf "$state"
  # The README's block example, from the installed package: a guest's disk
  # in memory, written and read back through the Rust data path.
  cat > block-example.mjs <<'EOF'
import { BlockService, SimulatedHost, XenbusRegistry } from 'xenrx';

const host = await SimulatedHost.start();
const registry = await XenbusRegistry.create(host.dom0, { domains: host.domains });
const disks = new BlockService({ platform: host.platform });
await registry.register('vbd', disks.ops);
const guest = await host.createGuest(1, 'guest1');
const disk = await host.addDisk(guest, { params: 'memory:64M', ringPageOrder: 2 });
await disk.write(0, Buffer.alloc(65536, 0xab));
console.log((await disk.read(0, 512)).subarray(0, 4).toString('hex'), disks.stats(1, 51712)?.requests);
await registry.close();
await host.stop();
EOF
  [ "$(node block-example.mjs)" = "abababab 2" ]
  echo "block example: a guest's disk written and read back"
  npx --no-install xenrx serve --help > serve-help.txt
  grep -q -- '--simulated' serve-help.txt
)

step "fallback: main package alone, then npx xenrx build-native (with Rust)"
fallback="$work/fallback"
mkdir -p "$fallback"
(
  cd "$fallback"
  npm init -y --silent >/dev/null
  npm install --silent --no-audit --no-fund --omit=optional "$work/xenrx-$version.tgz"
  # build-native keeps what it builds here (and the loader looks here last).
  export XENRX_CACHE_DIR="$work/cache"
  if npx --no-install xenrx info 2> no-addon.txt; then echo "pack:check: addon loaded before it was built" >&2; exit 1; fi
  grep -q 'npx xenrx build-native' no-addon.txt || { echo "pack:check: no advice without an addon:" >&2; cat no-addon.txt >&2; exit 1; }
  # The pure parts import and work without the addon (and without Rust).
  PATH="$norust_path" node --input-type=module -e 'import { canTransition, nativeLoad } from "xenrx"; if (!canTransition("running", "paused") || !nativeLoad().error) process.exit(1); console.log("pure API without the addon: ok");'
  CARGO_TARGET_DIR="$root/target/pack-check" npx --no-install xenrx build-native
  npx --no-install xenrx info
  # A reinstall empties the package's directory: the build in the cache is found.
  rm -rf node_modules/xenrx
  npm install --silent --no-audit --no-fund --omit=optional "$work/xenrx-$version.tgz"
  npx --no-install xenrx info > reinstalled-info.txt
  grep -q "\"addon\":\"$XENRX_CACHE_DIR/" reinstalled-info.txt || { echo "pack:check: the cached build was not found after a reinstall" >&2; exit 1; }
  echo "reinstall: the addon built before is found in the cache"
)

step "passed"
