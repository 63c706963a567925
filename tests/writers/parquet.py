"""Writes the JSON Lines batch on stdin to stdout as Parquet, with a real writer.

usage: parquet.py WRITER [--compression C] [--row-group-rows N] [--no-dictionary]
                         [--float32] [--categorical-ids] [--spark]

WRITER is pyarrow, pandas (DataFrame.to_parquet) or polars. The records'
keys become columns in the order first seen; a key missing from a record is
a null. --float32 stores lists of floats as FLOAT; --categorical-ids stores
string user ids as a pandas category (a dictionary column in the file);
--spark (pyarrow) writes as Spark does: its flavor, the legacy list naming,
and an INT96 `produced_at` timestamp column.
"""
import argparse
import io
import json
import sys

p = argparse.ArgumentParser()
p.add_argument("writer", choices=["pyarrow", "pandas", "polars"])
p.add_argument("--compression", default="snappy")
p.add_argument("--row-group-rows", type=int, default=None)
p.add_argument("--no-dictionary", action="store_true")
p.add_argument("--float32", action="store_true")
p.add_argument("--categorical-ids", action="store_true")
p.add_argument("--spark", action="store_true")
a = p.parse_args()

rows = [json.loads(line) for line in sys.stdin if line.strip()]
names = list(dict.fromkeys(k for r in rows for k in r))
out = io.BytesIO()

if a.writer == "pyarrow":
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist([{k: r.get(k) for k in names} for r in rows])
    if a.float32:
        fields = [
            pa.field(f.name, pa.list_(pa.float32())) if pa.types.is_list(f.type) and pa.types.is_floating(f.type.value_type) else f
            for f in table.schema
        ]
        table = table.cast(pa.schema(fields))
    extra = {}
    if a.spark:
        import datetime
        stamp = pa.array([datetime.datetime(2026, 12, 2, 3, 26, 13)] * table.num_rows, type=pa.timestamp("ns"))
        table = table.append_column("produced_at", stamp)
        extra = dict(flavor="spark", use_compliant_nested_type=False, use_deprecated_int96_timestamps=True)
    pq.write_table(table, out, compression=a.compression, row_group_size=a.row_group_rows, use_dictionary=not a.no_dictionary, **extra)
elif a.writer == "pandas":
    import pandas as pd

    df = pd.DataFrame([{k: r.get(k) for k in names} for r in rows], columns=names)
    if a.categorical_ids:
        df["userId"] = df["userId"].astype("category")
    df.to_parquet(out, engine="pyarrow", compression=a.compression, index=False, row_group_size=a.row_group_rows)
else:
    import polars as pl

    df = pl.DataFrame([{k: r.get(k) for k in names} for r in rows], infer_schema_length=None)
    df.write_parquet(out, compression=a.compression, row_group_size=a.row_group_rows)

sys.stdout.buffer.write(out.getvalue())
