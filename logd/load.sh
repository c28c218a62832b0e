#!/usr/bin/env bash
# Load on logd with wrk (installed here if missing): POSTs of 100-byte records to a topic of one
# partition, at 1, 64 and 256 connections, each answered once durable; beside each, the WAL's
# own durable appends in one process (wal-load) at the same concurrency, measured in the same
# run. With --cluster, also a 3-node cluster on loopback (wrk against its leader), in the same
# run. Usage: logd/load.sh [seconds per figure, default 5] [--cluster]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-5}"
cluster="${2:-}"
if ! command -v wrk >/dev/null 2>&1; then
    apt-get update >/dev/null && apt-get install -y wrk >/dev/null
fi
cargo build --release -q -p logd
work="$(mktemp -d "${TMPDIR:-/tmp}/logd-load.XXXXXX")"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

# start PORT DATA [ARGS...]: a logd in the background, waited for until it answers.
start() {
    local port="$1" data="$2"
    shift 2
    target/release/logd --listen "127.0.0.1:$port" --data "$data" "$@" 2>"$data.err" &
    pids+=($!)
    for _ in $(seq 100); do
        curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && return
        sleep 0.1
    done
    echo "logd on port $port did not start: $(tail -3 "$data.err")" >&2
    exit 1
}

port=7411
start "$port" "$work/single"
curl -sf -X PUT "http://127.0.0.1:$port/topics/load" -d '{"partitions": 1}' >/dev/null
leader_url=""
if [ "$cluster" = "--cluster" ]; then
    peers="1=127.0.0.1:7521,2=127.0.0.1:7522,3=127.0.0.1:7523"
    for id in 1 2 3; do start "751$id" "$work/node$id" --node-id "$id" --peers "$peers"; done
    for _ in $(seq 100); do
        leader="$(curl -sf http://127.0.0.1:7511/cluster | python3 -c 'import json,sys; print(json.load(sys.stdin)["leader"] or "")')"
        [ -n "$leader" ] && break
        sleep 0.1
    done
    leader_url="http://127.0.0.1:751$leader"
    curl -sf -X PUT "$leader_url/topics/load" -d '{"partitions": 1}' >/dev/null
fi
cat >"$work/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = string.rep("x", 100)
LUA
# wrk prints latencies as 123.45us, 1.23ms or 1.02s; this turns them into µs.
to_us() { awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /ms$/) n *= 1000; else if (v ~ /[0-9]s$/) n *= 1000000; printf "%.0f", n }'; }
# load URL CONNECTIONS: "requests/s p50 p99" of wrk's POSTs; fails on any non-2xx answer.
load() {
    local threads=$(( $2 < 2 ? 1 : 2 )) out non2xx
    out="$(wrk -t"$threads" -c"$2" -d"${secs}s" --latency -s "$work/post.lua" "$1/topics/load/records")"
    non2xx="$(awk '/Non-2xx/ { print $NF }' <<<"$out")"
    if [ -n "$non2xx" ]; then echo "wrk saw $non2xx non-2xx answers at $2 connections on $1" >&2; exit 1; fi
    echo "$(awk '/^Requests\/sec/ { printf "%.0f", $2 }' <<<"$out")" \
        "$(to_us "$(awk '$1 == "50%" { print $2 }' <<<"$out")")" \
        "$(to_us "$(awk '$1 == "99%" { print $2 }' <<<"$out")")"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", a / b }'; }
cell() { printf '%7s/s p50 %6s p99 %6s µs' "$1" "$2" "$3"; }
header="$(printf '%-11s | %-34s | %-34s | %-10s' connections "logd over HTTP (wrk)" "WAL in-process (wal-load)" "logd / WAL")"
[ -n "$leader_url" ] && header+="$(printf ' | %-34s | %s' "3-node cluster (wrk)" "cluster / logd")"
echo "$header"
for c in 1 64 256; do
    res="$(load "http://127.0.0.1:$port" "$c")"
    read -r rps p50 p99 <<<"$res"
    res="$(target/release/wal-load --dir "$work/wal" --clients "$c" --seconds "$secs" --bytes 100)"
    read -r wrps wp50 wp99 <<<"$res"
    row="$(printf '%-11s | %s | %s | %-10s' "$c" "$(cell "$rps" "$p50" "$p99")" "$(cell "$wrps" "$wp50" "$wp99")" "$(ratio "$rps" "$wrps")")"
    if [ -n "$leader_url" ]; then
        res="$(load "$leader_url" "$c")"
        read -r crps cp50 cp99 <<<"$res"
        row+="$(printf ' | %s | %s' "$(cell "$crps" "$cp50" "$cp99")" "$(ratio "$crps" "$rps")")"
    fi
    echo "$row"
done
