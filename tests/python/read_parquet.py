"""An independent reader of scimwatch's Parquet tables (DuckDB), for tests/audit.rs.

Usage: read_parquet.py DATA_DIR   prints a JSON summary of both tables: row counts, column
types as DuckDB sees them, every string value (for the secrets check) and a few rows.
"""
import glob
import json
import sys

import duckdb

data = sys.argv[1]
con = duckdb.connect()
out = {}
for table in ("operations", "leavers", "post_disable_activity"):
    if not glob.glob(f"{data}/{table}/*/*.parquet"):
        out[table] = {"rows": 0, "types": {}, "strings": []}
        continue
    source = f"read_parquet('{data}/{table}/*/*.parquet', hive_partitioning = true)"
    desc = con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()
    types = {row[0]: str(row[1]) for row in desc}
    rows = con.execute(f"SELECT count(*) FROM {source}").fetchall()[0][0]
    strings = []
    for name, kind in types.items():
        if kind == "VARCHAR":
            strings += [v for (v,) in con.execute(f"SELECT DISTINCT {name} FROM {source} WHERE {name} IS NOT NULL").fetchall()]
        if kind == "VARCHAR[]":
            strings += [v for (v,) in con.execute(f"SELECT DISTINCT unnest({name}) FROM {source}").fetchall()]
    out[table] = {"rows": rows, "types": types, "strings": sorted(set(map(str, strings)))}

out["operation_samples"] = {
    cid: {"stage": stage, "outcome": outcome, "cause": cause, "http_status": status, "attempts": attempts,
          "idp_time": str(idp_time), "high_risk": high_risk, "join_method": method}
    for cid, stage, outcome, cause, status, attempts, idp_time, high_risk, method in con.execute(
        f"SELECT correlation_id, stage, outcome, cause, http_status, attempts, idp_time, high_risk, join_method "
        f"FROM read_parquet('{data}/operations/*/*.parquet') WHERE correlation_id IN ('l-bob-2', 'm-429', 'j-401', 'm-unconfirmed')"
    ).fetchall()
}
out["stage_outcomes"] = {
    f"{stage}/{outcome}": n
    for stage, outcome, n in con.execute(
        f"SELECT stage, outcome, count(*) FROM read_parquet('{data}/operations/*/*.parquet') GROUP BY ALL"
    ).fetchall()
}
out["leaver_rows"] = [
    {"user": user, "latency_seconds": latency, "met_slo": met, "state": state, "correlation_ids": ids,
     "initiated_at": str(initiated), "clock_start": clock, "initiated_by": by, "disabled_by": closed_by,
     "as_of": None if as_of is None else str(as_of)}
    for user, latency, met, state, ids, initiated, clock, by, closed_by, as_of in con.execute(
        f"SELECT user_login, latency_seconds, met_slo, state, correlation_ids, initiated_at, "
        f"clock_start, initiated_by, disabled_by, as_of "
        f"FROM read_parquet('{data}/leavers/*/*.parquet') ORDER BY initiated_at, user_login"
    ).fetchall()
]
print(json.dumps(out, default=str))
