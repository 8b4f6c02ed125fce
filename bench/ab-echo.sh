#!/usr/bin/env bash
# A/B of one echo configuration: one or more switchboard binaries against the
# ceiling server, round by round (A B ... ceiling, A B ... ceiling, ...), each
# server fresh per run, server pinned to SERVER_CPU and the load generator to
# LOAD_CPU. For quick comparisons of a change; bench/run.sh is the benchmark.
#
#   bench/ab-echo.sh [SWITCHBOARD_BINARY...]    (default: target/release/switchboard)
#
# Environment (all optional):
#   CONNS=8 WINDOW=1048576 CHUNK=65536 DURATION=5 ROUNDS=5
#   SESSIONS=5        sessions per run, each on fresh connections (loadgen --sessions)
#   CONFIG=FILE       switchboard config with an echo listener on 127.0.0.1:PORT
#                     (default: the embedded default moved to PORT)
#   PORT=23600        the echo port (PORT+1 for the ceiling)
#   SERVER_CPU=0 LOAD_CPU=1
# Prints one line per round and the medians with their ratio. Needs a release
# build of the examples (cargo build --release --examples).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
CONNS=${CONNS:-8}
WINDOW=${WINDOW:-1048576}
CHUNK=${CHUNK:-65536}
DURATION=${DURATION:-5}
ROUNDS=${ROUNDS:-5}
SESSIONS=${SESSIONS:-5}
PORT=${PORT:-23600}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
loadgen=target/release/examples/loadgen
ceiling=target/release/examples/ceiling_echo
if [ ! -x "$loadgen" ] || [ ! -x "$ceiling" ]; then
  cargo build --release --quiet --examples
fi
binaries=("$@")
[ ${#binaries[@]} -gt 0 ] || binaries=(target/release/switchboard)
[ -x "${binaries[0]}" ] || cargo build --release --quiet --bins

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
config=${CONFIG:-$work/echo.toml}
if [ -z "${CONFIG:-}" ]; then
  "${binaries[0]}" default-config \
    | sed -e "s/127\.0\.0\.1:10010/127.0.0.1:$PORT/" \
      -e "s/127\.0\.0\.1:1111/127.0.0.1:$((PORT + 2))/" \
      -e "s/127\.0\.0\.1:10086/127.0.0.1:$((PORT + 3))/" \
      -e "s/127\.0\.0\.1:10087/127.0.0.1:$((PORT + 4))/" \
      -e "s|^root = .*|root = \"$work\"|" > "$config"
fi

# Waits (at most 5 s) until something listens on 127.0.0.1:$1.
wait_port() {
  for _ in $(seq 100); do
    (exec 3<> "/dev/tcp/127.0.0.1/$1") 2> /dev/null && return 0
    sleep 0.05
  done
  echo "ab-echo: nothing listens on port $1" >&2
  return 1
}

# One load run against 127.0.0.1:$1; prints MB/s.
load() {
  taskset -c "$LOAD_CPU" "$loadgen" --addr "127.0.0.1:$1" --duration "$DURATION" --json-only \
    echo --connections "$CONNS" --window "$WINDOW" --chunk "$CHUNK" --sessions "$SESSIONS" \
    | grep -o '"mb_per_sec":[0-9.]*' | cut -d: -f2
}

# Runs server command "$@" on port $port, loads it, stops it; prints MB/s.
measure() {
  local port=$1
  shift
  taskset -c "$SERVER_CPU" "$@" > /dev/null 2>&1 &
  local pid=$!
  wait_port "$port"
  load "$port"
  kill "$pid"
  wait "$pid" 2> /dev/null || true
}

results=$work/results.txt
echo "echo c$CONNS window $WINDOW chunk $CHUNK, ${DURATION}s runs of $SESSIONS sessions, $ROUNDS rounds (MB/s)"
for round in $(seq "$ROUNDS"); do
  line="round $round:"
  for i in "${!binaries[@]}"; do
    mbs=$(measure "$PORT" "${binaries[$i]}" -c "$config")
    echo "$i $mbs" >> "$results"
    line="$line ${binaries[$i]} $mbs"
  done
  mbs=$(measure "$((PORT + 1))" "$ceiling" --addr "127.0.0.1:$((PORT + 1))")
  echo "ceiling $mbs" >> "$results"
  echo "$line ceiling $mbs"
done
python3 - "$results" "${binaries[@]}" <<'EOF'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
names = sys.argv[2:]
ceiling = statistics.median(float(v) for k, v in rows if k == "ceiling")
print(f"median ceiling {ceiling:.1f}")
for i, name in enumerate(names):
    median = statistics.median(float(v) for k, v in rows if k == str(i))
    print(f"median {name} {median:.1f} = {median / ceiling:.2f}x the ceiling")
EOF
