"""Incremental spans (pipeline.spans): the span rule in SQL, then real runs.

The rule is checked first without Beam: `plan_span` in an exported snapshot, its
filter selected back, against transactions held open, subtransactions, aborts and
late commits with small span-column values. Then a few real runs: three spans with
inserts between them, a failed run, `--transform_from`, `make_dataset(spans=)`.
"""

from __future__ import annotations

import json
import os

import psycopg2
import pytest

from pipeline import spans
from pipeline.options import UsageError, parse_args
from pipeline.ownership import inspect_dir
from pipeline.sources.postgres.connection import Dsn
from pipeline.sources.postgres.plan import SourceSpec
from pipeline.sources.postgres.snapshot import ExportedSnapshot
from tests.conftest import execute, query

DDL = (
    "CREATE TABLE {table} (id bigint PRIMARY KEY, c bigint, x float8, "
    "cat text, y int NOT NULL)"
)


def _insert(url, table, ids, c=None):
    values = ",".join(
        f"({i}, {i if c is None else c}, {i * 0.5}, 'k{i % 3}', {i % 2})" for i in ids
    )
    execute(url, f'INSERT INTO "{table}" VALUES {values}')


def _span(url, table, previous, number, column="c", during=None, dsn_url=None):
    """Plans a span in a fresh snapshot; returns (ids it selects, manifest section).

    `during()` runs after the plan, before the read: commits in the run's middle.
    """
    source = SourceSpec(dsn=Dsn(dsn_url or url), table=table)
    target = spans.SpanTarget(number, f"/none/span-{number:04d}", previous, False)
    with ExportedSnapshot(source) as snap:
        bounds = spans.plan_span(snap.conn, snap.table, column, target)
        row_filter, info = bounds.row_filter, bounds.info
        if during is not None:
            during()
        with snap.conn.cursor() as cur:
            cur.execute(f'SELECT id FROM "{table}" AS src WHERE {row_filter}')
            ids = sorted(r[0] for r in cur.fetchall())
    assert info["rows"] == len(ids)
    return ids, info


def test_span_rule_late_commits_subtransactions_and_aborts(database_url, make_table):
    table = make_table(DDL)
    _insert(database_url, table, range(1, 101))
    held = psycopg2.connect(database_url)  # held open across span 1
    aborted = psycopg2.connect(database_url)
    try:
        with held.cursor() as cur:
            cur.execute("SAVEPOINT s")  # its row's xmin is a subtransaction id
            cur.execute(f"INSERT INTO \"{table}\" VALUES (1000, 5, 0, 'k', 1)")
        with aborted.cursor() as cur:
            cur.execute(f"INSERT INTO \"{table}\" VALUES (3000, 7, 0, 'k', 1)")
        # Committed after the held transaction began, inside span 1's xid window,
        # partly in a subtransaction: visible to span 1, so never again.
        conn = psycopg2.connect(database_url)
        with conn.cursor() as cur:
            cur.execute(f"INSERT INTO \"{table}\" VALUES (1001, 50, 0, 'k', 1)")
            cur.execute("SAVEPOINT a")
            cur.execute(f"INSERT INTO \"{table}\" VALUES (1002, 60, 0, 'k', 0)")
            cur.execute("RELEASE a")
        conn.commit()
        conn.close()

        ids1, info1 = _span(database_url, table, None, 1)
        assert ids1 == sorted([*range(1, 101), 1001, 1002])
        assert info1["lower"] is None and info1["upper"] == "100"
        assert info1["in_progress_transactions"]["count"] >= 2

        held.commit()  # C = 5, far below the watermark 100, committed late
        aborted.rollback()
        _insert(database_url, table, [2000], c=1)  # a new transaction, small C
        _insert(database_url, table, range(101, 121))
        ids2, info2 = _span(database_url, table, info1, 2)
        assert ids2 == sorted([*range(101, 121), 1000, 2000])
        assert info2["rows_late"] == 2
        assert (info2["lower"], info2["upper"]) == ("100", "120")

        # Nothing new: no span, a one-line error naming the flag and the table.
        with pytest.raises(spans.SpanError, match=r"--span_column c: no new rows"):
            _span(database_url, table, info2, 3)
        # The union equals the table, each row once (compared by SQL).
        union = ids1 + ids2
        assert len(union) == len(set(union))
        assert sorted(union) == sorted(
            r[0] for r in query(database_url, f'SELECT id FROM "{table}"')
        )
    finally:
        held.close()
        aborted.close()


