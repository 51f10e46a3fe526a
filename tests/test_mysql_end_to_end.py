"""One real command-line run on MySQL/MariaDB, and the same rows through PostgreSQL.

The MySQL run (`python -m pipeline`, a subprocess, a password in the URL) is
checked against values computed here from the generated rows; then the same
rows, loaded into PostgreSQL, must give the same examples, example by example.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import math
import os
import random
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import psycopg2
import pytest

import trainer
from pipeline.__main__ import main
from pipeline.sources.mysql.connection import parse_url
from tests.conftest import reference_split
from tests.mysql_fixtures import admin

pytestmark = pytest.mark.mysql

N = 3000
PASSWORD = "s3cr:et@pw/" + uuid.uuid4().hex[:6]
CITIES = ["São Paulo", "Zürich", "Malmö", "København", "Oslo", None]
CATS = ["red", "green", "blue"]
EPOCH = dt.datetime(1970, 1, 1)

FEATURES = {
    "label": "y",
    "features": [
        {"column": "id", "transform": "passthrough"},
        {"column": "x", "transform": "zscore", "indicator": True},
        {"column": "n", "transform": "zscore"},
        {"column": "price", "transform": "scale_0_1", "indicator": True},
        {"column": "flag", "transform": "passthrough"},
        {"column": "cat", "transform": "vocabulary"},
        {"column": "city", "transform": "vocabulary", "top_k": 4, "num_oov_buckets": 1},
        {"column": "born", "transform": "zscore", "indicator": True},
        {"column": "ts", "name": "ts_hour", "transform": "hour_of_day"},
        {"column": "ts", "name": "ts_dow", "transform": "day_of_week"},
        {"column": "x", "name": "x_median", "transform": "zscore", "impute": "median"},
    ],
}


def _rows():
    rng = random.Random(20)
    rows = []
    for i in range(1, N + 1):
        born = dt.date(1940, 1, 1) + dt.timedelta(days=rng.randint(0, 30000))
        zero = i % 97 == 0  # a zero date in MySQL, NULL in PostgreSQL
        ts = EPOCH + dt.timedelta(seconds=rng.randint(-10**9, 2 * 10**9),
                                  microseconds=rng.choice([0, 500000, 999999]))
        rows.append({
            "id": i,
            "x": None if i % 13 == 0 else rng.gauss(10, 3) * 10 ** rng.randint(-3, 3),
            "n": rng.randint(-(2**40), 2**40),
            "price": None if i % 17 == 0 else f"{rng.randint(0, 10**8)}.{rng.randint(0, 9999):04d}",
            "flag": rng.randint(0, 1),
            "cat": rng.choice(CATS),
            "city": rng.choice(CITIES),
            "born": None if i % 29 == 0 else ("zero" if zero else born),
            "ts": ts,
            "y": None if i % 31 == 0 else rng.randint(0, 1),
        })
    return rows


ROWS = _rows()


@pytest.fixture(scope="module")
def mysql_rich(mysql_url, mysql_table):
    name = mysql_table(
        "CREATE TABLE {table} (id INT PRIMARY KEY, x DOUBLE, n BIGINT NOT NULL, "
        "price DECIMAL(12,4), flag TINYINT(1) NOT NULL, "
        "cat ENUM('red','green','blue') NOT NULL, "
        "city VARCHAR(30) CHARACTER SET latin1, born DATE, ts DATETIME(6) NOT NULL, "
        "y INT)"
    )
    conn = admin(mysql_url, "")  # zero dates allowed
    with conn.cursor() as cur:
        cur.executemany(
            f"INSERT INTO `{name}` VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
            [
                (r["id"], r["x"], r["n"], r["price"], r["flag"], r["cat"], r["city"],
                 "0000-00-00" if r["born"] == "zero" else r["born"], r["ts"], r["y"])
                for r in ROWS
            ],
        )
    conn.close()
    return name


@pytest.fixture(scope="module")
def password_url(mysql_url):
    """The server's URL for a throwaway user with a password (masking checks)."""
    base = parse_url(mysql_url)
    user = f"s2t_{uuid.uuid4().hex[:8]}"
    conn = admin(mysql_url)
    with conn.cursor() as cur:
        cur.execute(f"CREATE USER '{user}'@'%%' IDENTIFIED BY %s", (PASSWORD,))
        cur.execute(f"GRANT SELECT ON `{base.database}`.* TO '{user}'@'%'")
    from urllib.parse import quote

    yield f"mysql://{user}:{quote(PASSWORD, safe='')}@{base.host}:{base.port}/{base.database}"
    with conn.cursor() as cur:
        cur.execute(f"DROP USER '{user}'@'%'")
    conn.close()


