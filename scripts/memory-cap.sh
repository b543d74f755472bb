#!/usr/bin/env bash
# Measures the daemon's peak RSS while 1,000,000 gateway writes with never-matching correlation
# IDs are tailed, with and without `pipeline.max_pending_joins`; then the same writes each
# naming a distinct user (every one teaches the join an (app, id) <-> userName pair), with and
# without `pipeline.max_known_names`. Not a test: a measurement for the README.
# Usage: scripts/memory-cap.sh [BINARY]   (default target/release/scimwatch)
set -euo pipefail
bin=$(realpath "${1:-target/release/scimwatch}")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
python3 - <<'PY'
import datetime
# Three hours ago up to ten minutes ago, so a day-long join window keeps every write pending
# (the daemon's clock follows the wall clock once it has caught up: old timestamps would
# settle everything at once, and the peak would measure that burst instead).
start = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0) - datetime.timedelta(hours=3)
with open("gateway.log", "w") as f:
    for i in range(1_000_000):
        t = start + datetime.timedelta(microseconds=i * 10_000)
        f.write(f'{{"ts":"{t.strftime("%Y-%m-%dT%H:%M:%S.%f")}Z","cid":"never-{i:07d}","method":"PATCH","path":"/scim/v2/Users/u-{i}","status":200,"app":"wiki","user":"user{i}@corp.example"}}\n')
open("idp.jsonl", "w").write(f'{{"ts":"{start.strftime("%Y-%m-%dT%H:%M:%SZ")}","cid":"only","action":"update"}}\n')
PY
# The baseline: the same daemon with nothing pending (an empty gateway log).
: > empty.log
base=0
pending=0
for case in baseline 1000000 100000 names names-100000; do
  rm -rf data
  cap=1000000; names=1000000; log=gateway.log; user_field=""
  case "$case" in
    baseline) log=empty.log ;;
    names) user_field='user_name = "/user"' ;;
    names-100000) user_field='user_name = "/user"'; names=100000 ;;
    *) cap=$case ;;
  esac
  cat > cfg.toml <<TOML
[storage]
data_dir = "data"
[pipeline]
max_pending_joins = $cap
max_known_names = $names
[[source]]
name = "idp"
role = "idp"
format = "json"
paths = ["idp.jsonl"]
[source.fields]
time = "/ts"
correlation_id = "/cid"
action = "/action"
[[source]]
name = "gw"
role = "gateway"
format = "json"
paths = ["$log"]
[source.fields]
time = "/ts"
correlation_id = "/cid"
method = "/method"
path = "/path"
status = "/status"
$user_field
[slo]
# A day-long window: nothing expires on its own, so only the cap bounds the pending state.
join_window_secs = 86400
TOML
  "$bin" run --config cfg.toml 2> run.log &
  pid=$!
  size=$(stat -c %s "$log")
  # Wait until the checkpoint says the whole gateway log was processed.
  while kill -0 "$pid" 2>/dev/null; do
    sleep 2
    done_bytes=$(python3 -c 'import json,sys
try:
    c = json.load(open("data/state/checkpoint.json"))
    print(max([f["offset"] for f in c["files"] if f["path"].endswith(".log")] or [0]))
except Exception:
    print(0)')
    [ "$done_bytes" -ge "$size" ] && break
  done
  hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
  kill -TERM "$pid"; wait "$pid" || true
  evicted=$(grep -c "Memory cap reached" run.log || true)
  if [ "$case" = baseline ]; then
    base=$hwm
    echo "baseline: peak RSS $((hwm / 1024)) MiB with nothing pending"
  elif [ "$case" = names ]; then
    echo "the same writes, each naming a user (1,000,000 learned pairs): peak RSS $((hwm / 1024)) MiB: $(( (hwm - pending) * 1024 / 1000000 )) bytes per learned pair above the pending writes alone"
  elif [ "$case" = names-100000 ]; then
    echo "max_known_names=$names: peak RSS $((hwm / 1024)) MiB for the same 1,000,000 pairs"
  elif [ "$cap" -ge 1000000 ]; then
    pending=$hwm
    echo "max_pending_joins=$cap: peak RSS $((hwm / 1024)) MiB for 1,000,000 pending writes: $(( (hwm - base) * 1024 / 1000000 )) bytes per pending entry above the baseline"
  else
    echo "max_pending_joins=$cap: peak RSS $((hwm / 1024)) MiB for 1,000,000 never-matching writes (cap reached in $evicted passes)"
  fi
done
