#!/bin/sh
# The hotplug script of the end-to-end run, for libxl (`script=` in the disk
# and vif specs). Xen's stock `block` and `vif-bridge` scripts fork hundreds
# of times, which under software emulation outlasts libxl's hotplug timeout.
#  - a disk, xenrx: the backend opens the image itself from `params`;
#    nothing to do but tell the toolstack the device is ready.
#  - a disk, phy (blkback): blkback needs the device numbers of `params`.
#  - a vif (libxl runs vif scripts with online/offline): the interface goes
#    into the bridge the toolstack named, and up. xenrx's TAP device is
#    there already (xenrx puts it in the bridge itself); netback's is not.
#    Which of the two it was goes to /var/log/xen/e2e-hotplug.log.
set -e
case "$1" in
add)
  params=$(xenstore-read "$XENBUS_PATH/params")
  if [ -b "$params" ]; then
    numbers=$(stat -L -c '%t:%T' "$params")
    xenstore-write "$XENBUS_PATH/physical-device" "$numbers" "$XENBUS_PATH/physical-device-path" "$params"
  fi
  xenstore-write "$XENBUS_PATH/hotplug-status" connected
  ;;
online)
  vif=${vif:-vif$(xenstore-read "$XENBUS_PATH/frontend-id").${XENBUS_PATH##*/}}
  bridge=$(xenstore-read "$XENBUS_PATH/bridge")
  if [ -e "/sys/class/net/$vif/brport" ]; then
    echo "$vif: already in $bridge" >>/var/log/xen/e2e-hotplug.log
  else
    ip link set "$vif" master "$bridge"
    echo "$vif: added to $bridge" >>/var/log/xen/e2e-hotplug.log
  fi
  ip link set "$vif" up
  xenstore-write "$XENBUS_PATH/hotplug-status" connected
  ;;
esac
exit 0
