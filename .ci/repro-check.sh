#!/usr/bin/env bash
# Reproducible native binaries: the release addon (`xenrx.<platform>.node`)
# built twice from the same commit, in two different directories, with the
# same toolchain, must be byte for byte the same. This is what lets anyone
# rebuild a published binary and compare it with the one on npm.
#
#   .ci/repro-check.sh [--features LIST] [--target TRIPLE]
#       Copies HEAD (`git archive`) into two temporary directories of
#       different names and depths, builds the release addon in each with
#       `build` below, both at once (fresh target directories: full builds
#       of every crate; only the registry download cache is shared;
#       REPRO_SEQUENTIAL=1 builds one after the other), and compares the
#       SHA-256 of the two .node files. On a mismatch it shows where they
#       differ.
#       It also fails if a binary names a build directory, $CARGO_HOME or
#       $HOME. REPRO_SOURCE=worktree copies the work tree (tracked and
#       untracked, not ignored files) instead of HEAD, to try uncommitted
#       changes.
#
#   .ci/repro-check.sh build [--features LIST] [--target TRIPLE]
#       Builds the release addon in this checkout, into native/, the way the
#       release workflow builds the published binaries; prints its SHA-256.
#       Use it to rebuild a published binary (README.md, "Release trust").
#
# What makes the build reproducible: rustc's output depends only on its
# inputs except for the file paths it embeds (panic locations of the crates
# from the registry, paths under OUT_DIR). `build` maps the checkout, the
# target directory and $CARGO_HOME to fixed names with --remap-path-prefix
# (cargo's `trim-paths` is not stable yet), and sets RUSTFLAGS itself so that
# flags from the environment cannot change the code. The release profile
# strips symbols and debug information (root Cargo.toml), so no absolute
# path survives in DWARF either. The GNU build-id is kept: it is a hash of
# the linked output, so it is the same whenever the rest is.
# SOURCE_DATE_EPOCH is set to the commit time for any build step that would
# otherwise stamp the current time (none does today).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
  exit 2
}

mode=check
if [ "${1:-}" = build ]; then mode=build; shift; fi
features=""
target=""
while [ $# -gt 0 ]; do
  case "$1" in
    --features) features=${2:?--features needs a value}; shift 2 ;;
    --features=*) features=${1#--features=}; shift ;;
    --target) target=${2:?--target needs a value}; shift 2 ;;
    --target=*) target=${1#--target=}; shift ;;
    -h|--help) usage ;;
    *) echo "repro-check: unknown argument '$1'" >&2; usage ;;
  esac
done

# build DIR: the release addon of the checkout DIR, into DIR/native/.
build() {
  local dir cargo_home target_dir flags v
  dir=$(cd "$1" && pwd -P)
  cd "$dir"
  [ -x node_modules/.bin/napi ] || { echo "repro-check: $dir/node_modules/.bin/napi missing (run npm ci first)" >&2; return 1; }
  cargo_home=${CARGO_HOME:-$HOME/.cargo}
  # Flags and profile settings from the environment would make a different
  # binary: the build uses the repository's settings only.
  for v in RUSTFLAGS CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_RUSTFLAGS $(compgen -e | grep -E '^CARGO_(PROFILE_|TARGET_.*_RUSTFLAGS$)' || true); do
    if [ -n "${!v:-}" ]; then echo "repro-check: ignoring $v from the environment" >&2; fi
    unset "$v"
  done
  target_dir=$(cargo metadata --no-deps --format-version 1 --manifest-path crates/xen-core/Cargo.toml \
    | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).target_directory))')
  # The last matching prefix wins: the most specific directories come last.
  flags="--remap-path-prefix=$dir=/xenrx --remap-path-prefix=$target_dir=/xenrx/target"
  flags+=" --remap-path-prefix=$cargo_home=/cargo"
  if [ -d "$cargo_home" ] && [ "$(cd "$cargo_home" && pwd -P)" != "$cargo_home" ]; then
    flags+=" --remap-path-prefix=$(cd "$cargo_home" && pwd -P)=/cargo"
  fi
  export RUSTFLAGS="$flags"
  SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -c safe.directory="$root" -C "$root" log -1 --format=%ct HEAD 2>/dev/null || echo 1)}
  export SOURCE_DATE_EPOCH
  echo "repro-check: building in $dir ($(rustc --version); features: ${features:-default}; target: ${target:-host})"
  # The arguments of `npm run build:native` (package.json), plus the target.
  node_modules/.bin/napi build --release --platform --esm \
    --manifest-path crates/xen-core/Cargo.toml --package-json-path package.json \
    --output-dir native --js binding.js --dts binding.d.ts --no-const-enum \
    ${features:+--features "$features"} ${target:+--target "$target"}
}

