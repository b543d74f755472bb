"""Live throughput of the daemon: how many appended lines per second it sustains, and how long
a line takes from being written to counting in /metrics.

usage: bench_live.py SCIMWATCH_BIN IDP_JSONL GATEWAY_LOG WORKDIR

BENCH_LIVE_WEBHOOK=1 pages a webhook receiver on loopback (this script answers 200), so that with
BENCH_LIVE_HIGH_RISK=1 the run includes a page storm: every overdue leaver paged, each delivery a
synced outbox file.

BENCH_LIVE_HIGH_RISK=1 makes every leaver high-risk (a 900 s deadline): the leavers the data set
leaves failing go overdue while their retries may still be joining, the daemon's worst case for
the overdue hold (which looks through the pending leaver operations at every view).

BENCH_LIVE_OUTAGE=1 takes three apps (slack, gitlab, box: ~15% of the operations) down for the
middle half of the logs: their gateway answers 503 and the IdP logs each operation failed, so
the run includes an incident (burn-rate alerts firing, the failure evidence full, every leaver of
those apps failing; with BENCH_LIVE_HIGH_RISK=1 those go overdue too). The changed logs are
written before the clock starts.

1. Throughput: both logs are appended to the tailed files in 1 MiB chunks as fast as the disk
   takes them while the daemon runs; the rate is lines / (time until scimwatch_lines_total
   shows every line, from the first append).
2. Delay: lines are appended in batches of 100 at ~2,000 lines/s while /metrics is scraped
   every 5 ms; each batch's delay is the first scrape that counts it minus its write time.
"""

import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request

