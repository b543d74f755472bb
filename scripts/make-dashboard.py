#!/usr/bin/env python3
"""Writes dashboards/scimwatch.json (Grafana, schemaVersion 39, a `datasource` variable, no
__inputs). Edit the panels here and re-run; tests/prometheus_e2e.rs queries every expr."""
import json

DS = {"type": "prometheus", "uid": "${datasource}"}
panels = []
pid = 0
y = 0


def panel(kind, title, targets, w=8, h=8, x=0, unit=None, thresholds=None, extra=None):
    global pid
    pid += 1
    p = {"id": pid, "type": kind, "title": title, "datasource": DS, "gridPos": {"h": h, "w": w, "x": x, "y": y},
         "targets": [{"refId": chr(65 + i), "expr": e, "legendFormat": l} for i, (e, l) in enumerate(targets)],
         "fieldConfig": {"defaults": {}, "overrides": []}, "options": {}}
    if unit:
        p["fieldConfig"]["defaults"]["unit"] = unit
    if thresholds:
        p["fieldConfig"]["defaults"]["thresholds"] = {"mode": "absolute", "steps": thresholds}
    if kind == "heatmap":
        # Histogram buckets are cumulative: Grafana takes each bucket's own count, sorted by
        # bound, only from a target formatted as a heatmap (otherwise every row shows them all).
        for t in p["targets"]:
            t["format"] = "heatmap"
    if extra:
        p.update(extra)
    panels.append(p)


def row(title, repeat=None):
    global pid, y
    pid += 1
    r = {"id": pid, "type": "row", "title": title, "collapsed": False, "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []}
    if repeat:
        r["repeat"] = repeat
    panels.append(r)
    y += 1


SLO = [{"color": "red", "value": None}, {"color": "yellow", "value": 0.95}, {"color": "green", "value": 0.99}]
JUDGED = 'outcome=~"succeeded|failed|unconfirmed"'

row("Overview")
panel("stat", "Success over the last hour", [('scimwatch_stage_success_ratio{window="1h"}', "{{stage}}")], w=6, unit="percentunit", thresholds=SLO)
panel("timeseries", "Success ratio (1h) against the SLO", [('scimwatch_stage_success_ratio{window="1h"}', "{{stage}}"), ("vector(0.99)", "healthy 99%"), ("vector(0.95)", "incident 95%")], w=8, x=6, unit="percentunit")
panel("stat", "Error budget left (30 days)", [(f'1 - (1 - sum by (stage) (increase(scimwatch_operations_total{{outcome="succeeded"}}[30d])) / (sum by (stage) (increase(scimwatch_operations_total{{{JUDGED}}}[30d])) > 0)) / 0.01', "{{stage}}")], w=4, x=14, unit="percentunit", thresholds=[{"color": "red", "value": None}, {"color": "green", "value": 0}])
panel("stat", "Alerts firing (daemon)", [("sum(scimwatch_alerts_firing)", "firing")], w=3, x=18, thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 1}])
panel("stat", "Overdue high-risk leavers", [('scimwatch_leavers_overdue{risk="high"}', "overdue")], w=3, x=21, thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 1}])
y += 8

row("Stage: $stage", repeat="stage")
panel("timeseries", "$stage success ratio by window", [('scimwatch_stage_success_ratio{stage="$stage"}', "{{window}}")], w=6, unit="percentunit")
panel("timeseries", "$stage operations per minute by outcome", [('60 * sum by (outcome) (rate(scimwatch_operations_total{stage="$stage"}[$__rate_interval]))', "{{outcome}}")], w=6, x=6, unit="opm")
panel("timeseries", "$stage burn rate (99% SLO)", [('stage:scimwatch_operations_error:ratio_increase1h{stage="$stage"} / 0.01', "1h"), ('stage:scimwatch_operations_error:ratio_increase5m{stage="$stage"} / 0.01', "5m"), ('stage:scimwatch_operations_error:ratio_increase6h{stage="$stage"} / 0.01', "6h"), ("vector(14.4)", "fast 14.4x"), ("vector(6)", "slow 6x")], w=6, x=12)
panel("bargauge", "$stage failures by cause (1h)", [(f'sum by (cause) (increase(scimwatch_operations_total{{stage="$stage", outcome=~"failed|unconfirmed"}}[1h]))', "{{cause}}")], w=6, x=18)
y += 8

