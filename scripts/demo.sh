#!/usr/bin/env bash
# make demo: a counting process is checkpointed, killed, and restored from
# its images; it goes on counting where it stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
crhook=$PWD/bin/crhook
work=$(mktemp -d /tmp/crhook-demo.XXXXXX)
trap 'kill -9 $(cat "$work/pid" 2>/dev/null) 2>/dev/null || true; rm -rf "$work"' EXIT

gcc -O2 -o "$work/counter" crcore/testdata/counter.c
echo "== start a counter (it appends 'count N' to $work/log every 10 ms)"
setsid "$work/counter" "$work/log" </dev/null >/dev/null 2>&1 &
pid=$!
sleep 1
tail -n 2 "$work/log"

echo "== crhook dump -t $pid -D $work/img"
"$crhook" dump -t "$pid" -D "$work/img"
sleep 0.3
if kill -0 "$pid" 2>/dev/null && ! grep -q '^Z' <(awk '{print $3}' /proc/$pid/stat); then
  echo "the dumped process should be gone"; exit 1
fi
last=$(grep '^count' "$work/log" | tail -n 1)
echo "process $pid is gone; its last line was: $last"
ls -l "$work/img"

echo "== crhook restore -D $work/img -d"
# PID 1 may reap the killed counter late: restore waits for its pid.
"$crhook" restore -D "$work/img" -d --pidfile "$work/pid"
echo "restored as pid $(cat "$work/pid")"
sleep 1
echo "== the log goes on from where the dump stopped it:"
grep -A3 -x -F "$last" "$work/log" | head -n 4
tail -n 1 "$work/log"
n0=${last#count }
n1=$(grep '^count' "$work/log" | tail -n 1); n1=${n1#count }
if [ "$n1" -gt "$n0" ]; then
  echo "OK: counted from $n0 on to $n1 after the restore"
else
  echo "FAIL: no progress after restore"; exit 1
fi
