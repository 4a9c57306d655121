#!/usr/bin/env bash
# Static analysis of the GitHub Actions workflows with zizmor
# (https://docs.zizmor.sh): fails on any finding of severity low or higher,
# so only informational findings pass.
#
# Uses `zizmor` from PATH when it is exactly the pinned version; otherwise
# installs the pinned version (wheel only, hash-checked) into a temporary
# virtualenv that is removed on exit. Offline: no GitHub API calls.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ZIZMOR_VERSION=1.32.0

zizmor=""
if command -v zizmor >/dev/null 2>&1 \
  && [ "$(zizmor --version 2>/dev/null)" = "zizmor $ZIZMOR_VERSION" ]; then
  zizmor=zizmor
else
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  # SHA-256 of the zizmor 1.32.0 wheels on PyPI (binary wheels, no dependencies).
  cat >"$tmp/requirements.txt" <<EOF
zizmor==$ZIZMOR_VERSION \\
  --hash=sha256:84a6acb975accc13408786a2bd274b572537ca19c933ebbc13e78f3988562071 \\
  --hash=sha256:0cdd38fca6eb34ceb567548548d706332e3535ea66894b9168c048e03207b68c \\
  --hash=sha256:bddcdb0e37d1aa53c9f831c55627a5829d0d552cb0afb4b80fbe16a3a3140366 \\
  --hash=sha256:dd818f99d833b86cd432d5412d620d936b5df074b33404fff8b67acff55d3259 \\
  --hash=sha256:d34dcfa702875202b4163d90ebb9cc5222f3d1a7d4b72bf796d87b5a15b24194 \\
  --hash=sha256:3f404b26791ed06a5ea9eaa0bfd5b973fc5228bac7db8b3c5ec7f0c7ad2ed16d \\
  --hash=sha256:aa4b4e216321dd5cf202cd79fc83296468f0eed79d850cd65ac8187a6bbc5496 \\
  --hash=sha256:0a999c98015becd9f69919ce01febadfb1c2be9b8ec2ce9ef7eb13ff23ba8eba
EOF
  pip_args=(install --quiet --disable-pip-version-check --no-deps
    --only-binary=:all: --require-hashes -r "$tmp/requirements.txt")
  if python3 -m venv "$tmp/venv" >/dev/null 2>&1; then
    "$tmp/venv/bin/python" -m pip "${pip_args[@]}"
    zizmor="$tmp/venv/bin/zizmor"
  elif python3 -m pip --version >/dev/null 2>&1; then
    # No venv module (Debian without python3-venv): install into a private
    # directory instead, leaving the system and the user's site untouched.
    python3 -m pip "${pip_args[@]}" --target "$tmp/pkgs"
    zizmor="$tmp/pkgs/bin/zizmor"
  else
    echo ".ci/zizmor.sh: need python3 with venv or pip (Debian: apt-get install python3-venv)" >&2
    exit 1
  fi
fi

"$zizmor" --version
# Exit status is non-zero when any finding at or above the minimum severity
# remains (zizmor exits 0 only when there is nothing to report).
"$zizmor" --offline --min-severity low .github/workflows/
