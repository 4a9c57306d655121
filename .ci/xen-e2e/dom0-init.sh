#!/bin/bash
# /init of dom0 in the real-Xen end-to-end run. Starts Xen's C xenstored and
# xenconsoled, then gives the same domU workload a disk from each backend in
# turn (xenrx, Linux blkback, QEMU's qdisk), and a network interface from
# each (xenrx on a TAP device, Linux netback), then drives a domU's lifecycle
# (pause, unpause, shutdown, reboot, destroy) under xenrx, then stops
# xenconsoled and reads and types on a domU's console served by xenrx. Everything the host
# needs is printed on the console as lines starting with "E2E-".
# The kernel passes E2E_* settings from its command line as environment.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm /run /tmp
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
mkdir -p /run/lock /run/xen /run/xenstored /var/log/xen/console /var/lib/xen /var/lib/xenstored

ROUNDS=${E2E_ROUNDS:-xenrx.blkback.poll.qdisk.vif.netback.lifecycle.restart.console}
SECS=${E2E_SECS:-5}
DISK_MB=${E2E_DISK_MB:-64}
DOMU_TIMEOUT=${E2E_DOMU_TIMEOUT:-300}
PROFILE=${E2E_PROFILE:-}
up() { cut -d' ' -f1 /proc/uptime; }
say() { echo "E2E-DOM0 [$(up)] $*"; }
check() { echo "E2E-CHECK {\"check\":\"$1\",\"ok\":$2,\"detail\":\"$3\"}"; }

say "init: $(cat /sys/hypervisor/type) $(cat /sys/hypervisor/version/major).$(cat /sys/hypervisor/version/minor)$(cat /sys/hypervisor/version/extra), kernel $(uname -r), rounds $ROUNDS"
for m in xen-privcmd xenfs xen-evtchn xen-gntdev xen-gntalloc loop; do modprobe "$m" || say "modprobe $m failed"; done
mount -t xenfs xenfs /proc/xen
/usr/lib/xen-4.17/bin/xenstored --pid-file /run/xenstored.pid || say "xenstored failed"
/usr/lib/xen-4.17/bin/xen-init-dom0 >/dev/null || say "xen-init-dom0 failed"
/usr/lib/xen-4.17/bin/xenconsoled --log=guest --log-dir=/var/log/xen/console --pid-file=/run/xenconsoled.pid || say "xenconsoled failed"
say "xenstored, xenconsoled up; $(xl info | grep -E '^free_memory')"
# The platform's device code on the real hypervisor, before any guest.
/usr/local/bin/xen-smoke 2>&1 | sed 's/^/E2E-SMOKE /'
# The network rounds' dom0 side: a bridge with an address, where the
# guests' vifs go, and the server of the guests' network workload.
for m in tun bridge; do modprobe "$m" || say "modprobe $m failed"; done
{ ip link add xenbr0 type bridge && ip addr add 10.0.0.1/24 dev xenbr0 && ip link set xenbr0 up; } || say "bridge xenbr0 failed"
/usr/local/bin/netcheck serve 5001 >/var/log/netcheck.log 2>&1 &
VIF_SPEC="mac=00:16:3e:e2:e0:02, bridge=xenbr0, script=/etc/xen/scripts/e2e-hotplug"

# domU NAME MODE SEED DISKSPEC [VIFSPEC]: a domU with one disk (none if
# DISKSPEC is empty) and a network interface if VIFSPEC is given.
domu_config() {
  cat >"/root/$1.cfg" <<EOF
name="e2e-$1"
type="pv"
memory=256
vcpus=1
kernel="/root/vmlinuz"
ramdisk="/root/domU.cpio.gz"
extra="console=hvc0 panic=-1 E2E_MODE=$2 E2E_SEED=$3 E2E_SECS=$SECS"
disk=[${4:+'$4'}]
vif=[${5:+'$5'}]
on_poweroff="destroy"
on_reboot="restart"
on_crash="destroy"
EOF
}

