#!/usr/bin/env bash
# The benchmark, in one command: builds everything in release mode, runs each
# case against switchboard, the ceiling servers (examples/ceiling_echo.rs,
# examples/ceiling_file.rs), the runtime's floor (bench/floor, its own package:
# the plainest tokio echo, in the echo, connect and lines cases, so that
# what tokio costs over the ceiling and what switchboard adds to tokio show
# apart) and the peers a user would pick instead (socat, ncat), interleaved
# round by round, and writes the table of medians and
# ratios (bench/report.py). The tls case compares switchboard's TLS with
# nginx's (see "tls" below).
#
#   bench/run.sh            full run: ROUNDS rounds of DURATION-second runs,
#                           writes bench/results.jsonl and bench/RESULTS.md
#   bench/run.sh --quick    smoke run (CI): 1 round, 2-second runs, a subset of
#                           the echo configurations, a 256 MiB file; writes
#                           target/bench/results-quick.jsonl and RESULTS-quick.md
#
# Environment (all optional):
#   ROUNDS=5 DURATION=5     rounds per case, seconds per run
#   ECHO_SESSIONS=5         sessions per echo run, each on fresh connections
#                           (one set of loopback connections keeps a fast or a
#                           slow pace for its life; sessions average over them)
#   CASES="echo connect lines datagrams download tar requests wrk hold tls"   which kinds of case to run
#   TLS_HOLD=2000           idle TLS connections of the tls case's memory run
#   HTTP_HOLD=5000          idle HTTP keep-alive connections of the hold case's HTTP run
#   HOLD_50K=1              also hold 50 000 idle connections
#   HOLD_SECS=5             how long the hold case keeps its connections idle
#   FILE_MB=1024            size of the download file (rounded up to 16 MiB)
#   REPEAT=2                downloads per client in the download case
#   LINES_CONNS="8 64"      connections of the lines case, one run each
#   BASE_PORT=23100         ports used: BASE_PORT .. BASE_PORT+31 on 127.0.0.1, kept
#                           below the ephemeral range (ip_local_port_range)
#   SERVER_CPU=0 LOAD_CPU=1 cores for taskset
#   NO_INSTALL=1            do not apt-get install socat / ncat
#   OUT_DIR=DIR             where results.jsonl and RESULTS.md go
#   LOADGEN=PATH            use this load generator instead of building examples/loadgen.rs
#
# The wrk case: keep-alive GETs by wrk (a load tool nobody here wrote), 1
# thread and 64 connections, against switchboard's download port (at
# RUST_LOG=warn: no access log) and nginx (one process, sendfile on, access
# log off): a 1 KiB file (requests/s, CPU per request) and a 1 MiB file
# (requests/s, CPU per MB). The hold case also holds HTTP_HOLD idle
# keep-alive connections on each of them, each after one GET (loadgen hold
# --path): server RSS growth per connection, then each must answer again.
#
# The tar case: a folder as one tar stream (NAME.tar), over the raw
# protocol, one client, beside the raw download of one file of the same
# total size, in the same run: a folder of FILE_MB/16 files of 16 MiB (64
# for the full run: MB/s against the single file's) and one of 10 000 files
# of 4 KiB (files/s, and MB/s against a single file of 40 MB). The folders
# are built once in target/bench/data and hard-linked into the served root.
#
# The tls case: switchboard against nginx (one process, as in the requests
# case), both with the same self-signed P-256 ECDSA certificate made for
# the run, TLS 1.3 only, X25519 only (nginx: ssl_protocols TLSv1.3,
# ssl_ecdh_curve X25519; switchboard: min_version = "1.3", and the client
# offers X25519 alone), session caches and tickets at each one's default,
# access logs off on both (switchboard at RUST_LOG=warn). Four runs:
#   tls-handshake w8   full handshakes/s: loadgen's handshake mode (8
#                      workers: connect, handshake, close_notify, wait for
#                      the server's close; no resumption, no verification of
#                      the certificate or the signature, so that the client's
#                      core does less than the server's) against
#                      switchboard's echo listener with TLS and nginx
#                      `stream` with `ssl` (return "")
#   tls-requests c8    keep-alive HTTPS GETs of a 1 KiB file: wrk (OpenSSL),
#                      1 thread, 8 connections, against switchboard's
#                      download port with TLS and nginx `http` with `ssl`
#   tls-download c4    HTTPS download of the big file: wrk, 4 connections,
#                      MB/s over the run (bytes read, whole responses or not)
#   tls-hold N         N idle TLS connections after the handshake (loadgen
#                      tls-hold): server RSS growth per connection, then
#                      each must still answer a GET
# Each records the server's CPU per unit (handshake, request, MB) and the
# client's own busy share, so a client-bound run shows as such.
#
# Everything listens on 127.0.0.1 only, and every wait is bounded.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
command_line="bench/run.sh${*:+ $*}"

quick=0
for arg in "$@"; do
  case $arg in
    --quick) quick=1 ;;
    -h | --help)
      sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "run.sh: unknown argument '$arg' (try --help)" >&2
      exit 2
      ;;
  esac
done

if [ "$quick" = 1 ]; then
  ROUNDS=1
  DURATION=2
  HOLD_SECS=${HOLD_SECS:-2}
  FILE_MB=${FILE_MB:-256}
  REPEAT=${REPEAT:-1}
  ECHO_SESSIONS=${ECHO_SESSIONS:-2}
  HTTP_HOLD=${HTTP_HOLD:-2000}
  OUT_DIR=${OUT_DIR:-$root/target/bench}
  suffix=-quick
else
  ROUNDS=${ROUNDS:-5}
  DURATION=${DURATION:-5}
  HOLD_SECS=${HOLD_SECS:-5}
  FILE_MB=${FILE_MB:-1024}
  REPEAT=${REPEAT:-2}
  ECHO_SESSIONS=${ECHO_SESSIONS:-5}
  OUT_DIR=${OUT_DIR:-$root/bench}
  suffix=
fi
CASES=${CASES:-echo connect lines datagrams download tar requests wrk hold tls}
TLS_HOLD=${TLS_HOLD:-2000}
HTTP_HOLD=${HTTP_HOLD:-5000}
LINES_CONNS=${LINES_CONNS:-8 64}
BASE_PORT=${BASE_PORT:-23100}
HOLD_50K=${HOLD_50K:-0}

mkdir -p "$OUT_DIR" "$root/target/bench"
results="$OUT_DIR/results$suffix.jsonl"
report="$OUT_DIR/RESULTS$suffix.md"
work=$(mktemp -d "$root/target/bench/run.XXXXXX")
notes="$work/notes.txt"
: > "$notes"
: > "$results"
failures=0
peer_failures=0

