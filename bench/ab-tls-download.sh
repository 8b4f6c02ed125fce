#!/usr/bin/env bash
# bench/ab-tls-download.sh OLD_BINARY NEW_BINARY ...: an A/B of an HTTPS
# download (wrk -t1 -c4, DURATION=5 s, ROUNDS=3 rounds alternating the binaries) of a cached
# 256 MiB file from a download listener with TLS 1.3 (a P-256 certificate
# made here), the daemon pinned to core 0 and wrk to core 1; prints MB/s
# (wrk's, MiB) and the daemon's CPU (utime + stime) per MiB. Quote medians;
# the machine drifts between rounds.
set -u
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
head -c 16M /dev/urandom > "$root/block"
for _ in $(seq 16); do cat "$root/block"; done > "$root/big.bin"
rm "$root/block"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj /CN=localhost \
  -keyout "$root/key.pem" -out "$root/cert.pem" 2> /dev/null
for round in $(seq "${ROUNDS:-3}"); do
  for bin in "$@"; do
    port=$((20000 + RANDOM % 20000))
    printf '[[listener]]\nname = "files"\nbind = "127.0.0.1:%s"\nhandler = "download"\nroot = "%s"\n[listener.tls]\ncert = "%s"\nkey = "%s"\nmin_version = "1.3"\n' \
      "$port" "$root" "$root/cert.pem" "$root/key.pem" > "$root/c.toml"
    RUST_LOG=warn taskset -c 0 "$bin" -c "$root/c.toml" > /dev/null 2>&1 &
    pid=$!
    for _ in $(seq 50); do (exec 3<> "/dev/tcp/127.0.0.1/$port") 2> /dev/null && break; sleep 0.1; done
    t0=$(awk '{print $14+$15}' "/proc/$pid/stat")
    out=$(taskset -c 1 timeout 60 wrk -t1 -c4 -d"${DURATION:-5}s" --timeout 30s "https://127.0.0.1:$port/big.bin" 2>&1)
    t1=$(awk '{print $14+$15}' "/proc/$pid/stat")
    kill "$pid"; wait "$pid" 2> /dev/null
    mib=$(echo "$out" | awk '/Transfer\/sec/ { v = $2; sub(/[A-Z]+$/, "", v); if ($2 ~ /GB$/) v *= 1024; print v }')
    echo "$round $(basename "$bin") mib_per_sec=$mib cpu_us_per_mib=$(python3 -c "print(round(($t1-$t0)*1e4/($mib*${DURATION:-5})) if $mib else 'n/a')")"
  done
done