# The one .node file that `build` wrote into DIR/native/.
addon_of() {
  local found=("$1"/native/xenrx.*.node)
  [ ${#found[@]} -eq 1 ] && [ -f "${found[0]}" ] || { echo "repro-check: expected one .node file in $1/native, found: ${found[*]}" >&2; return 1; }
  echo "${found[0]}"
}

if [ "$mode" = build ]; then
  start=$(date +%s)
  rm -f "$root"/native/xenrx.*.node
  (build "$root")
  node=$(addon_of "$root")
  sha256sum "$node"
  echo "repro-check: built in $(( $(date +%s) - start )) s"
  exit 0
fi

# check: two full builds in two directories, then compare.
command -v git >/dev/null && command -v cargo >/dev/null && command -v node >/dev/null \
  || { echo "repro-check: needs git, cargo and node" >&2; exit 1; }
[ -d "$root/node_modules/@napi-rs/cli" ] || { echo "repro-check: run npm ci first (needs @napi-rs/cli)" >&2; exit 1; }

work=$(mktemp -d -t xenrx-repro.XXXXXX)
trap 'rm -rf "$work"' EXIT
# Different names and depths, so that any embedded path shows up as a difference.
dir_a="$work/a/xenrx"
dir_b="$work/second-build/deeper/src"

copy_source() {
  mkdir -p "$1"
  if [ "${REPRO_SOURCE:-head}" = worktree ]; then
    (cd "$root" && git ls-files -z --cached --others --exclude-standard \
      | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
      | tar --null -T - -cf -) | tar -xf - -C "$1"
  else
    git -C "$root" archive --format=tar HEAD | tar -xf - -C "$1"
  fi
  ln -s "$root/node_modules" "$1/node_modules"
}

what="HEAD ($(git -C "$root" rev-parse --short HEAD))"
[ "${REPRO_SOURCE:-head}" = worktree ] && what="the work tree of $what"
echo "repro-check: two release builds of $what"
copy_source "$dir_a"
copy_source "$dir_b"

total_start=$(date +%s)
# Both builds at once: on two cores a single build leaves a core idle for
# much of its time, and two concurrent builds also vary the scheduling.
# Each has a fresh target directory inside its copy: never a shared or an
# earlier build. REPRO_SEQUENTIAL=1 builds one after the other.
one_build() { # N DIR: one full build, its output in build-N.log
  (
    t0=$(date +%s)
    unset CARGO_TARGET_DIR CARGO_BUILD_TARGET_DIR
    build "$2"
    echo "repro-check: build took $(( $(date +%s) - t0 )) s"
  ) > "$work/build-$1.log" 2>&1
}
# Started with `&` and collected with `wait`, never as `one_build || ...`:
# that would switch off `set -e` inside the build.
status=(0 0)
if [ "${REPRO_SEQUENTIAL:-0}" = 1 ]; then
  one_build 1 "$dir_a" & wait $! || status[0]=$?
  one_build 2 "$dir_b" & wait $! || status[1]=$?
else
  one_build 1 "$dir_a" & pid_a=$!
  one_build 2 "$dir_b" & pid_b=$!
  wait "$pid_a" || status[0]=$?
  wait "$pid_b" || status[1]=$?
fi
for i in 1 2; do
  log="$work/build-$i.log"
  if [ "${status[$((i - 1))]}" -ne 0 ]; then
    tail -n 40 "$log" >&2
    echo "repro-check: build $i failed" >&2
  else
    echo "build $i: $(head -n 1 "$log" | sed 's/^repro-check: //')"
    echo "build $i: $(tail -n 1 "$log" | sed 's/^repro-check: //')"
  fi
done
[ "${status[0]}" -eq 0 ] && [ "${status[1]}" -eq 0 ] || exit 1

a=$(addon_of "$dir_a")
b=$(addon_of "$dir_b")
sum_a=$(sha256sum "$a" | cut -d' ' -f1)
sum_b=$(sha256sum "$b" | cut -d' ' -f1)
echo "repro-check: $sum_a  build 1 ($(stat -c %s "$a") bytes)"
echo "repro-check: $sum_b  build 2 ($(stat -c %s "$b") bytes)"

# Paths of this machine in a binary: each one is a reproducibility leak,
# even when both builds happen to share it (e.g. $CARGO_HOME).
leaks=0
for f in "$a" "$b"; do
  label="build 1"; [ "$f" = "$a" ] || label="build 2"
  strings -a "$f" > "$work/strings.txt"
  for p in "$dir_a" "$dir_b" "$work" "${CARGO_HOME:-$HOME/.cargo}" "${RUSTUP_HOME:-$HOME/.rustup}" ${HOME:+"${HOME%/}/"}; do
    [ "$p" != / ] || continue
    if grep -qF -- "$p" "$work/strings.txt"; then
      echo "repro-check: the binary of $label contains the path $p:" >&2
      grep -F -- "$p" "$work/strings.txt" | head -n 5 >&2
      leaks=1
    fi
  done
done

if [ "$sum_a" = "$sum_b" ] && [ "$leaks" -eq 0 ]; then
  echo "repro-check: identical, reproducible (both builds $(( $(date +%s) - total_start )) s)"
  exit 0
fi

if [ "$sum_a" != "$sum_b" ]; then
  echo "repro-check: the two builds differ" >&2
  echo "-- first differing bytes (offset, octal a, octal b); $({ cmp -l "$a" "$b" 2>/dev/null || true; } | wc -l) bytes differ in all:" >&2
  { cmp -l "$a" "$b" 2>/dev/null || true; } | head -n 10 >&2
  first=$({ cmp "$a" "$b" 2>/dev/null || true; } | awk '{print $5}' | tr -d ,)
  if [ -n "$first" ]; then
    # The section holding the first difference (readelf prints hex offsets).
    at=$((first - 1)) where="no section (ELF headers or padding)"
    while read -r name _type _addr off size _; do
      if [[ $off =~ ^[0-9a-f]+$ && $size =~ ^[0-9a-f]+$ ]] && (( at >= 16#$off && at < 16#$off + 16#$size )); then
        where="section $name"
      fi
    done < <(readelf -S -W "$a" | sed -n 's/^ *\[ *[0-9]*\] //p')
    echo "-- the first difference, at byte $at, is in $where" >&2
  fi
  echo "-- section headers (diff a b):" >&2
  diff <(readelf -S -W "$a" | sed 1,4d) <(readelf -S -W "$b" | sed 1,4d) >&2 || true
  for f in "$a" "$b"; do
    echo "-- build id of $f: $(readelf -n "$f" 2>/dev/null | sed -n 's/.*Build ID: //p')" >&2
  done
  echo "-- strings only in one build (diff a b, first 40 lines):" >&2
  diff <(strings -a "$a") <(strings -a "$b") | head -n 40 >&2 || true
fi
exit 1