say() { printf '==> %s\n' "$*"; }
note() {
  printf 'note: %s\n' "$*"
  printf '%s\n' "$*" >> "$notes"
}
have() { command -v "$1" > /dev/null 2>&1; }

# --- servers: started in their own session (their pid is their process
# group), so stopping one also ends what it forked (socat, ncat children).
server_pid=
# alive PID: running (a zombie, exited but not yet waited for, is not).
alive() {
  local st
  st=$(ps -o stat= -p "$1" 2> /dev/null) || return 1
  [ -n "$st" ] && [ "${st:0:1}" != Z ]
}
stop_server() {
  local pid=$server_pid
  [ -n "$pid" ] || return 0
  server_pid=
  local target=$pid
  if [ "$(ps -o pgid= -p "$pid" 2> /dev/null | tr -d ' ')" = "$pid" ]; then
    target=-$pid
  fi
  kill -TERM -- "$target" 2> /dev/null || true
  for _ in $(seq 50); do
    alive "$pid" || break
    sleep 0.1
  done
  kill -KILL -- "$target" 2> /dev/null || true
  wait "$pid" 2> /dev/null || true
}
# Connection tracking: every loopback connection of the connect case stays
# in the kernel's conntrack table for nf_conntrack_tcp_timeout_time_wait
# (120 s) after it closes; a few runs of 25 000 connections a second fill
# the table (262 144), and the kernel then drops SYNs, so later runs measure
# its 1 s SYN retry instead of a server. As root, the TIME_WAIT timeout is
# lowered to 1 s for the run and restored at exit; otherwise each connect
# run first waits (at most 130 s) until the table is at most half full.
conntrack_tw=/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_time_wait
conntrack_tw_saved=
if [ -w "$conntrack_tw" ]; then
  conntrack_tw_saved=$(cat "$conntrack_tw")
  echo 1 > "$conntrack_tw"
