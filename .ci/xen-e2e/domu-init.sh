#!/bin/busybox sh
# /init of the test domU (busybox, xen-blkfront, xen-netfront, blkcheck,
# netcheck): checks the disk it was given, measures it, and powers off
# (E2E_MODE=bench; depth1: only 4 KiB reads at depth 1, for a traced
# run), measures its network interface against dom0 and powers
# off (E2E_MODE=net), runs a verifying job and powers off (E2E_MODE=verify),
# or waits for the toolstack to pause, shut down or reboot it
# (E2E_MODE=idle). The kernel
# passes E2E_* from its command line to this script's environment.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
# The kernel runs these on a toolstack's shutdown or reboot request; with
# this script as init there is no init to signal, so they act at once.
mkdir -p /sbin
printf '#!/bin/busybox sh\nexec /bin/busybox poweroff -f\n' >/sbin/poweroff
printf '#!/bin/busybox sh\nexec /bin/busybox reboot -f\n' >/sbin/reboot
chmod +x /sbin/poweroff /sbin/reboot
SEED=${E2E_SEED:-1}
SECS=${E2E_SECS:-5}
echo "E2E-DOMU booted kernel=$(uname -r) uptime=$(cut -d' ' -f1 /proc/uptime)"
if [ "${E2E_MODE:-bench}" = net ]; then
  # dom0 is 10.0.0.1 on its bridge, with netcheck serving on port 5001.
  insmod /xen-netfront.ko
  i=0
  while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 300 ]; do sleep 0.2; i=$((i + 1)); done
  if [ ! -e /sys/class/net/eth0 ]; then
    echo "E2E-JOB {\"job\":\"error\",\"what\":\"no eth0 after 60 s\"}"
  else
    ip addr add 10.0.0.2/24 dev eth0
    ip link set eth0 up
    echo "E2E-DOMU eth0 mac=$(cat /sys/class/net/eth0/address) queues=$(ls -d /sys/class/net/eth0/queues/tx-* | wc -l)"
    # An ordinary ping first (ARP, ICMP), then the measured jobs.
    if ping -c 3 -W 10 10.0.0.1 >/tmp/ping.txt 2>&1; then
      echo "E2E-JOB {\"job\":\"ping\",\"ok\":true}"
    else
      echo "E2E-JOB {\"job\":\"ping\",\"ok\":false,\"what\":\"$(tail -2 /tmp/ping.txt | tr '\n"' '  ')\"}"
    fi
    /netcheck rtt 10.0.0.1 5001 200
    /netcheck send 10.0.0.1 5001 "$SECS"
    /netcheck recv 10.0.0.1 5001 "$SECS"
  fi
  echo "E2E-DOMU done uptime=$(cut -d' ' -f1 /proc/uptime)"
  poweroff -f
fi
insmod /xen-blkfront.ko
i=0
while [ ! -b /dev/xvda ] && [ $i -lt 300 ]; do sleep 0.2; i=$((i + 1)); done
if [ ! -b /dev/xvda ]; then
  echo "E2E-JOB {\"job\":\"error\",\"what\":\"no /dev/xvda after 60 s\"}"
elif [ "${E2E_MODE:-bench}" = verify ]; then
  # A verifying job while dom0 kills and restarts the backend: 30 rounds
  # of an 8 MiB pattern written and read back, each with its own seed,
  # then the base seed's pattern for dom0 to find in the image.
  echo "E2E-DOMU verifying"
  i=1
  while [ $i -le 30 ]; do
    /blkcheck /dev/xvda write-pattern 8 $((SEED + i))
    echo 3 >/proc/sys/vm/drop_caches
    /blkcheck /dev/xvda verify-pattern 8 $((SEED + i))
    i=$((i + 1))
  done
  /blkcheck /dev/xvda write-pattern 8 "$SEED"
  echo 3 >/proc/sys/vm/drop_caches
  /blkcheck /dev/xvda verify-pattern 8 "$SEED"
elif [ "${E2E_MODE:-bench}" = idle ]; then
  dd if=/dev/xvda of=/dev/null bs=4096 count=16 iflag=direct 2>/dev/null && echo "E2E-DOMU ready"
  # Each line typed on the console comes back marked, to show input works.
  while read -r line; do echo "E2E-DOMU typed: $line"; done
  while :; do sleep 1; done
else
  echo "E2E-DOMU xvda sectors=$(cat /sys/block/xvda/size) queues=$(ls /sys/block/xvda/mq | wc -l)"
  # depth1: only the reads whose every stage dom0 traces.
  if [ "$E2E_MODE" != depth1 ]; then
    /blkcheck /dev/xvda seqwrite "$SECS"
    /blkcheck /dev/xvda seqread "$SECS"
  fi
  /blkcheck /dev/xvda randread "$SECS" 1
  [ "$E2E_MODE" = depth1 ] || /blkcheck /dev/xvda randread "$SECS" 4
  # The pattern last, so that dom0 finds it in the image afterwards.
  /blkcheck /dev/xvda write-pattern 8 "$SEED"
  echo 3 >/proc/sys/vm/drop_caches
  /blkcheck /dev/xvda verify-pattern 8 "$SEED"
fi
echo "E2E-DOMU done uptime=$(cut -d' ' -f1 /proc/uptime)"
poweroff -f
