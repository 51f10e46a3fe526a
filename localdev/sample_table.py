"""The generated sample table: the demo's data and the benchmarks' table.

Schema: `id bigint PRIMARY KEY`; `f0`…`f7 double precision` (5% NULL each, normal,
lognormal and uniform); `c10`, `c100`, `c1k`, `c50k text` (about 10, 100, 1,000 and
50,000 distinct Zipf-distributed tokens, 2% NULL); `created_at timestamptz NOT NULL`
over 2024; `label integer NOT NULL`, 0/1, drawn from a logistic model of f0–f3,
per-category effects of c10 and c100 and the hour of day — so a small model can
learn it (AUC well above 0.5) while the majority class is ~65%.

Deterministic for a seed; generated with numpy and loaded with COPY in chunks, so
millions of rows load in seconds with modest memory.
"""

from __future__ import annotations

import io
import logging

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import psycopg2
from psycopg2 import sql

__all__ = ["create_sample_table", "SCHEMA_SQL"]

_LOGGER = logging.getLogger(__name__)

CHUNK_ROWS = 250_000
CARDINALITIES = {"c10": 10, "c100": 100, "c1k": 1_000, "c50k": 50_000}
SCHEMA_SQL = (
    "CREATE TABLE {} (id bigint PRIMARY KEY, "
    + ", ".join(f"f{i} double precision" for i in range(8))
    + ", "
    + ", ".join(f"{name} text" for name in CARDINALITIES)
    + ", created_at timestamptz NOT NULL, label integer NOT NULL)"
)
_YEAR_START = 1_704_067_200  # 2024-01-01T00:00:00Z
_YEAR_SECONDS = 366 * 86_400


def _zipf_probabilities(n: int) -> np.ndarray:
    weights = 1.0 / np.arange(1, n + 1) ** 1.1
    return weights / weights.sum()


def _chunk(rng: np.random.Generator, start: int, rows: int, effects) -> pa.Table:
    floats = [
        rng.normal(0, 1, rows),
        rng.normal(10, 3, rows),
        rng.lognormal(0, 1, rows),
        rng.uniform(-5, 5, rows),
        rng.normal(100, 25, rows),
        rng.exponential(2, rows),
        rng.normal(-3, 0.5, rows),
        rng.uniform(0, 1000, rows),
    ]
    masks = [rng.random(rows) < 0.05 for _ in floats]
    codes = {
        name: rng.choice(card, size=rows, p=_zipf_probabilities(card))
        for name, card in CARDINALITIES.items()
    }
    text_masks = {name: rng.random(rows) < 0.02 for name in CARDINALITIES}
    seconds = _YEAR_START + rng.integers(0, _YEAR_SECONDS, rows)
    hour = (seconds // 3600) % 24

    def z(values, mask):
        return np.where(mask, 0.0, (values - values.mean()) / values.std())

    logit = (
        -0.9
        + 0.9 * z(floats[0], masks[0])
        - 0.7 * z(floats[1], masks[1])
        + 0.5 * z(np.log(floats[2]), masks[2])
        + 0.4 * z(floats[3], masks[3])
        + np.where(text_masks["c10"], 0.0, effects["c10"][codes["c10"]])
        + np.where(text_masks["c100"], 0.0, effects["c100"][codes["c100"]])
        + 0.8 * np.sin(2 * np.pi * hour / 24)
    )
    label = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.int32)

    columns = {"id": pa.array(np.arange(start, start + rows, dtype=np.int64))}
    for i, (values, mask) in enumerate(zip(floats, masks)):
        columns[f"f{i}"] = pa.array(values, mask=mask)
    for name in CARDINALITIES:
        width = len(str(CARDINALITIES[name] - 1))
        tokens = np.char.add(f"{name}_", np.char.zfill(codes[name].astype(str), width))
        columns[name] = pa.array(tokens, mask=text_masks[name])
    columns["created_at"] = pa.array(seconds, pa.int64())
    columns["label"] = pa.array(label)
    return pa.table(columns)


def _exists_with_rows(cur, table: str, rows: int) -> bool:
    cur.execute("SELECT to_regclass(%s) IS NOT NULL", (sql.Identifier(table).string,))
    if not cur.fetchone()[0]:
        return False
    cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
    return cur.fetchone()[0] == rows


def create_sample_table(
    db_url: str,
    table: str = "sample",
    rows: int = 200_000,
    seed: int = 0,
    replace: bool = False,
) -> int:
    """Creates (or keeps, if it has `rows` rows) the sample table; returns its rows."""
    if rows < 0:
        raise ValueError(f"--rows must be >= 0, got {rows}")
    conn = psycopg2.connect(db_url, application_name="sql2tfrecord-sample")
    try:
        with conn, conn.cursor() as cur:
            if not replace and _exists_with_rows(cur, table, rows):
                _LOGGER.info("Sample table %s already has %d rows", table, rows)
                return rows
            ident = sql.Identifier(table)
            cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(ident))
            cur.execute(sql.SQL(SCHEMA_SQL).format(ident))
            # Unlogged while loading, then logged: several times faster to fill.
            cur.execute(sql.SQL("ALTER TABLE {} SET UNLOGGED").format(ident))
            rng = np.random.default_rng(seed)
            effects = {
                "c10": rng.normal(0, 0.8, CARDINALITIES["c10"]),
                "c100": rng.normal(0, 0.5, CARDINALITIES["c100"]),
            }
            copy = sql.SQL(
                "COPY {} FROM STDIN (FORMAT csv, HEADER true)"
            ).format(ident).as_string(conn)
            columns = (
                ["id"] + [f"f{i}" for i in range(8)] + list(CARDINALITIES) + ["created_at", "label"]
            )
            for start in range(0, rows, CHUNK_ROWS):
                n = min(CHUNK_ROWS, rows - start)
                chunk = _chunk(rng, start + 1, n, effects)
                chunk = chunk.set_column(
                    columns.index("created_at"),
                    "created_at",
                    pa.compute.cast(
                        pa.compute.multiply(chunk["created_at"], 1_000_000),
                        pa.timestamp("us", tz="UTC"),
                    ),
                )
                buffer = io.BytesIO()
                pacsv.write_csv(chunk.select(columns), buffer)
                buffer.seek(0)
                cur.copy_expert(copy, buffer)
            cur.execute(sql.SQL("ALTER TABLE {} SET LOGGED").format(ident))
            cur.execute(sql.SQL("ANALYZE {}").format(ident))
        return rows
    finally:
        conn.close()