def test_span_rule_watermark_never_goes_back_and_updates_reappear(
    database_url, make_table
):
    table = make_table(DDL)
    _insert(database_url, table, range(1, 11))
    ids1, info1 = _span(database_url, table, None, 1)
    assert ids1 == list(range(1, 11))
    # The rows with the top values go away; an update writes a new row version.
    execute(
        database_url,
        f'DELETE FROM "{table}" WHERE id >= 9',
        f'UPDATE "{table}" SET x = -1 WHERE id = 3',
    )
    _insert(database_url, table, [20], c=4)
    ids2, info2 = _span(database_url, table, info1, 2)
    assert info2["upper"] == "10"  # max(C) is now 8: the watermark stays at 10
    assert ids2 == [3, 20]  # the updated row again, and the late small C
    assert info2["rows_late"] == 2


def test_span_column_refusals(database_url, make_table):
    table = make_table(DDL)
    execute(database_url, f'CREATE VIEW "{table}_v" AS SELECT * FROM "{table}"')
    try:
        with pytest.raises(spans.SpanError, match=r"column 'cat' of table .* is text"):
            _span(database_url, table, None, 1, column="cat")
        with pytest.raises(spans.SpanError, match=r"'nope' not found in table"):
            _span(database_url, table, None, 1, column="nope")
        with pytest.raises(spans.SpanError, match=r"no rows with a non-NULL c"):
            _span(database_url, table, None, 1)
        with pytest.raises(spans.SpanError, match=r"not a table"):
            _span(database_url, f"{table}_v", None, 1)
    finally:
        execute(database_url, f'DROP VIEW "{table}_v"')


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--query", "SELECT 1 AS y"], "`--span_column` with `--query` needs `--span_lag`"),
        (["--table", "t", "--span_lag", "5"], "`--span_lag` is for `--query` spans"),
        (["--table", "t", "--overwrite"], "cannot be combined with `--overwrite`"),
        (["--table", "t", "--no_snapshot"], "cannot be combined with `--no_snapshot`"),
        (["--table", "t", "--reader", "jdbc"], "with `--reader jdbc`"),
    ],
)
def test_span_column_flag_refusals(extra, message):
    argv = ["--db_url", "postgresql://h/d", "--label", "y", "--output_dir", "/tmp/o"]
    with pytest.raises(UsageError, match=message):
        parse_args([*argv, "--span_column", "c", *extra])


def test_complete_spans_ignore_incomplete_and_foreign_dirs(tmp_path):
    for name, manifest in [
        ("span-0001", True),
        ("span-0002", True),
        ("span-0003", False),  # a crashed run's leftover: never counts
        ("span-x", True),
        ("other", True),
    ]:
        (tmp_path / name).mkdir()
        (tmp_path / name / ".sql2tfrecord").write_text("{}")
        if manifest:
            section = {"number": int(name[5:]) if name[5:].isdigit() else 0}
            (tmp_path / name / "manifest.json").write_text(
                json.dumps({"span": section})
            )
    assert spans.complete_spans(str(tmp_path)) == [1, 2]
    target = spans.next_span(str(tmp_path))
    assert (target.number, target.incomplete) == (3, True)
    assert target.previous == {"number": 2}
    assert spans.next_span(str(tmp_path / "missing")).number == 1
    assert not os.path.exists(tmp_path / "missing")