fi
conntrack_room() {
  local count=/proc/sys/net/netfilter/nf_conntrack_count max=/proc/sys/net/netfilter/nf_conntrack_max
  [ -r "$count" ] && [ -r "$max" ] || return 0
  for _ in $(seq 130); do
    [ $(($(cat "$count") * 2)) -le "$(cat "$max")" ] && return 0
    sleep 1
  done
  note "the conntrack table stayed over half full: connect runs may be throttled by dropped SYNs"
}
redis_pid=
cleanup() {
  stop_server
  if [ -n "$redis_pid" ]; then kill -KILL "$redis_pid" 2> /dev/null || true; fi
  rm -rf "$work"
  if [ -n "$conntrack_tw_saved" ]; then echo "$conntrack_tw_saved" > "$conntrack_tw"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_open() { (exec 3<> "/dev/tcp/127.0.0.1/$1") 2> /dev/null; }

# --- build
say "build (release)"
# switchboard on its own, with the features it ships with: built in one
# command with the examples, it would get the dev-dependencies' features
# too (tokio's "test-util", whose clock takes a lock at every reading).
# The floor is its own package for the same reason.
cargo build --release --bin switchboard
if [ -n "${LOADGEN:-}" ]; then
  cargo build --release --example ceiling_echo --example ceiling_file --example ceiling_udp_echo
  loadgen=$LOADGEN
else
  cargo build --release --example loadgen --example ceiling_echo --example ceiling_file --example ceiling_udp_echo
  loadgen=$root/target/release/examples/loadgen
fi
cargo build --release --manifest-path "$root/bench/floor/Cargo.toml" --target-dir "$root/target/floor"
switchboard=$root/target/release/switchboard
ceiling_echo=$root/target/release/examples/ceiling_echo
ceiling_file=$root/target/release/examples/ceiling_file
ceiling_udp_echo=$root/target/release/examples/ceiling_udp_echo
tokio_floor=$root/target/floor/release/tokio-floor

# --- peers
say "peers (socat, ncat)"
if ! have socat || ! have ncat; then
  if [ "${NO_INSTALL:-0}" = 1 ]; then
    note "NO_INSTALL=1: socat/ncat not installed by the script"
  elif have apt-get && [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    pkgs=()
    have socat || pkgs+=(socat)
    have ncat || pkgs+=(ncat)
    timeout 300 apt-get install -y -qq "${pkgs[@]}" > /dev/null 2>&1 \
      || { timeout 300 apt-get update -qq > /dev/null 2>&1 \
        && timeout 300 apt-get install -y -qq "${pkgs[@]}" > /dev/null 2>&1; } \
      || note "apt-get install ${pkgs[*]} failed"
  else
    note "apt-get (as root) not available to install socat/ncat"
  fi
fi
peers_echo=()
peers_connect=()
if have socat; then
  peers_echo+=(socat socat-nodelay)
  peers_connect+=(socat)
else
  note "socat not installed: its runs are skipped"
fi
if have ncat; then
  peers_echo+=(ncat)
  peers_connect+=(ncat)
else
  note "ncat not installed: its runs are skipped"
fi

# redis-server (Debian's package) for the random-bot's shared history.
history_variants="switchboard:random-bot-sqlite"
if have redis-server; then
  history_variants="$history_variants switchboard:random-bot-redis"
else
  note "redis-server not installed: the random-bot runs with a Redis history are skipped"
fi

# nginx (Debian's nginx-light) for the small-file HTTP case.
peers_http=()
if have nginx; then
  peers_http+=(nginx)
else
  note "nginx not installed: the requests case runs switchboard alone"
fi

# wrk (Debian's, linked with OpenSSL) for the HTTPS runs of the tls case.
have_wrk=0
if have wrk; then
  have_wrk=1
elif [[ " $CASES " == *" tls "* || " $CASES " == *" wrk "* ]]; then
  note "wrk not installed: the wrk case and the tls case's HTTPS request and download runs are skipped"
fi

# --- pinning
server_pin=()
load_pin=()
if have taskset && [ "$(nproc)" -ge 2 ]; then
  server_pin=(taskset -c "${SERVER_CPU:-0}")
  load_pin=(taskset -c "${LOAD_CPU:-1}")
  say "pinning: servers on core ${SERVER_CPU:-0}, load on core ${LOAD_CPU:-1}"
else
  note "not pinned (taskset missing or fewer than 2 cores): server and load share the CPUs"
fi

# --- open-file limit: the hold case needs one descriptor per connection on
# each side (both processes inherit this limit).
hold_counts=(10000)
[ "$HOLD_50K" = 1 ] && hold_counts+=(50000)
want_fds=$((${hold_counts[-1]} > HTTP_HOLD ? ${hold_counts[-1]} + 1000 : HTTP_HOLD + 1000))
if [ "$(ulimit -Hn)" != unlimited ] && [ "$(ulimit -Hn)" -lt "$want_fds" ]; then
  ulimit -Hn "$want_fds" 2> /dev/null || true # works as root
fi
if [ "$(ulimit -Sn)" != unlimited ] && [ "$(ulimit -Sn)" -lt "$want_fds" ]; then
  ulimit -Sn "$want_fds" 2> /dev/null || ulimit -Sn "$(ulimit -Hn)" 2> /dev/null || true
fi
if [ "$(ulimit -Sn)" != unlimited ] && [ "$(ulimit -Sn)" -lt "$want_fds" ]; then
  note "open-file limit is $(ulimit -Sn), below the $want_fds the hold case needs"
fi
if [ "$HOLD_50K" = 1 ] && [ -r /proc/sys/net/ipv4/ip_local_port_range ]; then
  read -r lo hi < /proc/sys/net/ipv4/ip_local_port_range
  if [ $((hi - lo + 1)) -lt 50000 ]; then
    note "ephemeral port range $lo-$hi has fewer than 50000 ports: holding 50 000 connections to one address may fall short (sysctl net.ipv4.ip_local_port_range)"
  fi
fi

# --- ports
p_sb_echo=$BASE_PORT
p_sb_download=$((BASE_PORT + 1))
p_sb_keyword=$((BASE_PORT + 2))
p_sb_random=$((BASE_PORT + 3))
p_sb_refused=$((BASE_PORT + 4))
p_sb_proxied=$((BASE_PORT + 5))
p_ceiling_echo=$((BASE_PORT + 10))
p_ceiling_file=$((BASE_PORT + 11))
p_tokio_floor=$((BASE_PORT + 12))
p_socat=$((BASE_PORT + 20))
p_socat_nodelay=$((BASE_PORT + 21))
p_ncat=$((BASE_PORT + 22))
p_nginx=$((BASE_PORT + 23))
p_sb_random_sqlite=$((BASE_PORT + 24))
p_sb_random_redis=$((BASE_PORT + 25))
p_redis=$((BASE_PORT + 26))
# The UDP echo ceiling (switchboard's UDP echo shares the echo's port number).
p_ceiling_udp=$((BASE_PORT + 27))
# The tls case: switchboard's echo and download with TLS, nginx http and stream with ssl.
p_sb_tls_echo=$((BASE_PORT + 28))
p_sb_tls_download=$((BASE_PORT + 29))
p_nginx_tls=$((BASE_PORT + 30))
p_nginx_stream_tls=$((BASE_PORT + 31))
# Ports inside the ephemeral range could be taken by the clients' own
# sockets (the connect case leaves thousands in TIME_WAIT), and a listener
# cannot bind next to those.
if [ -r /proc/sys/net/ipv4/ip_local_port_range ]; then
  read -r lo hi < /proc/sys/net/ipv4/ip_local_port_range
  if [ "$BASE_PORT" -le "$hi" ] && [ $((BASE_PORT + 31)) -ge "$lo" ]; then
    note "ports $BASE_PORT-$((BASE_PORT + 31)) overlap the ephemeral range $lo-$hi: a bind may fail (set BASE_PORT)"
  fi
fi
for p in $p_sb_echo $p_sb_download $p_sb_keyword $p_sb_random $p_sb_refused $p_sb_proxied $p_ceiling_echo \
  $p_ceiling_file $p_tokio_floor $p_socat $p_socat_nodelay $p_ncat $p_nginx $p_sb_random_sqlite $p_sb_random_redis $p_redis \
  $p_sb_tls_echo $p_sb_tls_download $p_nginx_tls $p_nginx_stream_tls; do
  if port_open "$p"; then
    echo "run.sh: 127.0.0.1:$p is already in use; pick other ports with BASE_PORT=..." >&2
    exit 1
  fi
done

# --- the download file: a 16 MiB random block repeated, kept in
# target/bench/data between runs with its sha256.
data=$root/target/bench/data
mkdir -p "$data"
blocks=$(((FILE_MB + 15) / 16))
file_name=big-$((blocks * 16))M.bin
file=$data/$file_name
file_size=$((blocks * 16 * 1024 * 1024))
if [ ! -f "$file" ] || [ "$(stat -c %s "$file")" != "$file_size" ] || [ ! -s "$file.sha256" ]; then
  say "creating $file ($((blocks * 16)) MiB)"
  rm -f "$file" "$file.sha256"
  head -c 16M /dev/urandom > "$work/block"
  for _ in $(seq "$blocks"); do cat "$work/block"; done > "$file.tmp"
  sha256sum "$file.tmp" | cut -d' ' -f1 > "$file.sha256.tmp"
  mv "$file.tmp" "$file"
  mv "$file.sha256.tmp" "$file.sha256"
fi
file_sha=$(cat "$file.sha256")
# Only the benchmark file is served.
serve_dir=$work/serve
mkdir -p "$serve_dir"
ln "$file" "$serve_dir/$file_name" 2> /dev/null || cp "$file" "$serve_dir/$file_name"
# The small file of the requests case, and the 1 MiB one of the wrk case.
head -c 1024 /dev/urandom > "$serve_dir/small-1k.bin"
head -c 1M /dev/urandom > "$serve_dir/medium-1m.bin"
chmod a+rx "$work" "$serve_dir" && chmod a+r "$serve_dir/small-1k.bin" "$serve_dir/medium-1m.bin" "$serve_dir/$file_name"
# The tar case's folders (see the top), hard-linked into the served root
# (a folder's archive holds what is in it, not what a symlink leads to):
# the big file split in 16 MiB files, and 10 000 files of 4 KiB; beside
# them the single 40 MB file they are measured against.
tar_files=$blocks
tar_small=10000
if [[ " $CASES " == *" tar "* ]]; then
  if [ ! -d "$data/tar-$tar_files" ] || [ "$(ls "$data/tar-$tar_files" | wc -l)" != "$tar_files" ]; then
    say "creating $data/tar-$tar_files ($tar_files files of 16 MiB)"
    rm -rf "$data/tar-$tar_files" && mkdir -p "$data/tar-$tar_files"
    split -b 16M -d -a 3 "$file" "$data/tar-$tar_files/f"
  fi
  if [ ! -d "$data/tar-small" ] || [ "$(ls "$data/tar-small" | wc -l)" != "$tar_small" ]; then
    say "creating $data/tar-small ($tar_small files of 4 KiB)"
    rm -rf "$data/tar-small" && mkdir -p "$data/tar-small"
    python3 -c "
import os, sys
for i in range(int(sys.argv[2])):
    with open(os.path.join(sys.argv[1], f'f{i:05d}'), 'wb') as f:
        f.write(os.urandom(4096))
" "$data/tar-small" "$tar_small"
  fi
  cp -al "$data/tar-$tar_files" "$serve_dir/big-folder"
  cp -al "$data/tar-small" "$serve_dir/small-folder"
  head -c $((tar_small * 4096)) "$file" > "$serve_dir/small-single.bin"
  # The archives' lengths: a 512-byte header a member (the folder's own,
  # then each file's: short names, no pax header), the bodies padded to
  # 512 (these are multiples), and the two zero blocks of the end.
  tar_big_size=$(((1 + tar_files) * 512 + tar_files * 16 * 1024 * 1024 + 1024))
  tar_small_size=$(((1 + tar_small) * 512 + tar_small * 4096 + 1024))
fi
# nginx for the same file: one process (master_process off, so its CPU time
# is one process's, as switchboard's is), sendfile on, access log off on
# both (switchboard logs at warn for this case: see start_server).
nginx_conf=$work/nginx.conf
cat > "$nginx_conf" << EOF
daemon off;
master_process off;
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections $((HTTP_HOLD + 1000)); }
http {
  access_log off;
  sendfile on;
  keepalive_requests 1000;
  keepalive_timeout 300s;
  server { listen 127.0.0.1:$p_nginx; root $serve_dir; }
}
EOF

# --- switchboard's config: the embedded default (so its defaults, default
# logging included, are what is measured), with the bench's ports and root,
# a short shutdown grace, and for the echo listener (the first one) room for
# the hold case, and for the download listener room for its HTTP run: up
# to 50 000 connections, and a backlog that 10 000
# simultaneous connects do not overflow (the seed's 128 would, and dropped
# handshakes retry after a second: the hold case would time that), and a
# first-message deadline longer than the hold (its connections say nothing);
# and the download root may serve the big file hard-linked into it, and
# one source (the load generators, all on 127.0.0.1) may hold 64 of its
# slots (wrk's 64 connections), not the default 32.
config=$work/switchboard.toml
"$switchboard" default-config | sed \
  -e "s/^shutdown_grace = .*/shutdown_grace = \"1s\"/" \
  -e "s/127\.0\.0\.1:10010/127.0.0.1:$p_sb_echo/" \
  -e "s/127\.0\.0\.1:1111/127.0.0.1:$p_sb_download/" \
  -e "s/127\.0\.0\.1:10086/127.0.0.1:$p_sb_keyword/" \
  -e "s/127\.0\.0\.1:10087/127.0.0.1:$p_sb_random/" \
  -e "s|^root = .*|root = \"$serve_dir\"|" \
  -e "0,/^max_connections = .*/s//max_connections = 60000/" \
  -e "0,/^backlog = .*/s//backlog = 4096/" \
  -e "0,/^first_message_timeout = .*/s//first_message_timeout = \"10m\"/" \
  -e "s/^allow_hard_links = .*/allow_hard_links = true/" \
  -e "s/^max_downloads_per_source = .*/max_downloads_per_source = 64/" \
  -e "/^handler = \"download\"/a max_connections = 60000\nbacklog = 4096" \
  > "$config"
for expected in "$p_sb_echo" "$p_sb_download" "$p_sb_keyword" "$p_sb_random" "60000" "4096" "10m" "allow_hard_links = true" "max_downloads_per_source = 64" "$serve_dir"; do
  grep -q "$expected" "$config" || { echo "bench: could not adapt the default config ($expected)" >&2; exit 1; }
done
# A listener that refuses everyone, for the cost of a refusal beside the
# cost of a connection served (the connect case).
printf '\n[[listener]]\nname = "refused"\nbind = "127.0.0.1:%s"\nhandler = "echo"\ndeny = ["0.0.0.0/0", "::/0"]\n' \
  "$p_sb_refused" >> "$config"
# An echo listener behind a (stand-in) balancer: every connection from
# 127.0.0.1 starts with a PROXY protocol v2 header (loadgen --proxy-v2), for
# the cost of the header beside a plain connection (the connect case).
printf '\n[[listener]]\nname = "proxied"\nbind = "127.0.0.1:%s"\nhandler = "echo"\nproxy_protocol = "v2"\ntrusted_proxies = ["127.0.0.1"]\n' \
  "$p_sb_proxied" >> "$config"
# The random-bot with its history in SQLite (a file of this run) and in
# Redis (one redis-server for the run, on the servers' core, no
# persistence), for their cost beside the memory history (the lines case).
printf '\n[[listener]]\nname = "random-bot-sqlite"\nbind = "127.0.0.1:%s"\nhandler = "random-bot"\n[listener.history]\nbackend = "sqlite"\npath = "%s"\n' \
  "$p_sb_random_sqlite" "$work/random-bot.db" >> "$config"
printf '\n[[listener]]\nname = "random-bot-redis"\nbind = "127.0.0.1:%s"\nhandler = "random-bot"\n[listener.history]\nbackend = "redis"\nurl = "redis://127.0.0.1:%s/0"\n' \
  "$p_sb_random_redis" "$p_redis" >> "$config"
# The tls case: one certificate for both servers (P-256 ECDSA, self-signed,
# for localhost and 127.0.0.1), switchboard's echo and download listeners
# with TLS 1.3 only, and nginx's http and stream with ssl, TLS 1.3, X25519.
tls_dir=$work/tls
nginx_tls_conf=$work/nginx-tls.conf
if [[ " $CASES " == *" tls "* ]]; then
  mkdir -p "$tls_dir"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$tls_dir/key.pem" -out "$tls_dir/cert.pem" 2> "$work/openssl.log" \
    || { echo "bench: could not make the test certificate" >&2; cat "$work/openssl.log" >&2; exit 1; }
  chmod a+rx "$tls_dir" && chmod a+r "$tls_dir/key.pem" "$tls_dir/cert.pem"
  printf '\n[[listener]]\nname = "echo-tls"\nbind = "127.0.0.1:%s"\nhandler = "echo"\nbacklog = 4096\n[listener.tls]\ncert = "%s"\nkey = "%s"\nmin_version = "1.3"\n' \
    "$p_sb_tls_echo" "$tls_dir/cert.pem" "$tls_dir/key.pem" >> "$config"
  printf '\n[[listener]]\nname = "download-tls"\nbind = "127.0.0.1:%s"\nhandler = "download"\nroot = "%s"\nallow_hard_links = true\nbacklog = 4096\n[listener.tls]\ncert = "%s"\nkey = "%s"\nmin_version = "1.3"\n' \
    "$p_sb_tls_download" "$serve_dir" "$tls_dir/cert.pem" "$tls_dir/key.pem" >> "$config"
  # The stream module is dynamic in Debian's nginx: loaded by path (a
  # config given with -c does not include modules-enabled/).
  stream_module=
  for m in /usr/lib/nginx/modules/ngx_stream_module.so /usr/share/nginx/modules/ngx_stream_module.so; do
    [ -f "$m" ] && stream_module=$m && break
  done
  {
    [ -n "$stream_module" ] && echo "load_module $stream_module;"
    cat << EOF
daemon off;
master_process off;
worker_processes 1;
pid $work/nginx-tls.pid;
error_log $work/nginx-tls-error.log;
events { worker_connections $((TLS_HOLD + 1000)); }
http {
  access_log off;
  keepalive_requests 1000;
  keepalive_timeout 300s;
  ssl_certificate $tls_dir/cert.pem;
  ssl_certificate_key $tls_dir/key.pem;
  ssl_protocols TLSv1.3;
  ssl_ecdh_curve X25519;
  server { listen 127.0.0.1:$p_nginx_tls ssl; root $serve_dir; }
}
EOF
    if [ -n "$stream_module" ]; then
      cat << EOF
stream {
  ssl_certificate $tls_dir/cert.pem;
  ssl_certificate_key $tls_dir/key.pem;
  ssl_protocols TLSv1.3;
  ssl_ecdh_curve X25519;
  server { listen 127.0.0.1:$p_nginx_stream_tls ssl; return ""; }
}
EOF
    fi
  } > "$nginx_tls_conf"
  [ -n "$stream_module" ] || note "nginx's stream module not found: the tls handshake run is switchboard's alone"
fi
"$switchboard" check -c "$config" > /dev/null
if [[ $history_variants == *redis* ]]; then
  "${server_pin[@]}" redis-server --port "$p_redis" --bind 127.0.0.1 --save "" --appendonly no \
    --protected-mode no > "$work/redis.log" 2>&1 &
  redis_pid=$!
  for _ in $(seq 100); do port_open "$p_redis" && break; sleep 0.1; done
  port_open "$p_redis" || { echo "bench: redis-server did not start" >&2; tail -5 "$work/redis.log" >&2; exit 1; }
fi

# start_server LABEL KIND: starts the server, sets server_pid and port.
start_server() {
  local label=$1 kind=$2 cmd
  case $label in
    switchboard*)
      cmd=("$switchboard" -c "$config")
      case $kind:$label in
        download:* | tar:*) port=$p_sb_download ;;
        lines:switchboard:keyword-bot) port=$p_sb_keyword ;;
        lines:switchboard:random-bot) port=$p_sb_random ;;
        lines:switchboard:random-bot-sqlite) port=$p_sb_random_sqlite ;;
        lines:switchboard:random-bot-redis) port=$p_sb_random_redis ;;
        connect:switchboard:refused) port=$p_sb_refused ;;
        connect:switchboard:proxy-v2) port=$p_sb_proxied ;;
        requests:* | wrk:* | hold-http:*) port=$p_sb_download ;;
        tls-handshake:*) port=$p_sb_tls_echo ;;
        tls-*) port=$p_sb_tls_download ;;
        # The embedded default's UDP echo, on the echo's port number.
        datagrams:*) port=$p_sb_echo ;;
        *) port=$p_sb_echo ;;
      esac
      # Access logs off on both sides of the requests case (nginx: access_log off).
      if [ "$kind" = requests ] || [ "$kind" = wrk ] || [ "$kind" = hold-http ] || [[ $kind == tls-* ]]; then
        cmd=(env RUST_LOG=warn "$switchboard" -c "$config")
      fi
      ;;
    nginx)
      case $kind in
        tls-handshake)
          port=$p_nginx_stream_tls
          cmd=(nginx -c "$nginx_tls_conf" -p "$work" -e "$work/nginx-tls-error.log")
          ;;
        tls-*)
          port=$p_nginx_tls
          cmd=(nginx -c "$nginx_tls_conf" -p "$work" -e "$work/nginx-tls-error.log")
          ;;
        *)
          port=$p_nginx
          cmd=(nginx -c "$nginx_conf" -p "$work" -e "$work/nginx-error.log")
          ;;
      esac
      ;;
    ceiling)
      if [ "$kind" = datagrams ]; then
        port=$p_ceiling_udp
        cmd=("$ceiling_udp_echo" "127.0.0.1:$port")
      elif [ "$kind" = download ]; then
        port=$p_ceiling_file
        cmd=("$ceiling_file" --addr "127.0.0.1:$port" --root "$serve_dir")
      else
        port=$p_ceiling_echo
        cmd=("$ceiling_echo" --addr "127.0.0.1:$port")
      fi
      ;;
    tokio-floor)
      port=$p_tokio_floor
      cmd=("$tokio_floor" --addr "127.0.0.1:$port")
      ;;
    socat)
      port=$p_socat
      cmd=(socat "TCP-LISTEN:$port,bind=127.0.0.1,fork,reuseaddr" EXEC:cat)
      ;;
    socat-nodelay)
      port=$p_socat_nodelay
      cmd=(socat "TCP-LISTEN:$port,bind=127.0.0.1,fork,reuseaddr,nodelay" EXEC:cat)
      ;;
    ncat)
      port=$p_ncat
      cmd=(ncat -lk 127.0.0.1 "$port" --exec /bin/cat)
      ;;
    *)
      echo "run.sh: unknown server $label" >&2
      return 1
      ;;
  esac
  local log=$work/${label//:/-}.log
  setsid "${server_pin[@]}" "${cmd[@]}" > "$log" 2>&1 < /dev/null &
  server_pid=$!
  for _ in $(seq 100); do
    alive "$server_pid" || break
    if [ "$kind" = datagrams ]; then
      # UDP has no connect to try: both servers say when they are bound.
      grep -q -e 'listening on' -e ' serving (' "$log" 2> /dev/null && return 0
    else
      port_open "$port" && return 0
    fi
    sleep 0.1
  done
  echo "run.sh: $label did not start listening on 127.0.0.1:$port" >&2
  tail -n 5 "$log" >&2 || true
  stop_server
  return 1
}

