#!/usr/bin/env bash
# Proves the real-hypervisor platform on a real Xen: boots Debian's Xen 4.17
# with a Debian PV dom0 under QEMU (software emulation, no KVM needed), runs
# the xen-smoke program (crates/xen-core/examples/xen-smoke.rs) in dom0, and
# reports what it printed. Exit status 0 when the smoke test passed.
#
# Usage (as root, on Debian 12 or a machine with its apt sources):
#   .ci/xen-e2e/run.sh            # work files in $XENRX_E2E_DIR (default /tmp/xenrx-xen-e2e)
#
# Lessons kept from booting Xen under QEMU on this kind of machine: TCG only
# with `-cpu qemu64` (`-cpu max` crashes dom0, KVM here cannot run a stock
# kernel usefully); one dom0 vCPU; about 4 minutes cold.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
W=${XENRX_E2E_DIR:-/tmp/xenrx-xen-e2e}
TIMEOUT=${XENRX_E2E_TIMEOUT:-900}
mkdir -p "$W/debs" "$W/x" "$W/logs"
say() { printf '[xen-e2e +%ss] %s\n' "$SECONDS" "$*"; }

say "host packages"
missing=()
for p in qemu-system-x86 busybox-static cpio; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -q >"$W/logs/apt.log" 2>&1
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$W/logs/apt.log" 2>&1
fi

say "Debian's Xen hypervisor and dom0 kernel"
KV=$(apt-cache depends linux-image-amd64 | sed -n 's/.*Depends: linux-image-\([0-9].*-amd64\)$/\1/p' | head -1)
[ -n "$KV" ] || { echo "cannot find the kernel ABI of linux-image-amd64" >&2; exit 1; }
if [ ! -f "$W/x/boot/vmlinuz-$KV" ] || [ ! -f "$W/xen.elf" ]; then
  (cd "$W/debs" && apt-get download "linux-image-$KV" xen-hypervisor-4.17-amd64 >"$W/logs/download.log" 2>&1)
  for d in "$W"/debs/*.deb; do dpkg-deb -x "$d" "$W/x"; done
  # QEMU's multiboot loader wants the uncompressed ELF.
  gunzip -c "$W"/x/boot/xen-4.17-amd64.gz >"$W/xen.elf"
fi
KMOD="$W/x/lib/modules/$KV/kernel"

say "the smoke-test program, statically linked"
(cd "$root" && RUSTFLAGS="-C target-feature=+crt-static" cargo build -q --release \
  --example xen-smoke --no-default-features --features xen-devices --target x86_64-unknown-linux-gnu)
smoke="$root/target/x86_64-unknown-linux-gnu/release/examples/xen-smoke"

say "dom0 initramfs"
ir="$W/initramfs"
rm -rf "$ir" && mkdir -p "$ir"/{bin,proc,sys,dev,mods}
cp /bin/busybox "$ir/bin/"
cp "$smoke" "$ir/xen-smoke"
for m in xen-evtchn xen-gntdev xen-gntalloc; do
  cp "$KMOD/drivers/xen/$m.ko" "$ir/mods/"
done
cat >"$ir/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
echo "DOM0: $(cat /sys/hypervisor/type) $(cat /sys/hypervisor/version/major).$(cat /sys/hypervisor/version/minor)$(cat /sys/hypervisor/version/extra), kernel $(uname -r)"
for m in xen-evtchn xen-gntdev xen-gntalloc; do insmod /mods/$m.ko || echo "DOM0: insmod $m failed"; done
echo "DOM0: /dev/xen: $(ls /dev/xen | tr '\n' ' ')"
/xen-smoke
echo "DOM0-DONE"
poweroff -f
INIT
chmod +x "$ir/init"
(cd "$ir" && find . | cpio -o -H newc 2>/dev/null | gzip -1) >"$W/initramfs.cpio.gz"

say "boot Xen + dom0 under QEMU (TCG); this takes a few minutes"
log="$W/logs/boot.log"
: >"$log"
timeout "$TIMEOUT" qemu-system-x86_64 -accel tcg -cpu qemu64 -m 2048 -smp 2 -nographic -no-reboot \
  -kernel "$W/xen.elf" \
  -append "console=com1 com1=115200,8n1 dom0_mem=1024M,max:1024M dom0_max_vcpus=1 noreboot" \
  -initrd "$W/x/boot/vmlinuz-$KV console=hvc0 panic=-1,$W/initramfs.cpio.gz" >"$log" 2>&1 &
qemu=$!
while kill -0 "$qemu" 2>/dev/null; do
  if grep -aqE 'DOM0-DONE|Kernel panic|Panic on CPU' "$log"; then
    sleep 1
    kill "$qemu" 2>/dev/null || true
    break
  fi
  sleep 1
done
wait "$qemu" 2>/dev/null || true

say "dom0 said:"
grep -aE '^(DOM0|SMOKE|XEN-SMOKE)' "$log" | tr -d '\r' || true
if grep -aq 'XEN-SMOKE PASS' "$log"; then
  say "PASS (full log: $log)"
  exit 0
fi
say "FAIL (full log: $log)"
exit 1
