"""Empty splits and NULL split keys: warned in the summary and manifest, or refused.

Pure tests of `pipeline.degenerate`, then two runs of the command on a real
PostgreSQL: every split key NULL (exit 0, the warning in the summary line and the
manifest), and every label NULL with `--fail_on_empty_split` (exit 1, one line, no
manifest).
"""

import json
import os

import pytest

from pipeline.__main__ import main
from pipeline.degenerate import EmptySplitError, check_empty_splits, output_warnings
from pipeline.options import parse_args
from tests.conftest import reference_split


def test_no_warnings_for_a_healthy_output():
    counts = {"rows_read": 10, "split:train": 8, "split:eval": 2}
    assert output_warnings({"train": 8, "eval": 2}, counts, "y", "id") == []
    check_empty_splits({"train": 8, "eval": 2}, [])


@pytest.mark.parametrize(
    "rows, counts, reason",
    [
        ({"train": 0, "eval": 0}, {"rows_read": 0}, "the source has no rows"),
        (
            {"train": 0, "eval": 0},
            {"rows_read": 7, "rows_dropped_null_label": 7},
            "all 7 rows read have a NULL label (--label y)",
        ),
        (
            {"train": 5, "eval": 0},
            {"rows_read": 5, "split:train": 5, "null_split_key:train": 5},
            "every row's split key is NULL (--split_key k), so all went to split "
            "'train'",
        ),
        (
            {"train": 3, "eval": 0},
            {"rows_read": 3, "split:train": 3},
            "none of the 3 rows kept hashed to it",
        ),
        (
            {"train": 0, "eval": 0},
            {"rows_read": 4, "dropped_null:x": 4},
            "all 4 rows read were dropped (see the manifest)",
        ),
        (
            {"train": 0, "eval": 0},
            {"rows_read": 4, "rows_dropped_null_label": 1,
             "rows_dropped_non_finite_label": 3},
            "all 4 rows read were dropped for their label (--label y; see "
            "rows_dropped_* in the manifest)",
        ),
        (
            {"train": 4, "eval": 0},
            {"rows_read": 6, "split:train": 4, "split:eval": 2},
            "its 2 rows were dropped after the transform (see the manifest)",
        ),
    ],
)
def test_empty_split_warnings_say_why(rows, counts, reason):
    warnings = output_warnings(rows, counts, "y", "k")
    assert f"split 'eval' is empty: {reason}" in warnings
    assert all("\n" not in w for w in warnings)
    with pytest.raises(EmptySplitError) as info:
        check_empty_splits(rows, warnings)
    message = str(info.value)
    assert message.startswith("--fail_on_empty_split: split ")
    assert reason in message and "no manifest" in message


def test_null_split_keys_are_warned_even_when_no_split_is_empty():
    counts = {"rows_read": 9, "split:train": 6, "split:eval": 3,
              "null_split_key:eval": 2}
    assert output_warnings({"train": 6, "eval": 3}, counts, "y", "k") == [
        "2 rows have a NULL split key (--split_key k) and all went to split 'eval'; "
        "choose a NOT NULL key"
    ]


def test_fail_on_empty_split_flag_parses():
    base = ["--db_url", "postgresql://x@h/d", "--table", "t", "--label", "y",
            "--output_dir", "/tmp/o"]
    assert parse_args(base)[0].fail_on_empty_split is False
    assert parse_args([*base, "--fail_on_empty_split"])[0].fail_on_empty_split


@pytest.fixture(scope="module")
def table(make_table):
    # ~100 rows, split key `k` NULL everywhere; labels y present, z all NULL.
    return make_table(
        "CREATE TABLE {table} (id int PRIMARY KEY, k bigint, x float8, y int, z int)",
        "INSERT INTO {table} SELECT i, NULL, i / 3.0, i % 2, NULL "
        "FROM generate_series(1, 100) AS i",
    )


def test_all_null_split_keys_warn_in_summary_and_manifest(
    database_url, table, tmp_path, capsys
):
    out = tmp_path / "out"
    argv = ["--db_url", database_url, "--table", table, "--label", "y",
            "--split_key", "k", "--output_dir", str(out)]
    assert main(argv) == 0
    target = reference_split(0)  # NULL keys hash like 0
    empty = "eval" if target == "train" else "train"
    (summary,) = [line for line in capsys.readouterr().out.splitlines()
                  if line.startswith("sql2tfrecord: wrote ")]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["splits"][target]["rows"] == 100
    assert manifest["splits"][empty]["rows"] == 0
    assert manifest["null_split_keys"] == {target: 100}
    assert manifest["warnings"] == [
        f"split '{empty}' is empty: every row's split key is NULL (--split_key k), "
        f"so all went to split '{target}'",
        f"100 rows have a NULL split key (--split_key k) and all went to split "
        f"'{target}'; choose a NOT NULL key",
    ]
    assert summary.startswith(f"sql2tfrecord: wrote {out}: rows ")
    for warning in manifest["warnings"]:
        assert f"; warning: {warning}" in summary


def test_all_null_labels_with_fail_on_empty_split_exit_1_without_manifest(
    database_url, table, tmp_path, capsys
):
    out = tmp_path / "out"
    argv = ["--db_url", database_url, "--table", table, "--label", "z",
            "--output_dir", str(out), "--fail_on_empty_split"]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "sql2tfrecord: error: --fail_on_empty_split: split 'train' is empty: all 100 "
        "rows read have a NULL label (--label z); split 'eval' is empty: all 100 rows "
        "read have a NULL label (--label z); the output was not published (no "
        "manifest)"
    ]
    assert not os.path.exists(out / "manifest.json")