# record SERVER CASE ROUND JSON ERROR [WARNING]: one line of the results;
# JSON (the loadgen's line) may be empty, a non-empty ERROR marks the run
# failed (left out of the medians), a WARNING is only shown.
record() {
  local line=$4 err=${5//[\"\\]/\'} warn=${6:-}
  warn=${warn//[\"\\]/\'}
  local head
  head=$(printf '{"server":"%s","case":"%s","round":%d' "$1" "$2" "$3")
  [ -n "$err" ] && head="$head,\"error\":\"$err\""
  [ -n "$warn" ] && head="$head,\"warning\":\"$warn\""
  if [ -n "$line" ]; then
    printf '%s,%s\n' "$head" "${line#\{}" >> "$results"
  else
    printf '%s}\n' "$head" >> "$results"
  fi
  # Failures of switchboard, the ceiling or the floor fail the run (all three
  # are built here); a peer's are only reported.
  case $1 in
    switchboard* | ceiling | tokio-floor) [ -z "$err" ] || failures=$((failures + 1)) ;;
    *) [ -z "$err" ] || peer_failures=$((peer_failures + 1)) ;;
  esac
}

# number JSON: the case's main number, for the console.
number() {
  grep -o -E '"(mb_per_sec|handshakes_per_sec|conns_per_sec|msgs_per_sec|reqs_per_sec|datagrams_per_sec|bytes_per_connection)":[0-9.e+-]+' <<< "$1" | head -1
}