wait_gone() { # NAME TIMEOUT
  local id u end
  id=$(xl domid "$1" 2>/dev/null) || return 0
  read -r u _ </proc/uptime
  end=$((${u%.*} + $2))
  # This runs beside the measured jobs, so it asks seldom and cheaply: a
  # XenStore client while the domain's directory is there (xl costs dom0
  # far more under emulation), then xl, until the hypervisor has let the
  # domain go too; the clock is read without starting a process.
  while xenstore-exists "/local/domain/$id" 2>/dev/null || xl domid "$1" >/dev/null 2>&1; do
    read -r u _ </proc/uptime
    [ "${u%.*}" -lt "$end" ] || return 1
    sleep 3
  done
}

wait_log() { # FILE REGEX TIMEOUT
  local end=$(($(cut -d. -f1 /proc/uptime) + $3))
  until grep -qE "$2" "$1" 2>/dev/null; do
    [ "$(cut -d. -f1 /proc/uptime)" -lt "$end" ] || return 1
    sleep 0.5
  done
}

console_of() { # NAME PREFIX
  tr -d '\r' <"/var/log/xen/console/guest-e2e-$1.log" 2>/dev/null | sed "s/^/$2 /"
  : >"/var/log/xen/console/guest-e2e-$1.log"
}

# With E2E_PROFILE: dom0's CPU samples and system calls while a disk round
# runs, summed up per thread and function (samples) and per thread and
# call number (system calls). With E2E_PROFILE=trace: the events that time
# each stage of a request at depth 1 (timeline.awk).
profile_start() { # NAME
  [ -n "$PROFILE" ] || return 0
  mountpoint -q /sys/kernel/tracing || mount -t tracefs nodev /sys/kernel/tracing
  if [ "$PROFILE" = trace ]; then
    perf record -q -a -e irq:irq_handler_entry -e sched:sched_wakeup -e sched:sched_switch \
      -e raw_syscalls:sys_enter -e raw_syscalls:sys_exit -e block:block_rq_issue -e block:block_rq_complete \
      --exclude-perf -o "/root/trace-$1.data" >/dev/null 2>&1 &
    PERF_SYS=$!
    return 0
  fi
  perf record -q -a -F 499 -e cpu-clock -o "/root/perf-cpu-$1.data" >/dev/null 2>&1 &
  PERF_CPU=$!
  perf record -q -a -e raw_syscalls:sys_enter --exclude-perf -o "/root/perf-sys-$1.data" >/dev/null 2>&1 &
  PERF_SYS=$!
  PERF_T0=$(up)
}

profile_stop() { # NAME
  [ -n "$PROFILE" ] || return 0
  if [ "$PROFILE" = trace ]; then
    kill -INT "$PERF_SYS" 2>/dev/null
    wait "$PERF_SYS" 2>/dev/null
    perf script -i "/root/trace-$1.data" -F comm,tid,time,event,trace 2>/dev/null >"/root/trace-$1.txt"
    awk -f /usr/local/bin/timeline.awk "/root/trace-$1.txt" | sed "s/^/E2E-TRACE[$1] /"
    rm -f "/root/trace-$1.data" "/root/trace-$1.txt"
    return 0
  fi
  kill -INT "$PERF_CPU" "$PERF_SYS" 2>/dev/null
  wait "$PERF_CPU" "$PERF_SYS" 2>/dev/null
  echo "E2E-PERF[$1] window $(awk "BEGIN{print $(up)-$PERF_T0}") s at 499 samples/s"
  perf report -i "/root/perf-cpu-$1.data" --stdio -n --no-children --sort comm --percent-limit 0.5 2>/dev/null \
    | grep -v '^$' | grep -v '^# [^S]' | sed "s/^/E2E-PERF[$1] comm /"
  perf report -i "/root/perf-cpu-$1.data" --stdio -n --no-children --sort comm,dso,sym --percent-limit 0.3 2>/dev/null \
    | grep -v '^#' | grep -v '^$' | head -100 | sed "s/^/E2E-PERF[$1] sym /"
  perf script -i "/root/perf-sys-$1.data" -F comm,trace 2>/dev/null \
    | awk '{ if (match($0, /NR [0-9]+/)) { n[$1 " " substr($0, RSTART + 3, RLENGTH - 3)]++ } } END { for (k in n) print n[k], k }' \
    | sort -rn | head -50 | sed "s/^/E2E-PERF[$1] syscalls /"
  rm -f "/root/perf-cpu-$1.data" "/root/perf-sys-$1.data"
}

