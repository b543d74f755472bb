#!/usr/bin/env bash
# Measures the daemon's peak RSS while 1,000,000 gateway writes with never-matching correlation
# IDs are tailed, with and without `pipeline.max_pending_joins`. Not a test: a measurement for
# the README. Usage: scripts/memory-cap.sh [BINARY]   (default target/release/scimwatch)
set -euo pipefail
bin=$(realpath "${1:-target/release/scimwatch}")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
python3 - <<'PY'
with open("gateway.log", "w") as f:
    for i in range(1_000_000):
        s = i // 100
        f.write(f'{{"ts":"2026-07-01T{8 + s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}.{i % 100:02d}0000Z","cid":"never-{i:07d}","method":"PATCH","path":"/scim/v2/Users/u-{i}","status":200,"app":"wiki"}}\n')
open("idp.jsonl", "w").write('{"ts":"2026-07-01T08:00:00Z","cid":"only","action":"update"}\n')
PY
for cap in 1000000 100000; do
  rm -rf data
  cat > cfg.toml <<TOML
[storage]
data_dir = "data"
[pipeline]
max_pending_joins = $cap
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
paths = ["gateway.log"]
[source.fields]
time = "/ts"
correlation_id = "/cid"
method = "/method"
path = "/path"
status = "/status"
[slo]
# A day-long window: nothing expires on its own, so only the cap bounds the pending state.
join_window_secs = 86400
TOML
  "$bin" run --config cfg.toml 2> run.log &
  pid=$!
  size=$(stat -c %s gateway.log)
  # Wait until the checkpoint says the whole gateway log was processed.
  while kill -0 "$pid" 2>/dev/null; do
    sleep 2
    done_bytes=$(python3 -c 'import json,sys
try:
    c = json.load(open("data/state/checkpoint.json"))
    print(max([f["offset"] for f in c["files"] if f["path"].endswith("gateway.log")] or [0]))
except Exception:
    print(0)')
    [ "$done_bytes" -ge "$size" ] && break
  done
  hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
  kill -TERM "$pid"; wait "$pid" || true
  evicted=$(grep -c "Memory cap reached" run.log || true)
  echo "max_pending_joins=$cap: peak RSS $((hwm / 1024)) MiB for 1,000,000 never-matching writes (cap reached in $evicted passes)"
done
