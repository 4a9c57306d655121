# Sourced by pack-check.sh and release-dry-run.sh: stages the packages as
# the release's publish job prepares them, in a copy (the work tree is left
# alone). Run from the repository root, after `npm run build`.
#
#   stage_packages STAGE WORK TAG TRIPLE
#
# STAGE gets the main package as `npm pack` would ship it (without the
# clone's `prepare` script, as the release publishes it), with npm/ beside
# it; the host's addon (native/xenrx.TAG.node) goes into npm/TAG; the main
# package's napi targets are cut to TRIPLE (napi checks that each target's
# binary is there, and here only the host's is); `napi prepublish` then
# adds the platform package to its optionalDependencies. WORK holds the
# intermediate tarball.
stage_packages() {
  local stage=$1 work=$2 tag=$3 triple=$4 root=$PWD version
  version=$(node -p 'require("./package.json").version')
  mkdir -p "$stage"
  npm pack --ignore-scripts --silent --pack-destination "$work" >/dev/null
  tar -xzf "$work/xenrx-$version.tgz" -C "$stage" --strip-components=1
  rm "$work/xenrx-$version.tgz"
  # `prepare` builds a clone (Rust and TypeScript); the package is built
  # already, and npm 11 would list the script for a user to approve.
  (cd "$stage" && npm pkg delete scripts.prepare)
  cp -r npm "$stage/npm"
  cp "native/xenrx.$tag.node" "$stage/npm/$tag/"
  node -e '
    const fs = require("fs"); const p = JSON.parse(fs.readFileSync(process.argv[1]));
    p.napi.targets = [process.argv[2]]; fs.writeFileSync(process.argv[1], JSON.stringify(p, null, 2));
  ' "$stage/package.json" "$triple"
  (cd "$stage" && git init -q && "$root/node_modules/.bin/napi" prepublish -t npm --no-gh-release --skip-optional-publish >/dev/null)
}
