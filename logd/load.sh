#!/usr/bin/env bash
# Load on logd with wrk (installed here if missing): POSTs of 100-byte records to a topic of one
# partition, at 1, 64 and 256 connections, each answered once durable; beside each, the WAL's
# own durable appends in one process (wal-load) at the same concurrency, measured in the same
# run. Usage: logd/load.sh [seconds per figure, default 5]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-5}"
if ! command -v wrk >/dev/null 2>&1; then
    apt-get update >/dev/null && apt-get install -y wrk >/dev/null
fi
cargo build --release -q -p logd
work="$(mktemp -d "${TMPDIR:-/tmp}/logd-load.XXXXXX")"
port=7411
target/release/logd --listen "127.0.0.1:$port" --data "$work/data" 2>"$work/logd.err" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break
    sleep 0.1
done
curl -sf -X PUT "http://127.0.0.1:$port/topics/load" -d '{"partitions": 1}' >/dev/null
cat >"$work/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = string.rep("x", 100)
LUA
# wrk prints latencies as 123.45us, 1.23ms or 1.02s; this turns them into µs.
to_us() { awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /ms$/) n *= 1000; else if (v ~ /[0-9]s$/) n *= 1000000; printf "%.0f", n }'; }
printf '%-11s | %-28s | %-28s | %s\n' connections "logd over HTTP (wrk)" "WAL in-process (wal-load)" "logd / WAL"
for c in 1 64 256; do
    threads=$(( c < 2 ? 1 : 2 ))
    out="$(wrk -t"$threads" -c"$c" -d"${secs}s" --latency -s "$work/post.lua" "http://127.0.0.1:$port/topics/load/records")"
    rps="$(awk '/^Requests\/sec/ { printf "%.0f", $2 }' <<<"$out")"
    p50="$(to_us "$(awk '$1 == "50%" { print $2 }' <<<"$out")")"
    p99="$(to_us "$(awk '$1 == "99%" { print $2 }' <<<"$out")")"
    non2xx="$(awk '/Non-2xx/ { print $NF }' <<<"$out")"
    if [ -n "$non2xx" ]; then echo "wrk saw $non2xx non-2xx answers at $c connections" >&2; exit 1; fi
    read -r wrps wp50 wp99 < <(target/release/wal-load --dir "$work/wal" --clients "$c" --seconds "$secs" --bytes 100)
    printf '%-11s | %7s/s p50 %6s p99 %6s µs | %7s/s p50 %6s p99 %6s µs | %.2fx\n' \
        "$c" "$rps" "$p50" "$p99" "$wrps" "$wp50" "$wp99" "$(awk -v a="$rps" -v b="$wrps" 'BEGIN { print a / b }')"
done
