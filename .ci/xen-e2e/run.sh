#!/usr/bin/env bash
# Real Xen end to end (`npm run e2e:xen`): boots Debian's Xen 4.17 with a
# Debian dom0 under QEMU (software emulation: no KVM needed), and in dom0
# runs the platform smoke test (crates/xen-core/examples/xen-smoke.rs: grant
# map, grant copy, event channels) and `xenrx serve` (feature `xen`) beside
# Xen's C xenstored. A Linux PV
# domU then checks and measures a disk served by xenrx, by Linux's blkback
# and by QEMU's qdisk in turn, then a network interface served by xenrx
# (a TAP device in dom0's bridge) and by Linux's netback, and a second domU is paused, unpaused,
# rebooted, shut down and destroyed under xenrx, and with xenconsoled
# stopped (the last round: xenconsoled stays stopped), a domU's console is
# read and typed on through xenrx; before it, xenrx serve is SIGKILLed and
# started again 5 times under a domU verifying its disk, which each new
# process takes over. Prints one JSON line per
# backend and job, and fails unless every check passed.
#
# Usage, as root (or with sudo) on Debian 12 or a machine with its apt
# sources:   .ci/xen-e2e/run.sh
# Environment:
#   XENRX_E2E_DIR      work and cache directory (default /var/tmp/xenrx-e2e);
#                      nothing is installed into the host's /boot
#   XENRX_E2E_ROUNDS   rounds, dot-separated (default
#                      xenrx.blkback.poll.qdisk.vif.netback.lifecycle.restart.console;
#                      `poll` is the xenrx disk round with serve --poll-us
#                      1000; also `epoll` and `vifepoll`: the xenrx disk and vif
#                      rounds with the event loop waiting with epoll
#                      instead of io_uring)
#   XENRX_E2E_SECS     seconds per measured job (default 5)
#   XENRX_E2E_PROFILE  set: dom0 gets the host's perf (linux-perf) and
#                      profiles each disk round (CPU samples and system
#                      calls per thread, printed as E2E-PERF lines); xenrx
#                      keeps its symbols. `trace`: the disk rounds' guests
#                      read 4 KiB at depth 1 only, and dom0 traces
#                      interrupts, scheduling, system calls and block I/O
#                      to time each stage of a request, from the guest's
#                      event to the next (E2E-TRACE lines, timeline.awk)
#
# What the machine needs, found out on this kind of machine: TCG only with
# `-cpu qemu64` (`-cpu max` crashes dom0); one dom0 vCPU (two hang one boot
# in five); QEMU 7.2 unpacked from Debian's packages when no QEMU is
# installed (bookworm's qemu-system-x86 cannot be installed beside a newer
# qemu-utils); -initrd splits on commas, so dom0 settings use dots.
set -euo pipefail
# The whole script is read before it runs (the braces), so editing the file
# during a run cannot change what the run does.
{
# debootstrap, chroot and the dom0 image need root.
if [ "$(id -u)" -ne 0 ]; then exec sudo -E bash "$0" "$@"; fi

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
here="$root/.ci/xen-e2e"
W=${XENRX_E2E_DIR:-/var/tmp/xenrx-e2e}
ROUNDS=${XENRX_E2E_ROUNDS:-xenrx.blkback.poll.qdisk.vif.netback.lifecycle.restart.console}
SECS=${XENRX_E2E_SECS:-5}
BOOT_TIMEOUT=${XENRX_E2E_BOOT_TIMEOUT:-1500}
PROFILE=${XENRX_E2E_PROFILE:-}
# It goes on dom0's command line: one word.
case $PROFILE in '' | trace) ;; *) PROFILE=1 ;; esac
mkdir -p "$W/logs"
say() { printf '[xen-e2e +%ss] %s\n' "$SECONDS" "$*"; }

say "host packages"
need=()
for cmd in debootstrap:debootstrap cpio:cpio zstd:zstd depmod:kmod; do
  command -v "${cmd%%:*}" >/dev/null 2>&1 || need+=("${cmd#*:}")
done
[ -x /bin/busybox ] || need+=(busybox-static)
[ -z "$PROFILE" ] || [ -x /usr/bin/perf ] || need+=(linux-perf)
[ -f /usr/include/xenctrl.h ] || need+=(libxen-dev)
dpkg -s libclang-dev >/dev/null 2>&1 || need+=(libclang-dev)
# The libraries Debian's QEMU 7.2 links to (packages of their own: they
# install beside any other QEMU), in case it has to be unpacked below.
if ! command -v qemu-system-x86_64 >/dev/null 2>&1; then
  for lib in $(apt-cache depends qemu-system-x86 | awk '/Depends: lib/{print $2}'); do
    dpkg -s "$lib" >/dev/null 2>&1 || need+=("$lib")
  done