FEATURES = {
    "label": "y",
    "features": [
        {"column": "id", "transform": "passthrough"},
        {"column": "x", "transform": "zscore"},
        {"column": "cat", "transform": "vocabulary"},
    ],
}


def _ids_and_x(directory, split, **kwargs):
    import numpy as np

    import trainer

    ids, xs = [], []
    dataset = trainer.make_dataset(directory, split, shuffle=False, **kwargs)
    for features, _ in dataset:
        ids += np.asarray(features["id"]).ravel().tolist()
        xs += np.asarray(features["x"]).ravel().tolist()
    return ids, xs


def test_span_runs_held_transaction_failed_run_and_transform_from(
    database_url, make_table, tmp_path, monkeypatch, capfd
):
    import numpy as np

    import trainer
    from pipeline import run as run_module
    from pipeline.__main__ import main

    table = make_table(DDL)
    features = tmp_path / "features.json"
    features.write_text(json.dumps(FEATURES))
    out = tmp_path / "out"
    argv = ["--db_url", database_url, "--table", table, "--label", "y",
            "--features", str(features), "--span_column", "c",
            "--output_dir", str(out)]  # fmt: skip
    _insert(database_url, table, range(1, 61))
    held = psycopg2.connect(database_url)
    try:
        with held.cursor() as cur:  # open across run 1, with a C below its watermark
            cur.execute("SAVEPOINT s")
            cur.execute(f"INSERT INTO \"{table}\" VALUES (1000, 5, 7.5, 'k', 1)")
        assert main(argv) == 0
        held.commit()
    finally:
        held.close()
    _insert(database_url, table, range(61, 91))
    _insert(database_url, table, [2000], c=1)

    def fail(job):
        raise RuntimeError("injected failure before the manifest")

    with monkeypatch.context() as patch:
        patch.setattr(run_module, "_cleanup_temp", fail)
        assert main(argv) != 0
    assert sorted(os.listdir(out)) == ["span-0001"]  # no span, no staging left
    assert not [n for n in os.listdir(tmp_path) if "staging" in n]
    assert main(argv) == 0
    _insert(database_url, table, range(91, 121))
    assert main([*argv, "--transform_from", str(out / "span-0001")]) == 0
    assert sorted(os.listdir(out)) == ["span-0001", "span-0002", "span-0003"]

    want = {
        1: set(range(1, 61)),
        2: set(range(61, 91)) | {1000, 2000},
        3: set(range(91, 121)),
    }
    seen = []
    for number, ids in want.items():
        directory = str(out / f"span-{number:04d}")
        manifest = trainer.read_manifest(directory)
        span = manifest["span"]
        got = {}
        for split in ("train", "eval"):
            got[split] = _ids_and_x(directory, split)[0]
            assert manifest["splits"][split]["rows"] == len(got[split])
        assert set(got["train"]) | set(got["eval"]) == ids
        assert span["rows"] == len(ids) and span["number"] == number
        seen += got["train"] + got["eval"]
        assert manifest["transform"]["fitted"] is (number != 3)
    assert (want[2] - set(range(61, 91))) == {1000, 2000}
    assert trainer.read_manifest(str(out / "span-0002"))["span"]["rows_late"] == 2
    bounds = [trainer.read_manifest(str(out / f"span-{n:04d}"))["span"] for n in want]
    assert bounds[0]["in_progress_transactions"]["count"] >= 1  # the held one
    assert [(b["lower"], b["upper"]) for b in bounds] == [
        (None, "60"), ("60", "90"), ("90", "120"),
    ]  # fmt: skip
    # Every row in exactly one span; the union is the table (ids by SQL).
    assert len(seen) == len(set(seen))
    assert sorted(seen) == [r[0] for r in query(
        database_url, f'SELECT id FROM "{table}" ORDER BY id')]  # fmt: skip

    # --transform_from: span 3's x is z-scored with span 1's train statistics.
    train1 = _ids_and_x(str(out / "span-0001"), "train")[0]
    x1 = np.array([i * 0.5 for i in train1])
    ids3, xs3 = _ids_and_x(str(out / "span-0003"), "train")
    np.testing.assert_allclose(
        xs3, [(i * 0.5 - x1.mean()) / x1.std() for i in ids3], rtol=1e-5
    )
    graph = trainer.dataset.transform_fingerprint
    assert graph(str(out / "span-0003")) == graph(str(out / "span-0001"))
    assert graph(str(out / "span-0002")) != graph(str(out / "span-0001"))

    # make_dataset over spans: one graph, or a clear refusal.
    ids13 = _ids_and_x(str(out), "train", spans=[1, 3])[0]
    assert sorted(ids13) == sorted(train1 + ids3)
    with pytest.raises(ValueError, match="transformed by another graph"):
        trainer.make_dataset(str(out), "train", spans=2)  # spans 2 and 3
    with pytest.raises(ValueError, match="3 complete spans"):
        trainer.make_dataset(str(out), "train", spans=4)

    # --analyze_spans 2: span 4's statistics are numpy's over spans 3 and 4's train
    # rows (span 3's read back from its raw Parquet, not from the database).
    _insert(database_url, table, range(121, 151))
    capfd.readouterr()
    assert main([*argv, "--analyze_spans", "9"]) != 0  # only 3 earlier spans
    assert "--analyze_spans 9: " in capfd.readouterr().err
    assert sorted(os.listdir(out))[-1] == "span-0003"
    assert main([*argv, "--analyze_spans", "2"]) == 0
    ids4, xs4 = _ids_and_x(str(out / "span-0004"), "train")
    both = np.array([i * 0.5 for i in ids3 + ids4])
    assert set(ids4) < set(range(121, 151)) and len(both) > len(ids4)
    np.testing.assert_allclose(
        xs4, [(i * 0.5 - both.mean()) / both.std() for i in ids4], rtol=1e-5
    )
    manifest4 = trainer.read_manifest(str(out / "span-0004"))
    assert manifest4["transform"]["analyzed_spans"] == [3, 4]
    assert manifest4["rows_read"] == 30 and manifest4["span"]["rows"] == 30
    state = inspect_dir(str(out / "span-0004"), "tfrecord")
    assert state.complete and state.foreign is None
    assert any(e.startswith("raw/part-") for e in state.entries)