@pytest.fixture(scope="module")
def features_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("mycfg") / "features.json"
    path.write_text(json.dumps(FEATURES))
    return str(path)


@pytest.fixture(scope="module")
def mysql_run(mysql_rich, password_url, features_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("my") / "out"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "--db_url", password_url, "--table",
         mysql_rich, "--label", "y", "--output_dir", str(out), "--features",
         features_file, "--num_partitions", "4"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return str(out), proc.stdout + proc.stderr


def _read(out, split):
    features = collections.defaultdict(list)
    for batch, label in trainer.make_dataset(out, split, batch_size=512, shuffle=False):
        for key, value in batch.items():
            features[key].extend(value.numpy().tolist())
        features["y"].extend(label.numpy().tolist())
    ids = features["id"]
    return {i: {k: v[n] for k, v in features.items()} for n, i in enumerate(ids)}


@pytest.fixture(scope="module")
def mysql_examples(mysql_run):
    return {s: _read(mysql_run[0], s) for s in ("train", "eval")}


def _labelled():
    return [r for r in ROWS if r["y"] is not None]


def _seconds(ts: dt.datetime) -> int:
    delta = ts - EPOCH
    return delta.days * 86400 + delta.seconds


def test_manifest_says_what_was_read(mysql_run, mysql_rich):
    out, _ = mysql_run
    manifest = json.loads(Path(out, "manifest.json").read_text())
    assert manifest["rows_read"] == N
    assert manifest["zero_dates"] == {"born": sum(r["born"] == "zero" for r in ROWS)}
    assert manifest["rows_dropped_null_label"] == sum(r["y"] is None for r in ROWS)
    expected = collections.Counter(reference_split(r["id"]) for r in _labelled())
    assert {k: v["rows"] for k, v in manifest["splits"].items()} == dict(expected)
    plan = manifest["read_plan"]
    assert plan["consistency"] == "per_partition" and plan["snapshot"] is False
    assert plan["reread_for_transform"] is False
    assert len(plan["partitions"]) == 5  # 4 key ranges on id + NULL
    assert sum(manifest["rows_per_partition"].values()) == N
    assert "***" in manifest["source"]["db"]
    types = {c["name"]: c["type"] for c in manifest["source"]["columns"]}
    assert types["cat"].startswith("enum(") and types["flag"] == "tinyint(1)"
    # Each column's conversion note is MySQL's, not PostgreSQL's (no ±infinity).
    notes = {c["name"]: c["conversion"] for c in manifest["source"]["columns"]}
    assert "zero dates" in notes["born"] and "infinity" not in notes["born"]
    assert "taken as UTC" in notes["ts"] and "infinity" not in notes["ts"]
    assert notes["price"].startswith("read as the nearest float64")
    assert notes["cat"] == "its label(s), as text"


def test_the_password_is_nowhere(mysql_run, password_url):
    out, log = mysql_run
    secrets = [PASSWORD, password_url.split("@")[0].split(":")[-1]]
    for path in Path(out).rglob("*"):
        if path.is_file() and path.suffix != ".gz":
            text = path.read_bytes()
            assert not any(s.encode() in text for s in secrets), path
    assert not any(s in log for s in secrets)


def test_examples_match_the_rows(mysql_examples):
    rows = {r["id"]: r for r in ROWS}
    got = {**mysql_examples["train"], **mysql_examples["eval"]}
    assert sorted(got) == sorted(r["id"] for r in _labelled())
    for split, examples in mysql_examples.items():
        assert all(reference_split(i) == split for i in examples)
    train = [rows[i] for i in mysql_examples["train"]]
    xs = np.array([r["x"] for r in train if r["x"] is not None], dtype=np.float64)
    mean, std = xs.mean(), xs.std()
    days = np.array(
        [(r["born"] - dt.date(1970, 1, 1)).days for r in train
         if r["born"] not in (None, "zero")], dtype=np.float64)
    for i, example in got.items():
        row = rows[i]
        assert example["y"] == row["y"]
        assert example["flag"] == row["flag"]
        ts = row["ts"]
        assert example["ts_hour"] == ts.hour
        if row["x"] is None:
            assert example["x_is_missing"] == 1 and example["x"] == 0.0
        else:
            assert example["x_is_missing"] == 0
            assert math.isclose(example["x"], (row["x"] - mean) / std, rel_tol=1e-4,
                                abs_tol=1e-5)
        missing_born = row["born"] in (None, "zero")  # a zero date is missing
        assert example["born_is_missing"] == int(missing_born)
        if not missing_born:
            z = ((row["born"] - dt.date(1970, 1, 1)).days - days.mean()) / days.std()
            assert math.isclose(example["born"], z, rel_tol=1e-4, abs_tol=1e-5)


def test_day_of_week_is_one_convention(mysql_examples):
    """hour/day from the seconds since epoch (UTC): 1970-01-01 was a Thursday."""
    rows = {r["id"]: r for r in ROWS}
    got = {**mysql_examples["train"], **mysql_examples["eval"]}
    conventions = {
        (example["ts_dow"] - (_seconds(rows[i]["ts"]) // 86400)) % 7
        for i, example in got.items()
    }
    assert len(conventions) == 1


# --- the same rows in PostgreSQL ------------------------------------------------


@pytest.fixture(scope="module")
def postgres_run(database_url, features_file, tmp_path_factory):
    name = f"t_my_{uuid.uuid4().hex[:8]}"
    conn = psycopg2.connect(database_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(
            f'CREATE TABLE "{name}" (id int PRIMARY KEY, x float8, n int8 NOT NULL, '
            "price numeric(12,4), flag boolean NOT NULL, cat text NOT NULL, "
            "city text, born date, ts timestamp NOT NULL, y int4)"
        )
        for r in ROWS:
            cur.execute(
                f'INSERT INTO "{name}" VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)',
                (r["id"], r["x"], r["n"], r["price"], bool(r["flag"]), r["cat"],
                 r["city"], None if r["born"] == "zero" else r["born"], r["ts"],
                 r["y"]),
            )
        cur.execute(f'ANALYZE "{name}"')
    out = tmp_path_factory.mktemp("pg") / "out"
    try:
        assert main(["--db_url", database_url, "--table", name, "--label", "y",
                     "--output_dir", str(out), "--features", features_file]) == 0
    finally:
        with conn.cursor() as cur:
            cur.execute(f'DROP TABLE "{name}"')
        conn.close()
    return str(out)


def test_postgresql_and_mysql_give_the_same_examples(postgres_run, mysql_examples):
    manifest = json.loads(Path(postgres_run, "manifest.json").read_text())
    assert manifest["read_plan"]["consistency"] == "one_snapshot"
    assert manifest["zero_dates"] == {}
    for split in ("train", "eval"):
        pg = _read(postgres_run, split)
        my = mysql_examples[split]
        assert sorted(pg) == sorted(my)
        for i in pg:
            assert pg[i].keys() == my[i].keys()
            for key in pg[i]:
                assert pg[i][key] == my[i][key], (split, i, key, pg[i][key], my[i][key])


def test_one_instant_through_beam_writes_the_same_examples(
    mysql_rich, mysql_url, features_file, mysql_examples, tmp_path
):
    """The launcher's pre-opened snapshots reach the readers through the runner
    (multi-threaded DirectRunner), and the examples are those of the default mode."""
    out = tmp_path / "instant"
    assert main(["--db_url", mysql_url, "--table", mysql_rich, "--label", "y",
                 "--output_dir", str(out), "--features", features_file,
                 "--num_partitions", "4", "--consistency", "one_instant",
                 "--direct_running_mode", "multi_threading",
                 "--direct_num_workers", "2"]) == 0
    manifest = json.loads(Path(out, "manifest.json").read_text())
    assert manifest["read_plan"]["consistency"] == "one_instant"
    assert manifest["read_plan"]["snapshot"] is True
    assert manifest["read_plan"]["reread_for_transform"] is False
    assert manifest["rows_read"] == N
    for split in ("train", "eval"):
        assert _read(str(out), split) == mysql_examples[split]
