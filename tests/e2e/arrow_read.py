"""Reads a gauntlet query answer in Arrow format with pyarrow and prints a JSON summary.

Usage: python3 arrow_read.py URL
"""
import json
import sys
import urllib.request

import pyarrow as pa

with urllib.request.urlopen(sys.argv[1]) as response:
    content_type = response.headers["Content-Type"]
    table = pa.ipc.open_stream(response.read()).read_all()

metadata = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
columns = table.column_names
clusters = sorted(set(table.column("cluster").to_pylist())) if "cluster" in columns else []
print(json.dumps({
    "content_type": content_type,
    "columns": columns,
    "types": [str(field.type) for field in table.schema],
    "rows": table.num_rows,
    "result_type": metadata.get("resultType"),
    "clusters": clusters,
    "value_sum": sum(v for v in table.column("value").to_pylist()),
}))
