"""Flag parsing: every problem reported at once, misspellings rejected."""

import pytest

from pipeline.options import UsageError, parse_args

BASE = ["--db_url", "postgresql://u@h/db", "--table", "t", "--label", "y", "--output_dir", "/tmp/o"]


def test_valid_flags_split_ours_from_beams():
    config, beam_args = parse_args(BASE + ["--runner=DirectRunner", "--num_partitions", "4"])
    assert config.table == "t" and config.num_partitions == 4
    assert beam_args == ["--runner=DirectRunner"]
    assert "u@h" not in repr(config)  # the DSN is not in the repr at all


def test_all_problems_reported_at_once():
    with pytest.raises(UsageError) as info:
        parse_args(
            ["--db_url", "x", "--table", "t", "--query", "select 1", "--num_partitions", "0",
             "--num_shards", "-1", "--splits", "train=80,eval"]
        )
    message = str(info.value)
    for fragment in (
        "exactly one of `--table` and `--query`",
        "`--num_partitions` must be >= 1, got 0",
        "`--num_shards` must be >= 0, got -1",
        "`--splits` must look like",
        "`--label` is required",
        "`--output_dir` is required",
    ):
        assert fragment in message


def test_misspelt_flag_is_an_error():
    with pytest.raises(UsageError, match="unknown flag.*--num_partiton"):
        parse_args(BASE + ["--num_partiton", "3"])


def test_abbreviations_are_not_accepted():
    with pytest.raises(UsageError, match="unknown flag.*--overwr"):
        parse_args(BASE + ["--overwr"])


def test_db_url_defaults_to_environment(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://env@h/db")
    args = [a for a in BASE if a not in ("--db_url", "postgresql://u@h/db")]
    config, _ = parse_args(args)
    assert config.db_url == "postgresql://env@h/db"


def test_read_once_flag_is_parsed():
    assert parse_args(BASE)[0].read_once is False
    assert parse_args([*BASE, "--read_once"])[0].read_once is True