fi
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -q >"$W/logs/apt.log" 2>&1
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >>"$W/logs/apt.log" 2>&1 \
    || { cat "$W/logs/apt.log"; exit 1; }
fi

say "QEMU"
QEMU=$(command -v qemu-system-x86_64 || true)
QEMU_ARGS=()
if [ -z "$QEMU" ] || ! "$QEMU" --version >/dev/null 2>&1; then
  q="$W/qemu-7.2"
  if [ ! -f "$q/usr/lib/x86_64-linux-gnu/qemu/accel-tcg-x86_64.so" ]; then
    rm -rf "$q" "$W/qemu-debs" && mkdir -p "$W/qemu-debs"
    (cd "$W/qemu-debs" && apt-get download qemu-system-x86 qemu-system-common qemu-system-data seabios ipxe-qemu >"$W/logs/qemu-download.log" 2>&1)
    for d in "$W"/qemu-debs/*.deb; do dpkg-deb -x "$d" "$q"; done
    # The unpacked QEMU finds its firmware through -L: one directory with
    # QEMU's data files and the seabios and ipxe images they link to.
    mkdir -p "$q/firmware"
    for f in "$q"/usr/share/qemu/* "$q"/usr/share/seabios/* "$q"/usr/lib/ipxe/qemu/*; do
      [ -e "$f" ] && ln -sf "$f" "$q/firmware/$(basename "$f")"
    done
  fi
  QEMU="$q/usr/bin/qemu-system-x86_64"
  QEMU_ARGS=(-L "$q/firmware")
fi
"$QEMU" --version | head -1

say "Xen hypervisor and kernel"
KV=$(apt-cache depends linux-image-amd64 | sed -n 's/.*Depends: linux-image-\([0-9].*-amd64\)$/\1/p' | head -1)
XENV=$(apt-cache policy xen-hypervisor-4.17-amd64 | sed -n 's/.*Candidate: //p')
[ -n "$KV" ] && [ -n "$XENV" ] || { echo "cannot find the kernel or Xen package versions" >&2; exit 1; }
boot="$W/boot-$KV-$XENV"
if [ ! -f "$boot/xen.elf" ]; then
  rm -rf "$boot" && mkdir -p "$boot/debs" "$boot/x"
  (cd "$boot/debs" && apt-get download "linux-image-$KV" xen-hypervisor-4.17-amd64 >"$W/logs/boot-download.log" 2>&1)
  for d in "$boot"/debs/*.deb; do dpkg-deb -x "$d" "$boot/x"; done
  rm -rf "$boot/debs"
  # QEMU's multiboot loader takes the uncompressed ELF.
  gunzip -c "$boot"/x/boot/xen-4.17-amd64.gz >"$boot/xen.elf.tmp" && mv "$boot/xen.elf.tmp" "$boot/xen.elf"
fi
VMLINUZ="$boot/x/boot/vmlinuz-$KV"
KMOD="$boot/x/lib/modules/$KV"
say "kernel $KV, Xen $XENV"

say "dom0 root (cached by package versions)"
MIRROR=$(awk '/^URIs:/{print $2}' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -1)
SECMIRROR=$(awk '/^URIs:/{print $2}' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep security | head -1)
[ -n "$MIRROR" ] || MIRROR=http://deb.debian.org/debian
[ -n "$SECMIRROR" ] || SECMIRROR=http://deb.debian.org/debian-security
DOM0_PACKAGES="xen-utils-4.17 xenstore-utils qemu-system-xen kmod iproute2 util-linux procps"
key=$(printf '%s\n' "$XENV" "$DOM0_PACKAGES" "$(apt-cache policy qemu-system-xen | sed -n 's/.*Candidate: //p')" "base-1" | sha256sum | cut -c1-12)
base="$W/dom0-base-$key.cpio.zst"
if [ ! -f "$base" ]; then
  r="$W/dom0-base"
  rm -rf "$r"
  debootstrap --variant=minbase --include="${DOM0_PACKAGES// /,}" bookworm "$r" "$MIRROR" >"$W/logs/debootstrap.log" 2>&1 \
    || { tail -30 "$W/logs/debootstrap.log"; exit 1; }
  # Xen's tools must match the hypervisor, which comes from bookworm-security.
  printf 'deb %s bookworm main\ndeb %s bookworm-updates main\ndeb %s bookworm-security main\n' "$MIRROR" "$MIRROR" "$SECMIRROR" >"$r/etc/apt/sources.list"
  chroot "$r" apt-get update -q >"$W/logs/dom0-apt.log" 2>&1
  DEBIAN_FRONTEND=noninteractive chroot "$r" apt-get install -y -q --no-install-recommends $DOM0_PACKAGES >>"$W/logs/dom0-apt.log" 2>&1 \
    || { tail -30 "$W/logs/dom0-apt.log"; exit 1; }
  chroot "$r" dpkg-query -W xen-utils-4.17 qemu-system-xen | tee "$W/logs/dom0-versions.txt"
  sed -i 's/^#\?autoballoon=.*/autoballoon="off"/' "$r/etc/xen/xl.conf"
  rm -rf "$r"/usr/share/doc/* "$r"/usr/share/man/* "$r"/usr/share/locale/* "$r"/var/cache/apt/*.bin \
    "$r"/var/cache/apt/archives/*.deb "$r"/var/lib/apt/lists/*_*
  (cd "$r" && find . | cpio -o -H newc 2>/dev/null | zstd -3 -T2 -q >"$base.tmp") && mv "$base.tmp" "$base"
  rm -rf "$r"
fi

say "xenrx with feature xen, and its production dependencies"
pkg="$W/overlay/opt/xenrx"
rm -rf "$W/overlay" && mkdir -p "$pkg/native" "$W/overlay/usr/local/bin" "$W/overlay/root" "$W/overlay/etc/xen/scripts" "$W/overlay/usr/lib/modules"
# A profiled run keeps the symbols, so the samples name functions.
strip=symbols
[ -z "$PROFILE" ] || strip=none
(cd "$root" && CARGO_PROFILE_RELEASE_STRIP=$strip cargo build -q --release -p xen-core --lib --features xen \
  && cargo build -q --release -p xen-core --example xen-smoke --no-default-features --features xen-devices)
cp "$root/target/release/examples/xen-smoke" "$W/overlay/usr/local/bin/xen-smoke"
(cd "$root" && npm run -s build:ts)
cp "$root/target/release/libxen_core.so" "$pkg/native/xenrx.linux-x64-gnu.node"
cp "$root/native/binding.js" "$root/native/binding.d.ts" "$pkg/native/"
cp -r "$root/dist" "$root/package.json" "$root/package-lock.json" "$pkg/"
deps="$W/node-deps-$(sha256sum "$root/package-lock.json" | cut -c1-12)"
if [ ! -d "$deps/node_modules" ]; then
  rm -rf "$deps" && mkdir -p "$deps" && cp "$root/package.json" "$root/package-lock.json" "$deps/"
  (cd "$deps" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund >"$W/logs/npm-deps.log" 2>&1) || { cat "$W/logs/npm-deps.log"; exit 1; }
fi
cp -r "$deps/node_modules" "$pkg/"
cp "$(command -v node)" "$W/overlay/usr/local/bin/node"
printf '#!/bin/sh\nexec /usr/local/bin/node /opt/xenrx/dist/cli/main.js "$@"\n' >"$W/overlay/usr/local/bin/xenrx"
chmod +x "$W/overlay/usr/local/bin/xenrx"

say "test programs, domU initramfs, dom0 overlay"
gcc -O2 -static -pthread -o "$W/blkcheck" "$here/blkcheck.c" 2>"$W/logs/gcc.log" || { cat "$W/logs/gcc.log"; exit 1; }
gcc -O2 -static -o "$W/netcheck" "$here/netcheck.c" 2>"$W/logs/gcc.log" || { cat "$W/logs/gcc.log"; exit 1; }
gcc -O2 -static -pthread -o "$W/primitives" "$here/primitives.c" 2>"$W/logs/gcc.log" || { cat "$W/logs/gcc.log"; exit 1; }
du="$W/domu"
rm -rf "$du" && mkdir -p "$du"/{bin,proc,sys,dev,tmp}
cp /bin/busybox "$du/bin/"
cp "$W/blkcheck" "$W/netcheck" "$du/"
cp "$KMOD/kernel/drivers/block/xen-blkfront.ko" "$KMOD/kernel/drivers/net/xen-netfront.ko" "$du/"
cp "$here/domu-init.sh" "$du/init" && chmod +x "$du/init"
(cd "$du" && find . | cpio -o -H newc 2>/dev/null | gzip -1) >"$W/overlay/root/domU.cpio.gz"
cp "$VMLINUZ" "$W/overlay/root/vmlinuz"
cp "$W/blkcheck" "$W/netcheck" "$W/primitives" "$here/timeline.awk" "$W/overlay/usr/local/bin/"
cp "$here/hotplug.sh" "$W/overlay/etc/xen/scripts/e2e-hotplug"
cp "$here/dom0-init.sh" "$W/overlay/init"
chmod +x "$W/overlay/etc/xen/scripts/e2e-hotplug" "$W/overlay/init"
m="$W/overlay/usr/lib/modules/$KV"
mkdir -p "$m/kernel/drivers/net" "$m/kernel/net"
cp -a "$KMOD/kernel/drivers/xen" "$KMOD/kernel/drivers/block" "$m/kernel/drivers/"
# The network rounds: netback, TAP, and a bridge (with its dependencies).
cp -a "$KMOD/kernel/drivers/net/xen-netback" "$KMOD/kernel/drivers/net/tun.ko" "$m/kernel/drivers/net/"
cp -a "$KMOD/kernel/net/bridge" "$KMOD/kernel/net/802" "$KMOD/kernel/net/llc" "$m/kernel/net/"
cp "$KMOD"/modules.{builtin,builtin.modinfo,order} "$m/"
depmod -b "$W/overlay/usr" "$KV"
if [ -n "$PROFILE" ]; then
  # The host's perf and the libraries it needs that dom0's root lacks
  # (both are Debian 12: the C library is the same).
  pl="$W/overlay/usr/local/lib/perf"
  mkdir -p "$pl"
  cp /usr/bin/perf "$pl/perf"
  for l in $(ldd /usr/bin/perf | awk '$3 ~ /^\// {print $3}'); do
    case $(basename "$l") in libc.so.*|libm.so.*) ;; *) cp "$l" "$pl/" ;; esac
  done
  printf '#!/bin/sh\nLD_LIBRARY_PATH=/usr/local/lib/perf exec /usr/local/lib/perf/perf "$@"\n' >"$W/overlay/usr/local/bin/perf"
  chmod +x "$W/overlay/usr/local/bin/perf"
fi
# Two archives in one initramfs: the cached root, then this run's files.
(cd "$W/overlay" && find . | cpio -o -H newc 2>/dev/null | zstd -1 -T2 -q) >"$W/overlay.cpio.zst"
cat "$base" "$W/overlay.cpio.zst" >"$W/dom0.cpio"
say "dom0 initramfs $(du -m "$W/dom0.cpio" | cut -f1) MB"

boot_once() { # LOG
  local log=$1
  : >"$log"
  timeout "$BOOT_TIMEOUT" "$QEMU" "${QEMU_ARGS[@]}" -accel tcg -cpu qemu64 -m 4096 -smp 2 -nographic -no-reboot \
    -kernel "$boot/xen.elf" \
    -append "console=com1 com1=115200,8n1 dom0_mem=2560M,max:2560M dom0_max_vcpus=1 noreboot" \
    -initrd "$VMLINUZ console=hvc0 panic=-1 E2E_ROUNDS=$ROUNDS E2E_SECS=$SECS E2E_PROFILE=$PROFILE,$W/dom0.cpio" >"$log" 2>&1 &
  local qemu=$! started=$SECONDS
  while kill -0 "$qemu" 2>/dev/null; do
    if grep -aqE 'E2E-DONE|Kernel panic|Panic on CPU|reboot: Power down' "$log"; then
      sleep 2
      kill "$qemu" 2>/dev/null || true
      break
    fi
    # An emulator hang before dom0's init said anything.
    if [ $((SECONDS - started)) -gt 300 ] && ! grep -aq 'E2E-DOM0' "$log"; then
      kill "$qemu" 2>/dev/null || true
      break
    fi
    sleep 2
  done
  wait "$qemu" 2>/dev/null || true
}

say "boot Xen + dom0 under QEMU (TCG); rounds $ROUNDS"
log="$W/logs/boot.log"
boot_once "$log"
if ! grep -aq 'E2E-DOM0' "$log"; then
  say "dom0 printed nothing (an emulator hang); booting once more"
  mv "$log" "$W/logs/boot-hung.log"
  boot_once "$log"
fi
say "boot finished"
tr -d '\r' <"$log" | grep -a '^E2E-' >"$W/logs/e2e.log" || true
[ "$PROFILE" != trace ] || grep -a '^E2E-TRACE' "$W/logs/e2e.log" || true
XENRX_E2E_PROFILE=$PROFILE node "$here/report.mjs" "$W/logs/e2e.log" "$ROUNDS"
exit
}