run_bench() { # NAME SEED DISKSPEC [VIFSPEC]: the domU measures its disk, or its vif
  local mode=net
  [ -z "$3" ] || mode=$([ "$PROFILE" = trace ] && echo depth1 || echo bench)
  domu_config "$1" "$mode" "$2" "$3" "${4:-}"
  say "$1: xl create"
  local start
  start=$(up)
  if ! xl create "/root/$1.cfg" >"/var/log/xen/xl-create-$1.log" 2>&1; then
    say "$1: xl create failed"
    sed "s/^/E2E-XL[$1] /" "/var/log/xen/xl-create-$1.log" | tail -30
    check "$1-created" false "xl create failed"
    return 1
  fi
  say "$1: created in $(awk "BEGIN{print $(up)-$start}") s"
  profile_start "$1"
  if ! wait_gone "e2e-$1" "$DOMU_TIMEOUT"; then
    say "$1: domU still running after $DOMU_TIMEOUT s; destroying it"
    xl destroy "e2e-$1"
    check "$1-finished" false "the domU did not power off"
  fi
  say "$1: domU gone $(awk "BEGIN{print $(up)-$start}") s after xl create"
  profile_stop "$1"
  console_of "$1" "E2E-CONSOLE[$1]"
  [ -n "$3" ] || return 0
  # The image holds what the guest wrote and read back.
  /usr/local/bin/blkcheck "/root/disk-$1.img" verify-pattern 8 "$2" | sed "s/^E2E-JOB /E2E-IMAGE[$1] /"
}

start_xenrx() { # [TYPES [EVENT_WAIT [SERVE_OPTIONS...]]]
  local types=${1:-vbd} wait=${2:-}
  shift 2 2>/dev/null || shift $#
  : >/var/log/xenrx.log
  XENRX_EVENT_WAIT=$wait xenrx serve --types "$types" --debug 1 "$@" >>/var/log/xenrx.log 2>&1 &
  XENRX_PID=$!
  if wait_log /var/log/xenrx.log "serving $types" 300; then
    say "xenrx serve ready (pid $XENRX_PID)"
  else
    say "xenrx serve did not start"
    sed 's/^/E2E-XENRX /' /var/log/xenrx.log
    return 1
  fi
}

stop_xenrx() { # ROUND
  kill -TERM "$XENRX_PID" 2>/dev/null
  wait "$XENRX_PID"
  local rc=$?
  say "xenrx serve exited with status $rc"
  sed "s/^/E2E-XENRX[$1] /" /var/log/xenrx.log
  [ $rc = 0 ] && check "$1-xenrx-exit" true "status 0" || check "$1-xenrx-exit" false "status $rc"
}

# What a system call, a read from the page cache, a copy and a thread's
# wake-up cost here: the references for the rounds' figures.
/usr/local/bin/primitives /root/primitives.scratch || say "primitives failed"

