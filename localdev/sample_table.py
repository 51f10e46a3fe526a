"""The generated sample table: the run_local.sh demo's data and the benchmarks' table.

Contract (`create_sample_table`):
    * Columns: `id bigint PRIMARY KEY` (1..rows); `f0`..`f7 double precision`,
      rounded to 6 decimals, each NULL with probability 5%: f0 N(0, 1), f1 N(50, 10),
      f2 LogNormal(0, 0.75), f3 U(-1, 1), f4 N(1000, 250), f5 LogNormal(3, 1),
      f6 U(0, 100), f7 N(-5, 0.1); `c10`, `c100`, `c1k`, `c50k text`, tokens such as
      `c100_0042` from vocabularies of 10, 100, 1,000 and 50,000 with Zipf (1/rank)
      frequencies, each NULL with probability 2% (small tables do not show every
      token of the larger vocabularies); `created_at timestamptz NOT NULL`, uniform
      over 2024 (UTC); `label integer NOT NULL`, 0/1.
    * label ~ Bernoulli(sigmoid(-0.8 + 0.9 f0 - 0.06 (f1 - 50) + 0.667 ln f2
      + 0.8 f3 + effect(c10) + effect(c100) + 0.6 cos(2 pi (hour - 20) / 24))), a
      NULL contributing 0; the per-token effects are N(0, 0.6) and N(0, 0.4) draws
      (centred), hour is the UTC hour of created_at. About 37% positives; the true
      logit ranks with AUC ~0.81.
    * Deterministic for a seed, and the table of N rows is the first N rows of a
      larger one with the same seed (every column of every 100,000-row block has its
      own random stream).
    * Generated with numpy and loaded with COPY (CSV) in blocks, inside the
      transaction that creates the table (COPY FREEZE; the primary key is added
      after the load), then ANALYZEd. The process stays under ~250 MB of memory
      whatever the size.
"""

from __future__ import annotations

import functools
import io
import logging
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import psycopg2
from psycopg2 import sql

__all__ = ["CATEGORIES", "COLUMNS", "create_sample_table"]

_LOGGER = logging.getLogger(__name__)

# (numpy Generator method, two parameters) per float column f0..f7.
_FLOATS = (
    ("normal", 0.0, 1.0),
    ("normal", 50.0, 10.0),
    ("lognormal", 0.0, 0.75),
    ("uniform", -1.0, 1.0),
    ("normal", 1000.0, 250.0),
    ("lognormal", 3.0, 1.0),
    ("uniform", 0.0, 100.0),
    ("normal", -5.0, 0.1),
)
CATEGORIES = {"c10": 10, "c100": 100, "c1k": 1_000, "c50k": 50_000}
COLUMNS = (
    ("id", *(f"f{i}" for i in range(len(_FLOATS))))
    + tuple(CATEGORIES)
    + ("created_at", "label")
)
_FLOAT_NULL = 0.05
_TEXT_NULL = 0.02
_DECIMALS = 6
_BLOCK_ROWS = 100_000  # part of the data's definition: it keys the random streams
_EPOCH = np.datetime64("2024-01-01T00:00:00", "s")
_SPAN_SECONDS = 366 * 86_400
# The label's logistic model; see the module docstring.
_INTERCEPT = -0.8
_EFFECT_SCALES = {"c10": 0.6, "c100": 0.4}
_HOUR_AMPLITUDE, _PEAK_HOUR = 0.6, 20
_DDL = sql.SQL(
    "CREATE TABLE {table} (id bigint NOT NULL, "
    + ", ".join(f"f{i} double precision" for i in range(len(_FLOATS)))
    + ", "
    + ", ".join(f"{name} text" for name in CATEGORIES)
    + ", created_at timestamptz NOT NULL, label integer NOT NULL)"
)


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def _zipf_cdf(size: int) -> np.ndarray:
    weights = 1.0 / np.arange(1, size + 1)
    return np.cumsum(weights / weights.sum())


class _Model:
    """What all blocks share: vocabularies, Zipf CDFs, per-token label effects."""

    def __init__(self, seed: int):
        effects_rng = _rng(seed, 0)
        self.seed = seed
        self.cdfs = {name: _zipf_cdf(size) for name, size in CATEGORIES.items()}
        # One extra, last entry: the NULL token (empty CSV field, effect 0).
        self.vocabularies = {
            name: np.array(
                [f"{name}_{k:0{max(4, len(str(size - 1)))}d}" for k in range(size)]
                + [""],
                dtype=object,
            )
            for name, size in CATEGORIES.items()
        }
        self.effects = {}
        for name, scale in _EFFECT_SCALES.items():
            effect = effects_rng.normal(0.0, scale, CATEGORIES[name])
            probabilities = np.diff(self.cdfs[name], prepend=0.0)
            self.effects[name] = np.append(effect - probabilities @ effect, 0.0)


def _float_column(rng: Callable[[int], np.random.Generator], index: int, rows: int):
    method, a, b = _FLOATS[index]
    values = np.round(getattr(rng(0), method)(a, b, rows), _DECIMALS)
    return np.where(rng(1).random(rows) < _FLOAT_NULL, np.nan, values)


def _category_codes(rng: Callable[[int], np.random.Generator], cdf, rows: int):
    codes = np.searchsorted(cdf, rng(0).random(rows), side="right")
    codes = np.minimum(codes, len(cdf) - 1)
    return np.where(rng(1).random(rows) < _TEXT_NULL, len(cdf), codes)  # len: NULL


