#!/usr/bin/env bash
# bench/ab-download.sh CLIENTS ROUNDS BINARY...: an A/B of downloads of a
# 1 GiB file (loadgen download, CLIENTS clients, 2 fetches each, every size
# and the first SHA-256 checked), raw and over HTTP, against the ceiling
# (examples/ceiling_file.rs) and each switchboard binary, rounds alternating
# the servers; the server pinned to core 0 and loadgen to core 1. Prints
# MB/s and the server's CPU (utime + stime) per MB. Needs a release build of
# the examples (cargo build --release --examples). Quote medians.
set -euo pipefail
[ $# -ge 3 ] || { sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
clients=$1 rounds=$2
shift 2
root_dir=$(cd "$(dirname "$0")/.." && pwd)
loadgen=$root_dir/target/release/examples/loadgen
ceiling=$root_dir/target/release/examples/ceiling_file
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/serve"
file=$work/serve/big-1g.bin
head -c 16M /dev/urandom > "$work/block"
for _ in $(seq 64); do cat "$work/block"; done > "$file"
size=$(stat -c %s "$file")
sha=$(sha256sum "$file" | cut -d' ' -f1)
cpu() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
for round in $(seq "$rounds"); do
  for server in ceiling "$@"; do
    for mode in raw http; do
      [ "$server" = ceiling ] && [ "$mode" = http ] && continue
      port=$((20000 + RANDOM % 20000))
      if [ "$server" = ceiling ]; then
        taskset -c 0 "$ceiling" --addr "127.0.0.1:$port" --root "$work/serve" > /dev/null 2>&1 &
      else
        printf '[[listener]]\nname = "files"\nbind = "127.0.0.1:%s"\nhandler = "download"\nroot = "%s"\n' \
          "$port" "$work/serve" > "$work/c.toml"
        RUST_LOG=warn taskset -c 0 "$server" -c "$work/c.toml" > /dev/null 2>&1 &
      fi
      pid=$!
      for _ in $(seq 50); do (exec 3<> "/dev/tcp/127.0.0.1/$port") 2> /dev/null && break; sleep 0.1; done
      before=$(cpu "$pid")
      args=(download --file big-1g.bin --clients "$clients" --repeat 2 --expect-size "$size" --expect-sha256 "$sha")
      [ "$mode" = http ] && args+=(--http)
      out=$(taskset -c 1 timeout 300 "$loadgen" --addr "127.0.0.1:$port" --json-only "${args[@]}" 2>&1 || true)
      after=$(cpu "$pid")
      kill "$pid"
      wait "$pid" 2> /dev/null || true
      python3 - "$round" "$(basename "$server")" "$mode" "$before" "$after" "$out" << 'PY'
import json, sys
rnd, name, mode, before, after, out = sys.argv[1:]
line = next((l for l in out.splitlines() if l.startswith('{"mode":')), None)
if line is None:
    print(f"{rnd} {name} {mode}: FAILED {out.strip().splitlines()[-1:]}")
    sys.exit(0)
r = json.loads(line)
mb = r.get("bytes", 0) / 1e6
us = (float(after) - float(before)) * 1e4 / mb if mb else float("nan")
print(f"{rnd} {name} {mode}: {r.get('mb_per_sec', 0):,.0f} MB/s, {us:,.1f} us of server CPU per MB")
PY
    done
  done
done