# run_one LABEL CASE KIND ROUND TIMEOUT LOADGEN-ARGS...
run_one() {
  local label=$1 case_name=$2 kind=$3 round=$4 limit=$5
  shift 5
  if [ "$kind" = connect ]; then conntrack_room; fi
  printf '    %-24s %-16s round %d: ' "$case_name" "$label" "$round"
  if ! start_server "$label" "$kind"; then
    echo "server did not start"
    record "$label" "$case_name" "$round" "" "server did not start"
    return 0
  fi
  local out=$work/loadgen.out err=$work/loadgen.err status=0 mode=$kind
  # The HTTP keep-alive hold is loadgen's hold with --path; a tar stream
  # is a download.
  [ "$kind" = hold-http ] && mode=hold
  [ "$kind" = tar ] && mode=download
  timeout --foreground -k 5 "$limit" "${load_pin[@]}" "$loadgen" "$mode" --addr "127.0.0.1:$port" \
    --duration "$DURATION" --deadline $((limit - 10)) --json-only --server-pid "$server_pid" \
    "$@" > "$out" 2> "$err" || status=$?
  local up=1
  alive "$server_pid" || up=0
  stop_server
  local line
  line=$(grep -m1 '^{"mode":' "$out" || true)
  local why=
  if [ "$up" = 0 ]; then
    why="the server exited during the run"
  elif [ "$status" != 0 ] || [ -z "$line" ]; then
    why="loadgen exit $status"
    [ "$status" = 124 ] && why="loadgen timed out after ${limit}s"
    why="$why: $(grep -v '^{"mode":' "$err" 2> /dev/null | tail -n 1 | tr -d '\000-\037' | cut -c1-300)"
  fi
  # A peer whose every echoed byte was right but which lost the tail at the
  # end of the run (ncat closes as soon as the client half-closes) keeps its
  # number, with a warning.
  if [ -n "$why" ] && [ "$up" = 1 ] && [[ $label != switchboard* && $label != ceiling ]] \
    && [[ $line == *'"mismatches":0,'* ]]; then
    record "$label" "$case_name" "$round" "${line/\"ok\":false/\"ok\":null}" "" "$why"
    echo "$(number "$line") (warning: $why)"
    return 0
  fi
  record "$label" "$case_name" "$round" "$line" "$why"
  if [ -n "$why" ]; then
    echo "FAILED ($why)"
  else
    number "$line"
  fi
}