seed=100
for round in ${ROUNDS//./ }; do
  seed=$((seed + 1))
  case $round in vif | netback) ;; *) dd if=/dev/zero of="/root/disk-$round.img" bs=1M count="$DISK_MB" status=none ;; esac
  case $round in
  xenrx)
    start_xenrx || { check xenrx-started false "xenrx serve did not start"; continue; }
    grep -q '(events by io_uring)' /var/log/xenrx.log && check xenrx-wait true "io_uring" || check xenrx-wait false "$(grep -o '(events by [a-z_]*)' /var/log/xenrx.log)"
    run_bench xenrx $seed "format=raw, vdev=xvda, access=rw, script=/etc/xen/scripts/e2e-hotplug, target=/root/disk-xenrx.img"
    # The device goes down with the domain before serve is stopped.
    wait_log /var/log/xenrx.log 'vbd-[0-9]+-51712: .*\(removed\)' 60 || say "xenrx: device not removed within 60 s"
    stop_xenrx xenrx
    ;;
  epoll)
    # The same as xenrx, its event loop waiting with epoll rather than
    # io_uring: what combining the wait, the reads and the unmasks gains.
    start_xenrx vbd epoll || { check epoll-started false "xenrx serve did not start"; continue; }
    grep -q '(events by epoll)' /var/log/xenrx.log && check epoll-wait true "epoll" || check epoll-wait false "$(grep -o '(events by [a-z_]*)' /var/log/xenrx.log)"
    run_bench epoll $seed "format=raw, vdev=xvda, access=rw, script=/etc/xen/scripts/e2e-hotplug, target=/root/disk-epoll.img"
    wait_log /var/log/xenrx.log 'vbd-[0-9]+-51712: .*\(removed\)' 60 || say "epoll: device not removed within 60 s"
    stop_xenrx epoll
    ;;
  poll)
    # The same as xenrx, each disk queue polling its ring for 1 ms after
    # taking requests (--poll-us) rather than waiting for the guest's event.
    start_xenrx vbd "" --poll-us 1000 || { check poll-started false "xenrx serve did not start"; continue; }
    grep -q 'polling rings for 1000 us' /var/log/xenrx.log && check poll-set true "1000 us" || check poll-set false "no polling in the log"
    run_bench poll $seed "format=raw, vdev=xvda, access=rw, script=/etc/xen/scripts/e2e-hotplug, target=/root/disk-poll.img"
    wait_log /var/log/xenrx.log 'vbd-[0-9]+-51712: .*\(removed\)' 60 || say "poll: device not removed within 60 s"
    stop_xenrx poll
    ;;
  vif | vifepoll)
    # The domU's network interface served by xenrx on a TAP device in
    # dom0's bridge, with Linux's xen-netback not loaded (vifepoll: its
    # event loop waiting with epoll rather than io_uring).
    start_xenrx vif "$([ "$round" = vifepoll ] && echo epoll)" || { check "$round-started" false "xenrx serve did not start"; continue; }
    : >/var/log/xen/e2e-hotplug.log
    run_bench "$round" $seed "" "$VIF_SPEC"
    wait_log /var/log/xenrx.log 'vif-[0-9]+-0: .*\(removed\)' 60 || say "$round: device not removed within 60 s"
    stop_xenrx "$round"
    grep -q ': already in xenbr0' /var/log/xen/e2e-hotplug.log && check "$round-bridge" true "xenrx put its TAP device in the bridge the toolstack named" \
      || check "$round-bridge" false "the TAP device was not in xenbr0 when the hotplug script ran: $(tail -1 /var/log/xen/e2e-hotplug.log 2>&1)"
    ;;
  netback)
    modprobe xen-netback || say "modprobe xen-netback failed"
    run_bench netback $seed "" "$VIF_SPEC"
    rmmod xen-netback || say "rmmod xen-netback failed"
    ;;
  blkback)
    modprobe xen-blkback || say "modprobe xen-blkback failed"
    loop=$(losetup -f --show /root/disk-blkback.img)
    run_bench blkback $seed "format=raw, vdev=xvda, access=rw, script=/etc/xen/scripts/e2e-hotplug, target=$loop"
    losetup -d "$loop"
    rmmod xen-blkback || say "rmmod xen-blkback failed"
    ;;
  qdisk)
    run_bench qdisk $seed "format=raw, vdev=xvda, access=rw, backendtype=qdisk, target=/root/disk-qdisk.img"
    ;;
  restart)
    # xenrx serve SIGKILLed and started again 5 times while the domU runs a
    # verifying job on its disk: each new process takes the disk over
    # (no reconnect), and the job must end with no error and right data.
    start_xenrx || { check restart-started false "xenrx serve did not start"; continue; }
    domu_config restart verify $seed "format=raw, vdev=xvda, access=rw, script=/etc/xen/scripts/e2e-hotplug, target=/root/disk-restart.img"
    if ! xl create /root/restart.cfg >/var/log/xen/xl-create-restart.log 2>&1; then
      say "restart: xl create failed"
      sed "s/^/E2E-XL[restart] /" /var/log/xen/xl-create-restart.log | tail -30
      check restart-created false "xl create failed"
      stop_xenrx restart
      continue
    fi
    for k in 1 2 3 4 5; do
      # Killed in the middle of the job: after its round 5k-2 is verified.
      wait_log /var/log/xen/console/guest-e2e-restart.log "\"seed\":$((seed + 5 * k - 2)),\"ok\"" 300 || say "restart: the job did not reach round $((5 * k - 2))"
      kill -KILL "$XENRX_PID"
      wait "$XENRX_PID" 2>/dev/null
      sed "s/^/E2E-XENRX[restart] /" /var/log/xenrx.log
      : >/var/log/xenrx.log
      xenrx serve --types vbd --debug 1 >>/var/log/xenrx.log 2>&1 &
      XENRX_PID=$!
      if wait_log /var/log/xenrx.log 'vbd-[0-9]+-51712: taken over: Connected' 300; then
        say "restart: xenrx serve killed and taken over ($k of 5)"
        echo "E2E-RESTART {\"kill\":$k,\"taken_over\":true}"
      else
        say "restart: the new xenrx serve did not take the disk over ($k of 5)"
        echo "E2E-RESTART {\"kill\":$k,\"taken_over\":false}"
      fi
    done
    if ! wait_gone e2e-restart "$DOMU_TIMEOUT"; then
      xl destroy e2e-restart
      check restart-finished false "the domU did not power off"
    fi
    console_of restart "E2E-CONSOLE[restart]"
    /usr/local/bin/blkcheck /root/disk-restart.img verify-pattern 8 "$seed" | sed "s/^E2E-JOB /E2E-IMAGE[restart] /"
    wait_log /var/log/xenrx.log 'vbd-[0-9]+-51712: .*\(removed\)' 60 || say "restart: device not removed within 60 s"
    stop_xenrx restart
    ;;
  lifecycle)
    start_xenrx || { check lifecycle-started false "xenrx serve did not start"; continue; }
    domu_config lifecycle idle $seed "format=raw, vdev=xvda, access=rw, script=/etc/xen/scripts/e2e-hotplug, target=/root/disk-lifecycle.img"
    xl create /root/lifecycle.cfg >/var/log/xen/xl-create-lifecycle.log 2>&1 || say "lifecycle: xl create failed"
    domid=$(xl domid e2e-lifecycle)
    wait_log /var/log/xen/console/guest-e2e-lifecycle.log 'E2E-DOMU ready' 120 || say "lifecycle: domU not ready"
    say "lifecycle: domU $domid ready"
    echo "E2E-LIFE {\"domid\":$domid,\"step\":\"created\"}"
    for step in pause unpause; do
      xl "$step" e2e-lifecycle && echo "E2E-LIFE {\"domid\":$domid,\"step\":\"$step\"}"
      sleep 4
    done
    xl reboot e2e-lifecycle && echo "E2E-LIFE {\"domid\":$domid,\"step\":\"reboot\"}"
    # xl's monitor builds the domain again under a new id.
    end=$(($(cut -d. -f1 /proc/uptime) + 120))
    while { ! newid=$(xl domid e2e-lifecycle 2>/dev/null) || [ "$newid" = "$domid" ]; } && [ "$(cut -d. -f1 /proc/uptime)" -lt $end ]; do sleep 1; done
    wait_log /var/log/xenrx.log "vbd-$newid-51712: Connected" 120 || say "lifecycle: the rebooted domain's disk did not connect"
    echo "E2E-LIFE {\"domid\":$newid,\"step\":\"rebooted\"}"
    xl shutdown -w e2e-lifecycle && echo "E2E-LIFE {\"domid\":$newid,\"step\":\"shutdown\"}"
    wait_gone e2e-lifecycle 60 || say "lifecycle: still there after shutdown"
    xl create /root/lifecycle.cfg >>/var/log/xen/xl-create-lifecycle.log 2>&1
    lastid=$(xl domid e2e-lifecycle)
    wait_log /var/log/xenrx.log "vbd-$lastid-51712: Connected" 120 || say "lifecycle: the third domain's disk did not connect"
    xl destroy e2e-lifecycle && echo "E2E-LIFE {\"domid\":$lastid,\"step\":\"destroy\"}"
    wait_log /var/log/xenrx.log "domain $lastid: gone" 30 || say "lifecycle: xenrx did not see domain $lastid go"
    console_of lifecycle "E2E-CONSOLE[lifecycle]"
    stop_xenrx lifecycle
    ;;
  console)
    # xenrx serves the primary consoles in xenconsoled's place.
    kill "$(cat /run/xenconsoled.pid)" 2>/dev/null && say "xenconsoled stopped"
    : >/var/log/xenrx.log
    # All of serve's types: its console type must leave libxl's primary
    # console device (frontend type xenconsoled) to the primary consoles.
    xenrx serve --primary-consoles --pty --debug 1 >>/var/log/xenrx.log 2>&1 &
    XENRX_PID=$!
    wait_log /var/log/xenrx.log 'serving vbd, console, primary consoles' 300 || { check console-started false "xenrx serve did not start"; continue; }
    domu_config console idle $seed "format=raw, vdev=xvda, access=rw, script=/etc/xen/scripts/e2e-hotplug, target=/root/disk-console.img"
    xl create /root/console.cfg >/var/log/xen/xl-create-console.log 2>&1 || say "console: xl create failed"
    domid=$(xl domid e2e-console)
    wait_log /var/log/xenrx.log "console of domain $domid: tty" 120 || say "console: no tty published for domain $domid"
    wait_log /var/log/xenrx.log "vbd-$domid-51712: Connected" 120 || say "console: the disk did not connect"
    # The domU is ready a moment after its disk connects; then type a line
    # and detach with Ctrl-].
    { sleep 5; echo "hello-from-dom0"; sleep 10; printf '\035'; } | timeout 120 xenrx console "$domid" >/var/log/xenrx-console.txt 2>&1
    say "console: xenrx console exited with status $?"
    tr -d '\r' </var/log/xenrx-console.txt | grep -a 'E2E-DOMU\|hello' | sed 's/^/E2E-TRANSCRIPT /'
    grep -aq 'E2E-DOMU booted' /var/log/xenrx-console.txt && check console-boot-log true "the boot log reached xenrx console" \
      || check console-boot-log false "no boot log through xenrx console"
    grep -aq 'E2E-DOMU typed: hello-from-dom0' /var/log/xenrx-console.txt && check console-input true "typed input reached the guest" \
      || check console-input false "typed input did not come back"
    # libxl's primary console device: not taken (no device, nothing written).
    say "console: libxl's device backend/console/$domid/0 state $(xenstore-read "/local/domain/0/backend/console/$domid/0/state" 2>&1)"
    grep -q "backend/console/$domid/0: not for this backend, left alone" /var/log/xenrx.log \
      && ! grep -q "console-$domid-0:" /var/log/xenrx.log \
      && [ "$(xenstore-read "/local/domain/0/backend/console/$domid/0/state")" = 1 ] \
      && ! xenstore-read "/local/domain/0/backend/console/$domid/0/hotplug-error" >/dev/null 2>&1 \
      && check console-device-declined true "libxl's primary console device left to the primary consoles" \
      || check console-device-declined false "the console type took libxl's primary console device"
    xl destroy e2e-console
    wait_log /var/log/xenrx.log "console of domain $domid: closed" 60 || say "console: the console was not closed"
    stop_xenrx console
    ;;
  *) say "unknown round $round" ;;
  esac
  rm -f "/root/disk-$round.img"
done
say "free memory: $(xl info | grep -E '^free_memory')"
echo "E2E-DONE uptime=$(up)"
echo o >/proc/sysrq-trigger
sleep 5
poweroff -f
