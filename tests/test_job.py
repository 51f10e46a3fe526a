"""Pure decisions of the job: when the transform pass re-reads, and its check."""

import pytest

from pipeline.build import rereads
from pipeline.job import Job
from pipeline.options import parse_args
from pipeline.run import _check_reread
from pipeline.sources.postgres.catalog import TableRef
from pipeline.sources.postgres.plan import ReadPlan

BASE = ["--db_url", "postgresql://u@h/db", "--label", "y", "--output_dir", "/tmp/o"]
SNAPSHOT = "00000003-00000002-1"


def _job(source_flags, *flags, kind="r") -> Job:
    config, _ = parse_args([*BASE, *source_flags, *flags])
    table = TableRef("public", "t", kind) if config.table else None
    plan = ReadPlan("relation", (), (), None, -1, "plan", table=table)
    return Job(config, None, plan, None, "id", "y", "/tmp/t")


@pytest.mark.parametrize(
    ("flags", "snapshot_id", "want"),
    [
        ((), SNAPSHOT, True),
        (("--read_once",), SNAPSHOT, False),
        ((), None, False),  # --no_snapshot: two reads could see two instants
        (("--reader", "jdbc"), SNAPSHOT, False),
    ],
)
def test_rereads_a_table_only_from_a_shared_snapshot(flags, snapshot_id, want):
    assert rereads(_job(["--table", "t"], *flags), snapshot_id) is want


@pytest.mark.parametrize(("kind", "want"), [("r", True), ("p", True), ("m", True),
                                            ("v", False), ("f", False)])
def test_rereads_only_relations_stored_here(kind, want):
    """A view is computed at each read; a foreign table is outside the snapshot."""
    assert rereads(_job(["--table", "t"], kind=kind), SNAPSHOT) is want


def test_rereads_never_a_query():
    """A query need not give the same rows twice (random(), now(), LIMIT)."""
    job = _job(["--query", "SELECT * FROM t ORDER BY random() LIMIT 10"])
    assert rereads(job, SNAPSHOT) is False


def test_check_reread_passes_equal_counts_and_names_the_split_that_differs():
    _check_reread({"split:train": 8, "examples_train": 8, "split:eval": 2,
                   "examples_eval": 2}, ["train", "eval"])
    with pytest.raises(RuntimeError, match=r"split eval: the analysis read 2 rows but 3"):
        _check_reread({"split:train": 8, "examples_train": 8, "split:eval": 2,
                       "examples_eval": 3}, ["train", "eval"])


def test_rereads_never_a_parquet_snapshot():
    assert rereads(_job(["--input_parquet", "/snapshot"]), None) is False