# run_case CASE KIND TIMEOUT "SERVERS" LOADGEN-ARGS...: ROUNDS rounds, each
# running every server once, in the same order (A B A B ...).
run_case() {
  local case_name=$1 kind=$2 limit=$3 servers=$4
  shift 4
  say "case: $case_name"
  local round label
  for round in $(seq "$ROUNDS"); do
    for label in $servers; do
      if [ "$label" = switchboard:refused ]; then
        run_one "$label" "$case_name" "$kind" "$round" "$limit" "$@" --refused
      elif [ "$label" = switchboard:proxy-v2 ]; then
        run_one "$label" "$case_name" "$kind" "$round" "$limit" "$@" --proxy-v2
      elif [ "$kind" = tar ] && [ "$label" = switchboard:single ]; then
        run_one "$label" "$case_name" "$kind" "$round" "$limit" "${tar_single_args[@]}" "$@"
      elif [ "$kind" = tar ]; then
        run_one "$label" "$case_name" "$kind" "$round" "$limit" "${tar_archive_args[@]}" "$@"
      elif [ "$label" = switchboard:http ] && [ "$kind" = download ]; then
        run_one "$label" "$case_name" "$kind" "$round" "$limit" "$@" --http
      else
        run_one "$label" "$case_name" "$kind" "$round" "$limit" "$@"
      fi
    done
  done
}

