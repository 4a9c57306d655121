# The stages of a disk request at depth 1 in dom0, from `perf script -F
# comm,tid,time,event,trace` over the events dom0-init.sh records with
# XENRX_E2E_PROFILE=trace. A cycle starts at the interrupt of the guest's
# event (xenrx: a port of /dev/xen/evtchn, "evtchn:<process>"; blkback:
# "blkif-backend") and ends at the next one. Stages, each timed from the
# one before:
#   wake    the backend's thread is switched in (xenrx's event loop;
#           blkback's ring thread)
#   ret     xenrx: its wait returns; blkback: the request reaches the
#           loop device
#   io_in   xenrx: preadv/pwritev is entered; blkback: the loop device's
#           worker is switched in
#   io_out  the read or write is done
#   notify  xenrx: the notify ioctl is entered (blkback notifies as the
#           loop device completes: the same time as io_out)
#   sleep   xenrx: its next wait is entered
# Also: the time from the interrupt to the thread's wake-up (runnable, not
# yet running), the tasks switched to before it, and from the notification
# to the guest's next event (turnaround: the guest's side and Xen's).
function usec(s) { sub(/:$/, "", s); return s * 1e6 }
function stage(k, v) { if (!(k in at)) at[k] = v }
function close_cycle(now,   i, k, prev) {
  if (between != "") befores[between]++
  between = ""
  if (("irq" in at) && ("notify" in at)) {
    n++
    cycle += now - at["irq"]
    turnaround += now - at["notify"]
    prev = at["irq"]
    for (i = 1; i <= NSTAGES; i++) {
      k = stages[i]
      if (k in at) { sum[k] += at[k] - prev; seen[k]++; prev = at[k] }
    }
  }
  delete at
}
BEGIN { NSTAGES = split("wake ret io_in io_out notify sleep", stages, " ") }
{
  time = ""
  for (i = 2; i < NF; i++) if ($i ~ /^[0-9]+\.[0-9]+:$/) { time = usec($i); ev = $(i + 1); break }
  if (time == "") next
  if (ev == "irq:irq_handler_entry:" && ($0 ~ /name=evtchn:/ || $0 ~ /name=blkif/)) {
    close_cycle(time)
    stage("irq", time)
    next
  }
  if (!("irq" in at)) next
  if (!("wake" in at)) {
    if (ev == "sched:sched_wakeup:" && ($0 ~ /comm=xenrx-events/ || $0 ~ /comm=[0-9]+\.xvd/)) { woken += time - at["irq"]; nwoken++ }
    if (ev == "sched:sched_switch:") {
      m = $0; sub(/.*prev_comm=/, "", m); sub(/ prev_pid.*next_comm=/, ">", m); sub(/ next_pid.*/, "", m)
      between = between " " m
    }
  }
  if (ev == "sched:sched_switch:" && ($0 ~ /next_comm=xenrx-events/ || $0 ~ /next_comm=[0-9]+\.xvd/)) { stage("wake", time); next }
  if ($1 ~ /^xenrx-events/) {
    if (ev == "raw_syscalls:sys_exit:" && $0 ~ /NR (426|232|281) /) stage("ret", time)
    else if (ev == "raw_syscalls:sys_enter:" && $0 ~ /NR (295|296) /) stage("io_in", time)
    else if (ev == "raw_syscalls:sys_exit:" && $0 ~ /NR (295|296) /) stage("io_out", time)
    else if (ev == "raw_syscalls:sys_enter:" && $0 ~ /NR 16 /) stage("notify", time)
    else if (ev == "raw_syscalls:sys_enter:" && $0 ~ /NR (426|232|281) /) stage("sleep", time)
    next
  }
  if (ev == "block:block_rq_issue:") stage("ret", time)
  else if (ev == "sched:sched_switch:" && $0 ~ /next_comm=kworker/) stage("io_in", time)
  else if (ev == "block:block_rq_complete:") { stage("io_out", time); stage("notify", time) }
}
END {
  if (n == 0) { print "no complete cycle"; exit }
  printf "cycles %d mean_cycle_us %.1f turnaround_after_notify_us %.1f\n", n, cycle / n, turnaround / n
  if (nwoken) printf "irq_to_wakeup_us %.1f (%d)\n", woken / nwoken, nwoken
  for (i = 1; i <= NSTAGES; i++) {
    k = stages[i]
    if (seen[k]) printf "stage %s mean_us_from_previous %.1f seen %d\n", k, sum[k] / seen[k], seen[k]
  }
  for (b in befores) if (befores[b] > n / 50) printf "switched_before_wake %d:%s\n", befores[b], b
}
