#!/usr/bin/env bash
# make demo: a counting process is checkpointed, killed, and restored from
# its images; it goes on counting where it stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
crhook=$PWD/bin/crhook
work=$(mktemp -d /tmp/crhook-demo.XXXXXX)
pid=
trap 'kill -9 $pid $(cat "$work/pid" 2>/dev/null) 2>/dev/null || true; rm -rf "$work"' EXIT

gcc -O2 -o "$work/counter" crcore/testdata/counter.c
echo "== start a counter (it appends 'count N' to $work/log every 10 ms)"
# Only stdio goes along: an fd inherited from whoever runs make (a CI
# runner's pipe) would be dumped too, and crhook refuses pipes to the
# outside that are not standard streams.
(
  for fd in $(ls /proc/$BASHPID/fd); do [ "$fd" -gt 2 ] && eval "exec $fd>&-"; done
  exec setsid "$work/counter" "$work/log" </dev/null >/dev/null 2>&1
) &
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

# ---------------------------------------------------------------------------
# Containers: a runc container counting into a bind-mounted dir is
# checkpointed, deleted, and a new container from the same bundle is
# restored by crhook's createRuntime hook. It counts on.
if ! command -v runc >/dev/null || [ ! -x /bin/busybox ]; then
  echo "== (container demo skipped: runc or busybox-static missing; make deps installs them)"
  exit 0
fi
echo
echo "== container demo (runc $(runc --version | awk 'NR==1{print $3}'))"
cid=crhook-demo-$$
croot=$work/runc-state
bundle=$work/bundle
mkdir -p "$bundle/rootfs/bin" "$bundle/rootfs/proc" "$bundle/rootfs/sys" "$bundle/rootfs/dev" "$work/data"
cp /bin/busybox "$bundle/rootfs/bin/"
chroot "$bundle/rootfs" /bin/busybox --install -s /bin
gcc -O2 -static -o "$bundle/rootfs/bin/counter" crcore/testdata/counter.c
runc spec --bundle "$bundle"
# Edit runc spec's default config: run the counter, no terminal, a
# writable rootfs, and the host dir $work/data at /data.
sed -i -e 's/"terminal": true/"terminal": false/' -e 's/"readonly": true/"readonly": false/' \
  -e 's|^\(\s*\)"sh"$|\1"/bin/counter", "/data/log"|' \
  -e "s|\"mounts\": \[|\"mounts\": [ {\"destination\": \"/data\", \"type\": \"bind\", \"source\": \"$work/data\", \"options\": [\"rbind\", \"rw\"]},|" \
  "$bundle/config.json"
grep -q '"/bin/counter", "/data/log"' "$bundle/config.json" && grep -q '"destination": "/data"' "$bundle/config.json" ||
  { echo "could not edit $bundle/config.json (runc spec's format changed?)"; exit 1; }
cleanup_container() {
  runc --root "$croot" kill "$cid" KILL 2>/dev/null || true
  sleep 0.2
  runc --root "$croot" delete -f "$cid" 2>/dev/null || true
}
trap 'cleanup_container; kill -9 $(cat "$work/pid" 2>/dev/null) 2>/dev/null || true; rm -rf "$work"' EXIT

echo "== runc run -d $cid (counter logs to $work/data/log)"
runc --root "$croot" run -d --bundle "$bundle" "$cid" </dev/null >/dev/null 2>&1
sleep 1
runc --root "$croot" list
tail -n 1 "$work/data/log"

echo "== crhook checkpoint $cid -D $work/cimg"
"$crhook" checkpoint "$cid" -D "$work/cimg" --root "$croot"
runc --root "$croot" list
last=$(grep '^count' "$work/data/log" | tail -n 1)
echo "its last line was: $last"
runc --root "$croot" delete "$cid"
ls "$work/cimg"

echo "== crhook install-hooks $bundle --images $work/cimg; runc run -d $cid (a new container)"
"$crhook" install-hooks "$bundle" --images "$work/cimg"
lines=$(wc -l <"$work/data/log")
if ! runc --root "$croot" run -d --bundle "$bundle" "$cid" </dev/null >/dev/null 2>&1; then
  echo "FAIL: runc run refused the restored container"; cat "$work/cimg/restore.log" 2>/dev/null; exit 1
fi
sleep 1
runc --root "$croot" list
echo "== the new container's log goes on from the checkpoint:"
tail -n +"$((lines + 1))" "$work/data/log" | head -n 3
n0=${last#count }
first=$(tail -n +"$((lines + 1))" "$work/data/log" | grep -m1 '^count' || true)
if [ "$first" = "count $((n0 + 1))" ]; then
  echo "OK: the container restored by the hook counted on from $n0 ($(tail -n 1 "$work/data/log"))"
else
  echo "FAIL: the new container did not continue from $n0 (first line: ${first:-none})"
  echo "--- restore.log:"; cat "$work/cimg/restore.log" 2>/dev/null
  exit 1
fi
