"""Pure decisions of the job: when the transform pass re-reads, and its check."""

import dataclasses

import pytest

from pipeline.job import Job, _check_reread, rereads
from pipeline.options import parse_args

BASE = ["--db_url", "postgresql://u@h/db", "--table", "t", "--label", "y", "--output_dir", "/tmp/o"]


def _job(*flags) -> Job:
    config, _ = parse_args([*BASE, *flags])
    return Job(config, None, None, None, "id", "y", "/tmp/t")


@pytest.mark.parametrize(
    ("flags", "snapshot_id", "want"),
    [
        ((), "00000003-00000002-1", True),
        (("--read_once",), "00000003-00000002-1", False),
        ((), None, False),  # --no_snapshot: two reads could see two instants
        (("--reader", "jdbc"), "00000003-00000002-1", False),
    ],
)
def test_rereads_only_from_a_shared_snapshot(flags, snapshot_id, want):
    assert rereads(_job(*flags), snapshot_id) is want


def test_rereads_never_a_query():
    """A query need not give the same rows twice (random(), now(), LIMIT)."""
    config, _ = parse_args(
        [*BASE[:2], "--query", "SELECT * FROM t ORDER BY random() LIMIT 10",
         *BASE[4:]]
    )
    job = Job(config, None, None, None, "id", "y", "/tmp/t")
    assert rereads(job, "00000003-00000002-1") is False


def test_rereads_never_from_a_parquet_snapshot():
    job = _job()
    job = dataclasses.replace(
        job, config=dataclasses.replace(job.config, input_parquet="/snap", table=None)
    )
    assert rereads(job, None) is False


def test_check_reread_passes_equal_counts_and_names_the_split_that_differs():
    _check_reread({"split:train": 8, "examples_train": 8, "split:eval": 2,
                   "examples_eval": 2}, ["train", "eval"])
    with pytest.raises(RuntimeError, match=r"split eval: the analysis read 2 rows but 3"):
        _check_reread({"split:train": 8, "examples_train": 8, "split:eval": 2,
                       "examples_eval": 3}, ["train", "eval"])
