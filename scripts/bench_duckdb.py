"""What an engineer would write instead of scimwatch: DuckDB SQL over the same NDJSON.

Reads the IdP log and the gateway log, joins them on the correlation ID within the join window
taking the last attempt, classifies each operation (succeeded / failed / unconfirmed / skipped /
unattributed, with its cause), computes per-stage success rates and leaver disable-latency
quantiles, and writes the joined rows to zstd Parquet. Prints one JSON line of results.

usage: bench_duckdb.py IDP_JSONL GATEWAY_LOG OUT_PARQUET [THREADS]
"""

import json
import sys
import time

import duckdb

idp, gateway, out = sys.argv[1], sys.argv[2], sys.argv[3]
threads = int(sys.argv[4]) if len(sys.argv) > 4 else 2

started = time.monotonic()
con = duckdb.connect()
con.execute(f"SET threads = {threads}")
con.execute(
    f"""
CREATE TABLE idp AS SELECT cid, CAST(ts AS TIMESTAMP) AS t, action, app, "user", user_id, result
FROM read_json('{idp}', format = 'newline_delimited',
  columns = {{ts: 'VARCHAR', cid: 'VARCHAR', action: 'VARCHAR', app: 'VARCHAR',
             "user": 'VARCHAR', user_id: 'VARCHAR', result: 'VARCHAR', error: 'VARCHAR'}})
"""
)
con.execute(
    f"""
CREATE TABLE gw AS SELECT xrid AS cid, CAST("time" AS TIMESTAMP) AS t, method, uri,
  status, app
FROM read_json('{gateway}', format = 'newline_delimited',
  columns = {{"time": 'VARCHAR', xrid: 'VARCHAR', method: 'VARCHAR', uri: 'VARCHAR',
             status: 'INTEGER', app: 'VARCHAR'}})
WHERE method <> 'GET' AND uri LIKE '/scim/%'
"""
)
con.execute(
    """
CREATE TABLE ops AS
WITH i AS (
  SELECT cid, min(t) AS t, arg_max(action, t) AS action, any_value(app) AS app,
         any_value("user") AS "user", any_value(user_id) AS user_id, arg_max(result, t) AS result
  FROM idp WHERE cid IS NOT NULL GROUP BY cid
), g AS (
  SELECT cid, count(*) AS attempts, arg_max(status, t) AS last_status, min(t) AS first_t,
         min(t) FILTER (WHERE status BETWEEN 200 AND 299) AS first_ok,
         arg_max(method, t) AS method, arg_max(uri, t) AS uri, any_value(app) AS app
  FROM gw WHERE cid IS NOT NULL GROUP BY cid
), j AS (
  SELECT coalesce(i.cid, g.cid) AS correlation_id, i.t AS idp_time, g.first_t, g.first_ok,
         coalesce(i.app, g.app) AS app, i."user" AS user_login, i.action, i.result,
         g.attempts, g.last_status, g.method, g.uri, i.cid IS NOT NULL AS has_idp,
         g.cid IS NOT NULL AS has_gw
  FROM i FULL OUTER JOIN g
    ON i.cid = g.cid AND abs(epoch(g.first_t) - epoch(i.t)) <= 600
)
SELECT *,
  CASE
    WHEN action IN ('create', 'provision', 'rehire', 'reactivate', 'activate') THEN 'joiner'
    WHEN action IN ('disable', 'deactivate', 'suspend', 'delete', 'deprovision') THEN 'leaver'
    WHEN action IS NOT NULL THEN 'mover'
    WHEN method = 'POST' AND uri LIKE '%/Users' THEN 'joiner'
    WHEN method = 'DELETE' THEN 'leaver'
    ELSE 'mover'
  END AS stage,
  CASE
    WHEN NOT has_gw AND result = 'skipped' THEN 'skipped'
    WHEN NOT has_idp THEN 'unattributed'
    WHEN NOT has_gw AND result = 'failure' THEN 'failed'
    WHEN NOT has_gw THEN 'unconfirmed'
    WHEN last_status BETWEEN 200 AND 299 THEN 'succeeded'
    ELSE 'failed'
  END AS outcome,
  CASE
    WHEN NOT has_gw AND result = 'failure' THEN 'idp_error'
    WHEN NOT has_gw AND has_idp AND result <> 'skipped' THEN 'unconfirmed'
    WHEN last_status BETWEEN 200 AND 299 OR NOT has_gw OR NOT has_idp THEN NULL
    WHEN last_status = 400 THEN 'bad_request'
    WHEN last_status = 401 THEN 'unauthorized'
    WHEN last_status = 403 THEN 'forbidden'
    WHEN last_status = 404 THEN 'not_found'
    WHEN last_status = 409 THEN 'conflict'
    WHEN last_status = 412 THEN 'precondition_failed'
    WHEN last_status = 413 THEN 'payload_too_large'
    WHEN last_status = 429 THEN 'rate_limited'
    WHEN last_status = 504 THEN 'timeout'
    WHEN last_status >= 500 THEN 'server_error'
    WHEN last_status >= 400 THEN 'other_4xx'
    ELSE 'unexpected_status'
  END AS cause
FROM j
"""
)
stages = con.execute(
    """
SELECT stage, count(*) FILTER (WHERE outcome IN ('succeeded', 'failed', 'unconfirmed')) AS operations,
       count(*) FILTER (WHERE outcome = 'succeeded') AS succeeded,
       count(*) FILTER (WHERE outcome = 'succeeded') /
         nullif(count(*) FILTER (WHERE outcome IN ('succeeded', 'failed', 'unconfirmed')), 0) AS rate
FROM ops GROUP BY stage ORDER BY stage
"""
).fetchall()
latency = con.execute(
    """
WITH episodes AS (
  SELECT app, user_login, min(idp_time) AS initiated, min(first_ok) AS disabled
  FROM ops WHERE stage = 'leaver' AND user_login IS NOT NULL GROUP BY app, user_login
)
SELECT count(*), count(disabled),
       quantile_cont(epoch(disabled) - epoch(initiated), [0.5, 0.95, 0.99])
FROM episodes
"""
).fetchall()[0]
con.execute(f"COPY ops TO '{out}' (FORMAT parquet, COMPRESSION zstd)")
rows = con.execute("SELECT count(*) FROM ops").fetchall()[0][0]
print(
    json.dumps(
        {
            "seconds": round(time.monotonic() - started, 3),
            "threads": threads,
            "rows": rows,
            "stages": {s: {"operations": o, "succeeded": k, "rate": r} for s, o, k, r in stages},
            "leavers": {"episodes": latency[0], "disabled": latency[1], "latency_p50_p95_p99": latency[2]},
        }
    )
)