def _read_plan(url, table, previous, number, **kwargs):
    """The narrowed read plan of a span and the rows its one COPY selects."""
    from pipeline.sources.postgres.plan import copy_sql, plan_read

    source = SourceSpec(dsn=Dsn(url), table=table)
    target = spans.SpanTarget(number, f"/none/span-{number:04d}", previous, False)
    with ExportedSnapshot(source) as snap:
        plan = plan_read(source, None, snapshot=snap)
        bounds = spans.plan_span(snap.conn, snap.table, "c", target)
        plan = spans.narrow_plan(plan, bounds, **kwargs)
        ids, explain = [], []
        with snap.conn.cursor() as cur:
            for partition in plan.partitions:
                text = copy_sql(plan, partition).as_string(snap.conn)
                select = text[len("COPY (") : text.rindex(") TO STDOUT")]
                cur.execute(f"EXPLAIN {select}")
                explain += [r[0] for r in cur.fetchall()]
                cur.execute(f"SELECT src.id FROM ({select}) AS src")
                ids += [r[0] for r in cur.fetchall()]
    return plan, bounds.info, sorted(ids), "\n".join(explain)


def test_small_span_reads_by_index_and_late_rows_by_ctid(database_url, make_table):
    table = make_table(
        DDL,
        "INSERT INTO {table} SELECT i, i, i * 0.5, 'k', i % 2 "
        "FROM generate_series(1, 20000) AS i",
        "CREATE INDEX ON {table} (c)",
    )
    _, info1, ids1, _ = _read_plan(database_url, table, None, 1, may_merge=True)
    assert ids1 == list(range(1, 20001)) and info1["index_on_span_column"]
    _insert(database_url, table, range(20001, 20101))
    _insert(database_url, table, [30000], c=7)  # late: C far below the watermark
    execute(database_url, f'ANALYZE "{table}"')
    plan, info2, ids2, explain = _read_plan(
        database_url, table, info1, 2, may_merge=True
    )
    assert ids2 == [*range(20001, 20101), 30000]
    assert len(plan.partitions) == 1 and plan.row_filter is None
    assert "Index" in explain and "Tid Scan" in explain, explain
    assert "Seq Scan" not in explain, explain
    # Forced partitions (--num_partitions): the exact filter in every partition.
    plan, _, ids3, _ = _read_plan(database_url, table, info1, 2, may_merge=False)
    assert ids3 == ids2 and plan.row_filter


