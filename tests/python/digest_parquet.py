"""What a replay's Parquet store holds, as DuckDB reads it, for tests/audit.rs.

Usage: digest_parquet.py DATA_DIR   prints JSON: per table, the row count, the number of files
per date partition and the rows in each (largest first), and a hash over every row and column
but `ingested_at` (the wall clock of the run), so two stores with the same contents print the
same.
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
        out[table] = {"rows": 0}
        continue
    source = f"read_parquet('{data}/{table}/*/*.parquet', hive_partitioning = true, filename = true)"
    columns = [row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()]
    kept = [c for c in columns if c not in ("ingested_at", "filename")]
    rows, digest = con.execute(
        f"SELECT count(*), sum(hash(({', '.join(kept)}))) FROM {source}"
    ).fetchall()[0]
    files = dict(con.execute(
        f"SELECT date::VARCHAR, count(DISTINCT filename) FROM {source} GROUP BY ALL ORDER BY 1"
    ).fetchall())
    file_rows = {}
    for date, count in con.execute(
        f"SELECT date::VARCHAR, count(*) FROM {source} GROUP BY date, filename ORDER BY 1, 2 DESC"
    ).fetchall():
        file_rows.setdefault(date, []).append(count)
    out[table] = {"rows": rows, "hash": str(digest), "files_per_date": files, "file_rows": file_rows}
print(json.dumps(out))