binary, idp_src, gw_src, work = sys.argv[1:5]
shutil.rmtree(work, ignore_errors=True)
os.makedirs(os.path.join(work, "logs"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


OUTAGE_APPS = (b'"app":"slack"', b'"app":"gitlab"', b'"app":"box"')


def with_outage(src):
    """A copy of a log in `work` whose outage apps fail in its middle half."""
    with open(src, "rb") as f:
        lines = f.readlines()
    down, up = len(lines) // 4, len(lines) * 3 // 4
    for n in range(down, up):
        if any(app in lines[n] for app in OUTAGE_APPS):
            line = re.sub(rb'"status":20[01],', b'"status":503,', lines[n])
            lines[n] = line.replace(
                b'"result":"success"', b'"result":"failure","error":"target answered 503"'
            )
    dst = os.path.join(work, "outage-" + os.path.basename(src))
    with open(dst, "wb") as out:
        out.writelines(lines)
    return dst


if os.environ.get("BENCH_LIVE_OUTAGE") == "1":
    idp_src, gw_src = with_outage(idp_src), with_outage(gw_src)

port = free_port()
hook_port = free_port()
pages = []


class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        pages.append(1)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


if os.environ.get("BENCH_LIVE_WEBHOOK") == "1":
    hook = http.server.ThreadingHTTPServer(("127.0.0.1", hook_port), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
config = os.path.join(work, "scimwatch.toml")
with open(config, "w") as f:
    f.write(
        f"""
[server]
listen = "127.0.0.1:{port}"
[storage]
data_dir = "data"
[pipeline]
poll_interval_ms = 50
[[source]]
name = "orchestrator"
role = "idp"
format = "json"
paths = ["logs/idp.jsonl"]
[source.fields]
time = "/ts"
correlation_id = "/cid"
action = "/action"
app = "/app"
user_id = "/user_id"
user_login = "/user"
status = "/result"
error = "/error"
[[source]]
name = "nginx"
role = "gateway"
format = "nginx_json"
paths = ["logs/gateway.log"]
[slo]
allowed_lateness_secs = 3600
"""
    )
    if os.environ.get("BENCH_LIVE_HIGH_RISK") == "1":
        f.write('[[slo.high_risk]]\napps = ["*"]\ndisable_within_secs = 900\n')
    if os.environ.get("BENCH_LIVE_WEBHOOK") == "1":
        f.write(
            f"""
[alerting]
hold_secs = 0
group_wait_secs = 0
[[receiver]]
name = "hook"
[receiver.webhook]
url = "http://127.0.0.1:{hook_port}/hook"
format = "slack"
[[route]]
receiver = "hook"
"""
        )

LINES = re.compile(rb'^scimwatch_lines_total\{source="[^"]*"\} (\d+)', re.M)
NOTIFIED = re.compile(rb'^scimwatch_notifications_total\{[^}]*result="sent"[^}]*\} (\d+)', re.M)


def counted(pattern):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            return sum(int(n) for n in pattern.findall(r.read()))
    except OSError:
        return -1


def lines_counted():
    return counted(LINES)


def cpu_seconds(pid):
    """User + system CPU time of a process so far (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


daemon = subprocess.Popen(
    [binary, "run", "--config", config],
    stderr=open(os.path.join(work, "daemon.log"), "w"),
    env={**os.environ, "SCIMWATCH_LOG": "warn"},
)
try:
    while lines_counted() < 0:
        time.sleep(0.05)

    # 1. Sustained throughput.
    idp_out = open(os.path.join(work, "logs", "idp.jsonl"), "ab")
    gw_out = open(os.path.join(work, "logs", "gateway.log"), "ab")
    total = 0
    cpu_before = cpu_seconds(daemon.pid)
    started = time.monotonic()
    idp_in, gw_in = open(idp_src, "rb"), open(gw_src, "rb")
    while True:
        a, b = idp_in.read(1 << 20), gw_in.read(1 << 20)
        if not a and not b:
            break
        # Whole lines only, as a logger writes them.
        for chunk, src, out in [(a, idp_in, idp_out), (b, gw_in, gw_out)]:
            if chunk and not chunk.endswith(b"\n"):
                chunk += src.readline()
            out.write(chunk)
            out.flush()
            total += chunk.count(b"\n")
    written = time.monotonic() - started
    while lines_counted() < total:
        time.sleep(0.01)
    elapsed = time.monotonic() - started
    cpu = cpu_seconds(daemon.pid) - cpu_before
    size = os.path.getsize(idp_src) + os.path.getsize(gw_src)

    # 2. Line-to-metric delay at a steady rate.
    base = lines_counted()
    sample = open(gw_src, "rb").readlines()[:20000]
    batches = []
    done = threading.Event()
    seen = []

    def scrape():
        while not done.is_set():
            seen.append((time.monotonic(), lines_counted()))
            time.sleep(0.005)

    scraper = threading.Thread(target=scrape)
    scraper.start()
    count = base
    for i in range(0, len(sample), 100):
        batch = sample[i : i + 100]
        gw_out.write(b"".join(batch))
        gw_out.flush()
        count += len(batch)
        batches.append((time.monotonic(), count))
        time.sleep(0.05)
    deadline = time.monotonic() + 10
    while lines_counted() < count and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)
    done.set()
    scraper.join()
    delays = []
    j = 0
    for written_at, needed in batches:
        while j < len(seen) and (seen[j][0] < written_at or seen[j][1] < needed):
            j += 1
        if j < len(seen):
            delays.append(seen[j][0] - written_at)
    delays.sort()

    def q(p):
        return delays[min(len(delays) - 1, int(p * len(delays)))] if delays else None

    rss_kib = 0
    with open(f"/proc/{daemon.pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                rss_kib = int(line.split()[1])
    print(
        json.dumps(
            {
                "lines": total,
                "bytes": size,
                "append_seconds": round(written, 3),
                "seconds": round(elapsed, 3),
                "lines_per_sec": round(total / elapsed),
                "mb_per_sec": round(size / 1e6 / elapsed, 1),
                # CPU the daemon spent on those lines (every thread): steadier than wall time
                # on a shared VM.
                "cpu_seconds": round(cpu, 2),
                "lines_per_cpu_sec": round(total / cpu) if cpu else None,
                "delay_batches": len(delays),
                "delay_p50_ms": round(q(0.5) * 1000, 1) if delays else None,
                "delay_p99_ms": round(q(0.99) * 1000, 1) if delays else None,
                "peak_rss_mib": round(rss_kib / 1024),
                "webhook_posts": len(pages),
                # Notifications sent so far (each a delivery through the outbox).
                "notifications_sent": counted(NOTIFIED),
            }
        )
    )
finally:
    daemon.terminate()
    daemon.wait()