def test_partitioned_table_spans_find_late_rows_in_every_leaf(database_url, make_table):
    table = make_table(
        "CREATE TABLE {table} (id bigint, c bigint, x float8, cat text, y int) "
        "PARTITION BY RANGE (c)",
    )
    execute(
        database_url,
        f'CREATE TABLE "{table}_a" PARTITION OF "{table}" FOR VALUES FROM '
        "(MINVALUE) TO (50)",
        f'CREATE TABLE "{table}_b" PARTITION OF "{table}" FOR VALUES FROM '
        "(50) TO (MAXVALUE)",
    )
    try:
        _insert(database_url, table, range(1, 80))
        held = psycopg2.connect(database_url)
        with held.cursor() as cur:
            cur.execute(f"INSERT INTO \"{table}\" VALUES (500, 3, 0, 'k', 1)")
            cur.execute(f"INSERT INTO \"{table}\" VALUES (501, 60, 0, 'k', 1)")
        _, info1, ids1, _ = _read_plan(database_url, table, None, 1, may_merge=True)
        held.commit()
        held.close()
        _insert(database_url, table, range(80, 90))
        plan, info2, ids2, _ = _read_plan(
            database_url, table, info1, 2, may_merge=True
        )
        assert ids1 == list(range(1, 80))
        assert ids2 == [*range(80, 90), 500, 501] and info2["rows_late"] == 2
    finally:
        execute(database_url, f'DROP TABLE "{table}_a", "{table}_b"')


def test_span_rule_commits_during_a_run_land_in_the_next_span(
    database_url, make_table
):
    table = make_table(DDL)
    _insert(database_url, table, range(1, 21))

    def commit_during_the_run():
        _insert(database_url, table, [500], c=3)  # below the watermark
        _insert(database_url, table, [501], c=1000)  # above it
        execute(database_url, f'UPDATE "{table}" SET x = 0 WHERE id = 2')
        execute(database_url, f'DELETE FROM "{table}" WHERE id = 4')

    ids1, info1 = _span(database_url, table, None, 1, during=commit_during_the_run)
    assert ids1 == list(range(1, 21)) and info1["upper"] == "20"
    ids2, info2 = _span(database_url, table, info1, 2)
    assert ids2 == [2, 500, 501] and info2["rows_late"] == 2
    assert info2["upper"] == "1000"


