"""Some columns of one Parquet file as DuckDB reads them, for tests/audit.rs.

Usage: dump_columns.py FILE COLUMN...   prints JSON: "rows", a list of rows in the file's order,
each a list of the columns' values (null for SQL NULL); "chunks", for each of the columns in
each row group, [row group, column, min, max, null count] from the file's statistics; and
"encodings", each chunk's ("GROUP/COLUMN") encodings as DuckDB lists them.
"""
import json
import sys

import duckdb

path, columns = sys.argv[1], sys.argv[2:]
con = duckdb.connect()
rows = con.execute(
    f"SELECT {', '.join(columns)} FROM read_parquet('{path}', file_row_number = true) "
    "ORDER BY file_row_number"
).fetchall()
metadata = con.execute(
    "SELECT row_group_id, path_in_schema, stats_min_value, stats_max_value, stats_null_count, "
    f"encodings FROM parquet_metadata('{path}') "
    f"WHERE path_in_schema IN ({', '.join('?' * len(columns))}) ORDER BY row_group_id, column_id",
    columns,
).fetchall()
print(json.dumps({
    "rows": [list(r) for r in rows],
    "chunks": [list(c[:5]) for c in metadata],
    "encodings": {f"{c[0]}/{c[1]}": c[5] for c in metadata},
}))