row("Leavers")
panel("heatmap", "Disable latency", [("sum by (le) (increase(scimwatch_leaver_disable_latency_seconds_bucket[$__rate_interval]))", "{{le}}")], w=8, unit="s", extra={"options": {"calculate": False, "yAxis": {"unit": "s"}}})
panel("stat", "High-risk leavers disabled within 15 minutes (1 day; those still overdue count against)", [('sum(increase(scimwatch_leaver_disable_latency_seconds_bucket{risk="high",le=~"900(\\\\.0)?"}[1d])) / (sum(increase(scimwatch_leaver_disable_latency_seconds_count{risk="high"}[1d])) + sum(scimwatch_leavers_overdue{risk="high"}))', "within 15 min")], w=5, x=8, unit="percentunit", thresholds=[{"color": "red", "value": None}, {"color": "green", "value": 1}])
panel("timeseries", "Open and overdue leavers", [("scimwatch_leavers_open", "open {{risk}}"), ("scimwatch_leavers_overdue", "overdue {{risk}}")], w=6, x=13)
panel("stat", "Oldest open leaver", [("scimwatch_leaver_oldest_open_age_seconds", "{{risk}}")], w=5, x=19, unit="s")
y += 8

row("Pipeline health")
panel("timeseries", "Lines read per second", [("sum by (source) (rate(scimwatch_lines_total[$__rate_interval]))", "{{source}}")], w=5, unit="cps")
panel("timeseries", "Lines set aside (1h)", [("sum by (source, reason) (increase(scimwatch_parse_errors_total[1h]))", "{{source}} {{reason}}")], w=5, x=5)
# Sources set never to be stale (a trigger feed, by default) would climb for hours and squash the rest.
panel("timeseries", "Source staleness", [("time() - scimwatch_source_last_event_timestamp_seconds unless on(source, job, instance) scimwatch_source_stale_after_seconds == 0", "{{source}}")], w=5, x=10, unit="s")
panel("timeseries", "Join backlog", [("scimwatch_join_pending", "pending")], w=3, x=15)
panel("timeseries", "Notifications (1h)", [("sum by (channel, result) (increase(scimwatch_notifications_total[1h]))", "{{channel}} {{result}}")], w=3, x=18)
panel("timeseries", "Parquet rows (1h)", [("sum by (table) (increase(scimwatch_parquet_rows_total[1h]))", "{{table}}")], w=3, x=21)

dashboard = {
    "uid": "scimwatch-overview",
    "title": "scimwatch: SCIM provisioning",
    "tags": ["scimwatch", "scim", "iam", "slo"],
    "timezone": "utc",
    "schemaVersion": 39,
    "version": 1,
    "editable": True,
    "refresh": "30s",
    "time": {"from": "now-6h", "to": "now"},
    "annotations": {"list": []},
    "templating": {"list": [
        {"type": "datasource", "name": "datasource", "label": "Prometheus", "query": "prometheus"},
        {"type": "custom", "name": "stage", "label": "Stage", "query": "joiner,mover,leaver", "multi": True, "includeAll": True,
         "current": {"text": "All", "value": "$__all"},
         "options": [{"text": v, "value": v, "selected": False} for v in ["joiner", "mover", "leaver"]]},
    ]},
    "panels": panels,
}
with open("dashboards/scimwatch.json", "w") as f:
    json.dump(dashboard, f, indent=2)
    f.write("\n")