# cpu_ticks PID: utime+stime+cutime+cstime of /proc/PID/stat (USER_HZ = 100).
cpu_ticks() {
  local stat
  stat=$(cat "/proc/$1/stat" 2> /dev/null) || return 1
  stat=${stat##*) }
  awk '{ print $12 + $13 + $14 + $15 }' <<< "$stat"
}

# The wrk script: its summary as one line of JSON (exact counts, not the
# rounded figures wrk prints).
wrk_lua=$work/summary.lua
cat > "$wrk_lua" << 'EOF'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRKJSON {"requests":%d,"bytes":%d,"wrk_duration_us":%d,'
    .. '"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d,'
    .. '"p50_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.bytes, summary.duration, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(99), latency.max))
end
EOF

# run_wrk LABEL CASE KIND ROUND TIMEOUT CONNECTIONS PATH: one wrk run (1
# thread, pinned to the load core) against http://127.0.0.1:PORT/PATH
# (https:// for the tls-* kinds);
# records a line like loadgen's, with the server's CPU per unit of work
# (request, MB), its peak RSS (VmHWM), and wrk's own CPU share.
run_wrk() {
  local label=$1 case_name=$2 kind=$3 round=$4 limit=$5 conns=$6 path=$7
  printf '    %-24s %-16s round %d: ' "$case_name" "$label" "$round"
  if ! start_server "$label" "$kind"; then
    echo "server did not start"
    record "$label" "$case_name" "$round" "" "server did not start"
    return 0
  fi
  local out=$work/wrk.out times=$work/wrk.time status=0 before after hwm pid=$server_pid
  before=$(cpu_ticks "$server_pid" || echo "")
  local scheme=http
  [[ $kind == tls-* ]] && scheme=https
  local began=$EPOCHREALTIME
  timeout --foreground -k 5 "$limit" "${load_pin[@]}" /usr/bin/time -o "$times" -f 'WRKTIME %U %S %e' \
    wrk -t1 -c"$conns" -d"${DURATION}s" --timeout "$((limit - 10))s" -s "$wrk_lua" \
    "$scheme://127.0.0.1:$port$path" > "$out" 2>&1 || status=$?
  local ended=$EPOCHREALTIME
  after=$(cpu_ticks "$server_pid" || echo "")
  hwm=$(awk '/^VmHWM:/ { print $2 * 1024 }' "/proc/$server_pid/status" 2> /dev/null || echo "")
  local up=1
  alive "$server_pid" || up=0
  stop_server
  local line why=
  line=$(python3 - "$out" "$times" "$kind" "$conns" "$DURATION" "${before:-}" "${after:-}" "${hwm:-}" \
    "$began" "$ended" "$pid" << 'EOF'
import json, sys
out, times, kind, conns, duration, before, after, hwm, began, ended, pid = sys.argv[1:]
w = None
for l in open(out, errors="replace"):
    if l.startswith("WRKJSON "):
        w = json.loads(l[8:])
if w is None:
    sys.exit(0)
secs = w["wrk_duration_us"] / 1e6
r = {"mode": kind, "client": "wrk", "connections": int(conns), "duration_s": float(duration)}
r.update(w)
errors = sum(w[k] for k in ("err_connect", "err_read", "err_write", "err_status", "err_timeout"))
r["errors"] = errors
r["completed"] = w["requests"]
r["reqs_per_sec"] = w["requests"] / secs
r["mb_per_sec"] = w["bytes"] / 1e6 / secs
cpu = (float(after) - float(before)) / 100 if before and after else None
wall = float(ended) - float(began)
r["server_pid"] = int(pid)
r["server_cpu_s"] = cpu
r["server_busy"] = cpu / wall if cpu is not None else None
r["rss_max_bytes"] = int(hwm) if hwm else None
if cpu is not None and w["requests"]:
    r["server_cpu_us_per_req"] = cpu * 1e6 / w["requests"]
if cpu is not None and w["bytes"]:
    r["server_cpu_us_per_mb"] = cpu * 1e6 / (w["bytes"] / 1e6)
try:
    t = next(l for l in open(times) if l.startswith("WRKTIME")).split()
    r["client_cpu_s"] = float(t[1]) + float(t[2])
    r["client_busy"] = r["client_cpu_s"] / float(t[3])
except (OSError, StopIteration, ValueError, IndexError):
    pass
# Status errors (non-2xx) fail a run; a read error at the very end of a
# download run (wrk closing mid-body) does not. A download run counts its
# bytes: a whole response of the big file may take longer than the run.
done = w["bytes"] > 0 if kind == "tls-download" else w["requests"] > 0
r["ok"] = done and w["err_status"] == 0 and w["err_connect"] == 0 and w["err_timeout"] == 0
print(json.dumps(r, separators=(",", ":")))
EOF
  )
  if [ "$up" = 0 ]; then
    why="the server exited during the run"
  elif [ -z "$line" ]; then
    why="wrk exit $status: $(tail -n 1 "$out" | tr -d '\000-\037' | cut -c1-300)"
  elif [[ $line == *'"ok":false'* ]]; then
    why="wrk: $(grep -o -E '"(requests|err_[a-z]+)":[0-9]+' <<< "$line" | tr '\n' ' ')"
  fi
  record "$label" "$case_name" "$round" "$line" "$why"
  if [ -n "$why" ]; then
    echo "FAILED ($why)"
  else
    grep -o -E '"(reqs_per_sec|mb_per_sec)":[0-9.e+-]+' <<< "$line" | tr '\n' ' '
    echo
  fi
}

# check_tls LABEL KIND: before the timed runs, one server's HTTPS answers
# (curl, verifying the certificate): the small file byte for byte, the
# first MiB of the big one, TLS 1.3 with X25519. A failure is recorded.
check_tls() {
  local label=$1 kind=$2 why=
  if ! start_server "$label" "$kind"; then
    record "$label" "tls-check" 0 "" "server did not start"
    return 0
  fi
  local url=https://localhost:$port
  local curl_tls=(curl -sS --max-time 20 --cacert "$tls_dir/cert.pem" --resolve "localhost:$port:127.0.0.1" --tlsv1.3)
  "${curl_tls[@]}" -o "$work/small.got" "$url/small-1k.bin" 2> "$work/curl.err" \
    && cmp -s "$work/small.got" "$serve_dir/small-1k.bin" \
    || why="the 1 KiB file over HTTPS differs ($(head -c 200 "$work/curl.err"))"
  if [ -z "$why" ]; then
    "${curl_tls[@]}" -r 0-1048575 -o "$work/range.got" "$url/$file_name" 2> "$work/curl.err" \
      && head -c 1048576 "$file" | cmp -s - "$work/range.got" \
      || why="the big file's first MiB over HTTPS differs ($(head -c 200 "$work/curl.err"))"
  fi
  if [ -z "$why" ]; then
    local hello
    hello=$(timeout 10 openssl s_client -connect "127.0.0.1:$port" -servername localhost -tls1_3 \
      -groups X25519 < /dev/null 2>&1 || true)
    grep -q -e 'Server Temp Key: X25519' -e 'Peer Temp Key: X25519' -e 'Negotiated TLS1.3 group: X25519' <<< "$hello" \
      || why="openssl s_client did not negotiate X25519"
  fi
  stop_server
  if [ -n "$why" ]; then
    record "$label" "tls-check" 0 "" "$why"
    echo "    tls check $label: FAILED ($why)"
  else
    echo "    tls check $label: ok (1 KiB file, first MiB of $file_name, TLS 1.3 with X25519)"
  fi
}

wants() { [[ " $CASES " == *" $1 "* ]]; }
human() { case $1 in 65536) echo 64K ;; 1048576) echo 1M ;; *) echo "$1" ;; esac; }

t_short=$((DURATION + 30))
echo_peers="${peers_echo[*]}"
connect_peers="${peers_connect[*]}"

