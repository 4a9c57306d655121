#!/bin/sh
# The disk hotplug script of the end-to-end run, for libxl (`script=` in the
# disk spec). Xen's stock `block` script forks hundreds of times, which under
# software emulation outlasts libxl's hotplug timeout.
#  - xenrx: the backend opens the image itself from `params`; nothing to do
#    but tell the toolstack the device is ready.
#  - phy (blkback): blkback needs the device numbers of `params`.
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
esac
exit 0
