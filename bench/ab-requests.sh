#!/usr/bin/env bash
# bench/ab-requests.sh OLD_BINARY NEW_BINARY ...: an A/B of keep-alive GETs of a
# 1 KiB file (wrk -t1 -c8, 8 s, 3 rounds alternating the binaries), the daemon
# pinned to core 0 and wrk to core 1; prints requests/s and the daemon's CPU
# (utime + stime) per request. Quote medians; the machine drifts between rounds.
set -u
root=$(mktemp -d); head -c 1024 /dev/urandom > $root/small-1k.bin
for round in 1 2 3; do
for bin in "$@"; do
  port=$((20000 + RANDOM % 20000))
  printf '[[listener]]\nname = "files"\nbind = "127.0.0.1:%s"\nhandler = "download"\nroot = "%s"\n' $port $root > $root/c.toml
  RUST_LOG=warn taskset -c 0 $bin -c $root/c.toml >/dev/null 2>&1 &
  pid=$!; sleep 0.5
  t0=$(awk '{print $14+$15}' /proc/$pid/stat)
  out=$(taskset -c 1 wrk -t1 -c8 -d8s http://127.0.0.1:$port/small-1k.bin 2>&1)
  t1=$(awk '{print $14+$15}' /proc/$pid/stat)
  kill $pid; wait $pid 2>/dev/null
  reqs=$(echo "$out" | awk '/requests in/{print $1}')
  rps=$(echo "$out" | awk '/Requests\/sec/{print $2}')
  echo "$round $(basename $bin) rps=$rps cpu_us_per_req=$(python3 -c "print(round(($t1-$t0)*10000/$reqs,2))")"
done; done
rm -rf $root