if wants echo; then
  if [ "$quick" = 1 ]; then
    echo_configs=("1 65536" "8 1048576")
  else
    echo_configs=("1 65536" "1 1048576" "8 65536" "8 1048576")
  fi
  for cfg in "${echo_configs[@]}"; do
    read -r conns window <<< "$cfg"
    chunk=$((window / 4 < 65536 ? window / 4 : 65536))
    run_case "echo c$conns w$(human "$window")" echo "$t_short" "switchboard ceiling tokio-floor $echo_peers" \
      --connections "$conns" --window "$window" --chunk "$chunk" --sessions "$ECHO_SESSIONS"
  done
fi

if wants connect; then
  run_case "connect w8" connect "$t_short" "switchboard switchboard:refused switchboard:proxy-v2 ceiling tokio-floor $connect_peers" \
    --workers 8 --message 'ping\n'
fi

if wants lines; then
  for conns in $LINES_CONNS; do
    run_case "lines c$conns" lines "$t_short" \
      "switchboard:keyword-bot switchboard:random-bot $history_variants ceiling tokio-floor" \
      --connections "$conns" --message hello
  done
fi

if wants datagrams; then
  run_case "datagrams c8" datagrams "$t_short" "switchboard ceiling" --clients 8 --size 64
fi

if wants download; then
  say "warming the page cache ($file_name)"
  cat "$file" > /dev/null
  if [ "$quick" = 1 ]; then clients_list=(4); else clients_list=(1 4); fi
  for clients in "${clients_list[@]}"; do
    run_case "download c$clients" download $((DURATION + 300)) "switchboard switchboard:http ceiling" \
      --file "$file_name" --clients "$clients" --repeat "$REPEAT" \
      --expect-size "$file_size" --expect-sha256 "$file_sha"
  done
fi

if wants tar; then
  say "warming the page cache (the tar case's folders)"
  cat "$serve_dir"/big-folder/* "$serve_dir"/small-folder/* "$serve_dir/small-single.bin" > /dev/null
  # Once, by GNU tar: the archive lists every member.
  start_server switchboard tar
  members=$(exec 3<> "/dev/tcp/127.0.0.1/$port" && printf 'small-folder.tar\n' >&3 && timeout 60 tar -t <&3 | wc -l)
  stop_server
  [ "$members" = $((tar_small + 1)) ] \
    || { echo "bench: GNU tar listed $members members of small-folder.tar, not $((tar_small + 1))" >&2; exit 1; }
  tar_archive_args=(--file big-folder.tar --expect-size "$tar_big_size")
  tar_single_args=(--file "$file_name" --expect-size "$file_size" --expect-sha256 "$file_sha")
  run_case "tar ${tar_files}x16M" tar $((DURATION + 300)) "switchboard switchboard:single" \
    --clients 1 --repeat "$REPEAT"
  tar_archive_args=(--file small-folder.tar --expect-size "$tar_small_size")
  tar_single_args=(--file small-single.bin --expect-size $((tar_small * 4096)))
  run_case "tar ${tar_small}x4K" tar $((DURATION + 120)) "switchboard switchboard:single" \
    --clients 1 --repeat $((REPEAT * 10))
fi

if wants requests; then
  run_case "requests c8" requests "$t_short" "switchboard ${peers_http[*]}" \
    --connections 8 --path /small-1k.bin --expect-size 1024
fi

if wants wrk && [ "$have_wrk" = 1 ]; then
  for size in 1K 1M; do
    path=/small-1k.bin
    [ "$size" = 1M ] && path=/medium-1m.bin
    say "case: wrk c64 $size"
    for round in $(seq "$ROUNDS"); do
      for label in switchboard ${peers_http[*]}; do
        run_wrk "$label" "wrk c64 $size" wrk "$round" "$t_short" 64 "$path"
      done
    done
  done
fi

if wants hold; then
  for n in "${hold_counts[@]}"; do
    run_case "hold $n" hold $((DURATION + HOLD_SECS + 120)) "switchboard" \
      --connections "$n" --hold "$HOLD_SECS"
  done
  run_case "hold-http $HTTP_HOLD" hold-http $((DURATION + HOLD_SECS + 120)) "switchboard ${peers_http[*]}" \
    --connections "$HTTP_HOLD" --hold "$HOLD_SECS" --path /small-1k.bin --expect-size 1024
fi

if wants tls; then
  tls_servers="switchboard ${peers_http[*]}"
  tls_hs_servers=switchboard
  [ -n "${stream_module:-}" ] && tls_hs_servers="$tls_hs_servers ${peers_http[*]}"
  say "case: tls (checks)"
  for label in $tls_servers; do check_tls "$label" tls-requests; done
  run_case "tls-handshake w8" tls-handshake "$t_short" "$tls_hs_servers" --workers 8
  if [ "$have_wrk" = 1 ]; then
    say "case: tls-requests c8"
    for round in $(seq "$ROUNDS"); do
      for label in $tls_servers; do
        run_wrk "$label" "tls-requests c8" tls-requests "$round" "$t_short" 8 /small-1k.bin
      done
    done
    say "warming the page cache ($file_name)"
    cat "$file" > /dev/null
    say "case: tls-download c4"
    for round in $(seq "$ROUNDS"); do
      for label in $tls_servers; do
        run_wrk "$label" "tls-download c4" tls-download "$round" $((DURATION + 120)) 4 "/$file_name"
      done
    done
  fi
  run_case "tls-hold $TLS_HOLD" tls-hold $((DURATION + HOLD_SECS + 120)) "$tls_servers" \
    --connections "$TLS_HOLD" --hold "$HOLD_SECS" --path /small-1k.bin --expect-size 1024
fi

# Other work on the machine during the run shows in the load average (the
# interleaved rounds spread it over the servers, but it widens the spread).
note "load average at the end of the run (1, 5, 15 min): $(cut -d' ' -f1-3 /proc/loadavg 2> /dev/null || echo unknown) on $(nproc) CPUs"
say "report"
python3 "$root/bench/report.py" --results "$results" --out "$report" \
  --command "$command_line" --notes "$notes" \
  --settings "rounds=$ROUNDS duration=${DURATION}s echo_sessions=$ECHO_SESSIONS file=$((blocks * 16))MiB repeat=$REPEAT hold=${HOLD_SECS}s lines_connections=${LINES_CONNS// /,} http_hold=$HTTP_HOLD tls_hold=$TLS_HOLD"
echo "results: $results"
echo "report:  $report"
if [ "$peer_failures" -gt 0 ]; then
  echo "run.sh: $peer_failures run(s) of socat/ncat failed (reported, not counted)"
fi
if [ "$failures" -gt 0 ]; then
  echo "run.sh: $failures run(s) failed (see the report)" >&2
  exit 1
fi