def _float_strings(values: np.ndarray) -> list[str]:
    strings = list(map(repr, values.tolist()))
    for i in np.flatnonzero(np.isnan(values)).tolist():
        strings[i] = ""  # unquoted empty field: NULL in COPY's CSV format
    return strings


def _block_csv(model: _Model, block: int, rows: int) -> bytes:
    """Rows `block * _BLOCK_ROWS + 1 ...` (`rows` of them) as CSV, no header."""
    first_id = block * _BLOCK_ROWS + 1
    n_floats, n_texts = len(_FLOATS), len(CATEGORIES)

    def streams(column: int) -> Callable[[int], np.random.Generator]:
        # Separate streams per block, column and purpose (values, NULL mask), so
        # that a block's first k rows do not depend on its length.
        return functools.partial(_rng, model.seed, 1, block, column)

    floats = [_float_column(streams(i), i, rows) for i in range(n_floats)]
    codes = {
        name: _category_codes(streams(n_floats + i), model.cdfs[name], rows)
        for i, name in enumerate(CATEGORIES)
    }
    seconds = streams(n_floats + n_texts)(0).integers(0, _SPAN_SECONDS, rows)
    hour = (seconds // 3600) % 24

    def term(values: np.ndarray) -> np.ndarray:
        return np.nan_to_num(values, nan=0.0)  # a NULL contributes nothing

    logit = (
        _INTERCEPT
        + 0.9 * term(floats[0])
        - 0.06 * term(floats[1] - 50.0)
        + (0.5 / 0.75) * term(np.log(floats[2]))
        + 0.8 * term(floats[3])
        + sum(model.effects[name][codes[name]] for name in _EFFECT_SCALES)
        + _HOUR_AMPLITUDE * np.cos(2 * math.pi * (hour - _PEAK_HOUR) / 24)
    )
    label = (
        streams(n_floats + n_texts + 1)(0).random(rows) < 1.0 / (1.0 + np.exp(-logit))
    ).astype(np.int64)

    columns = [list(map(str, range(first_id, first_id + rows)))]
    columns += [_float_strings(values) for values in floats]
    columns += [model.vocabularies[name][codes[name]].tolist() for name in CATEGORIES]
    columns.append(
        np.datetime_as_string(_EPOCH + seconds, unit="s", timezone="UTC").tolist()
    )
    columns.append(list(map(str, label.tolist())))
    lines = map(",".join, zip(*columns, strict=True))
    return ("\n".join(lines) + "\n").encode("ascii")


def _row_count(cur, table: sql.Composable) -> int | None:
    cur.execute("SELECT to_regclass(%s) IS NOT NULL", (table.as_string(cur),))
    if not cur.fetchone()[0]:
        return None
    cur.execute(sql.SQL("SELECT count(*) FROM {}").format(table))
    return cur.fetchone()[0]


def create_sample_table(
    db_url: str,
    table: str = "sample",
    rows: int = 200_000,
    seed: int = 0,
    replace: bool = False,
) -> int:
    """Creates the sample table, or keeps an existing one of the same size.

    Args:
        db_url: libpq URL or DSN of the database.
        table: the table's name (one identifier, quoted as given).
        rows: how many rows.
        seed: the random seed (>= 0); same seed, same data.
        replace: recreate the table even when it already has `rows` rows.

    Returns:
        The table's row count.

    Raises:
        ValueError: negative `rows` or `seed`, or an empty `table`.
        psycopg2.Error: from the database.
    """
    if rows < 0 or seed < 0:
        raise ValueError(f"rows and seed must be >= 0, got rows={rows}, seed={seed}")
    if not table:
        raise ValueError("table must be a non-empty name")
    began = time.monotonic()
    ident = sql.Identifier(table)
    conn = psycopg2.connect(db_url, application_name="sql2tfrecord-sample")
    try:
        with conn.cursor() as cur:
            if not replace and _row_count(cur, ident) == rows:
                _LOGGER.info("Kept table %s: it already has %d rows", table, rows)
                return rows
            cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(ident))
            cur.execute(_DDL.format(table=ident))
            _load(cur, ident, rows, _Model(seed))
            cur.execute(sql.SQL("ALTER TABLE {} ADD PRIMARY KEY (id)").format(ident))
        conn.commit()
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql.SQL("ANALYZE {}").format(ident))
    finally:
        conn.close()
    _LOGGER.info(
        "Created table %s: %d rows in %.1f s", table, rows, time.monotonic() - began
    )
    return rows


def _load(cur, ident: sql.Identifier, rows: int, model: _Model) -> None:
    """COPYs the blocks, encoding the next one while the server stores this one."""
    copy = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv, FREEZE)").format(
        ident, sql.SQL(", ").join(map(sql.Identifier, COLUMNS))
    )
    copy_sql = copy.as_string(cur)
    blocks = [
        (block, min(_BLOCK_ROWS, rows - block * _BLOCK_ROWS))
        for block in range(math.ceil(rows / _BLOCK_ROWS))
    ]
    with ThreadPoolExecutor(max_workers=1) as encoder:
        pending = encoder.submit(_block_csv, model, *blocks[0]) if blocks else None
        for i in range(len(blocks)):
            data = pending.result()
            if i + 1 < len(blocks):
                pending = encoder.submit(_block_csv, model, *blocks[i + 1])
            cur.copy_expert(copy_sql, io.BytesIO(data), size=1 << 20)