def test_timestamptz_watermark_exact_to_the_microsecond_across_timezones(
    database_url, make_table
):
    table = make_table(
        "CREATE TABLE {table} (id bigint PRIMARY KEY, c timestamptz, y int)",
        "INSERT INTO {table} SELECT i, timestamptz '2026-03-04 05:06:07.123456+00' "
        "+ i * interval '1 microsecond', i % 2 FROM generate_series(1, 10) AS i",
    )
    sep = "&" if "?" in database_url else "?"
    odd = (
        f"{database_url}{sep}options=-c%20TimeZone%3DAsia/Kolkata"
    )
    ids1, info1 = _span(database_url, table, None, 1, column="c", dsn_url=odd)
    assert ids1 == list(range(1, 11))
    assert info1["upper"] == "2026-03-04T10:36:07.123466+05:30"
    execute(
        database_url,
        f"INSERT INTO \"{table}\" VALUES (11, timestamptz "
        "'2026-03-04 05:06:07.123467+00', 1), (12, timestamptz "
        "'2026-03-04 05:06:07.123466+00', 0)",  # equal to the watermark: late
    )
    ids2, info2 = _span(database_url, table, info1, 2, column="c")
    assert ids2 == [11, 12] and info2["rows_late"] == 1


def test_query_spans_hold_back_the_lag_and_catch_late_rows_within_it(
    database_url, make_table, tmp_path
):
    """A --query span: C in (W_prev, max(C) - lag]; a row committed late inside the
    lag window lands in the next span; every id in exactly one span."""
    import trainer
    from pipeline.__main__ import main

    table = make_table(DDL)
    features = tmp_path / "features.json"
    features.write_text(json.dumps(FEATURES))
    out = tmp_path / "out"
    query = f'SELECT id, c, x, cat, y FROM "{table}" WHERE y >= 0  -- all rows'
    argv = ["--db_url", database_url, "--query", query, "--split_key", "id",
            "--label", "y", "--features", str(features), "--span_column", "c",
            "--span_lag", "10", "--output_dir", str(out)]  # fmt: skip
    _insert(database_url, table, range(1, 101))
    assert main(argv) == 0  # span 1: c <= 100 - 10
    manifest1 = trainer.read_manifest(str(out / "span-0001"))
    assert (manifest1["span"]["upper"], manifest1["span"]["lag"]) == ("90", "10")
    _insert(database_url, table, range(101, 151))
    _insert(database_url, table, [1000], c=95)  # committed late, inside the lag window
    assert main(argv) == 0  # span 2: 90 < c <= 140
    assert main(argv) != 0  # nothing new beyond the lag: no span 3
    spans_ids = {}
    for number in (1, 2):
        directory = str(out / f"span-{number:04d}")
        spans_ids[number] = sorted(
            _ids_and_x(directory, "train")[0] + _ids_and_x(directory, "eval")[0]
        )
    assert spans_ids[1] == list(range(1, 91))
    assert spans_ids[2] == sorted([*range(91, 141), 1000])
    assert sorted(os.listdir(out)) == ["span-0001", "span-0002"]


def test_updated_rows_come_again_and_are_counted_by_primary_key(
    database_url, make_table, tmp_path
):
    """UPDATE … SET c = <new>: the new version lands in the next span, counted."""
    import trainer
    from pipeline.__main__ import main

    table = make_table(DDL)
    features = tmp_path / "features.json"
    features.write_text(json.dumps(FEATURES))
    out = tmp_path / "out"
    argv = ["--db_url", database_url, "--table", table, "--label", "y",
            "--features", str(features), "--span_column", "c",
            "--output_dir", str(out)]  # fmt: skip
    _insert(database_url, table, range(1, 51))
    assert main(argv) == 0
    execute(database_url, f'UPDATE "{table}" SET c = 500 + id WHERE id IN (3, 7)')
    _insert(database_url, table, range(51, 61))
    assert main(argv) == 0
    first = trainer.read_manifest(str(out / "span-0001"))["span"]
    second = trainer.read_manifest(str(out / "span-0002"))["span"]
    assert (first["key"], first["rows_seen_in_earlier_spans"]) == ("id", 0)
    assert (second["key"], second["rows_seen_in_earlier_spans"]) == ("id", 2)
    directory = str(out / "span-0002")
    ids = sorted(_ids_and_x(directory, "train")[0] + _ids_and_x(directory, "eval")[0])
    assert ids == [3, 7, *range(51, 61)]
