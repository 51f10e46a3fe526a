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


def test_statistics_flags_parsed_and_checked(tmp_path):
    config = parse_args(BASE)[0]
    assert config.statistics and not config.fail_on_anomalies
    assert (config.max_js_divergence, config.max_linf_distance) == (None, None)
    baseline = tmp_path / "base"
    (baseline / "statistics").mkdir(parents=True)
    (baseline / "statistics" / "statistics.json").write_text("{}")
    config = parse_args([*BASE, "--fail_on_anomalies", "--max_js_divergence", "0.25",
                         "--baseline_stats", f"{baseline}/"])[0]
    assert config.fail_on_anomalies and config.max_js_divergence == 0.25
    assert config.baseline_stats == str(baseline)
    assert parse_args([*BASE, "--no_statistics"])[0].statistics is False
    with pytest.raises(UsageError) as info:
        parse_args([*BASE, "--max_js_divergence", "2", "--max_linf_distance", "nan",
                    "--baseline_stats", str(tmp_path), "--no_statistics"])
    message = str(info.value)
    for fragment in (
        "`--max_js_divergence` must be between 0 and 1, got 2.0",
        "`--max_linf_distance` must be between 0 and 1, got nan",
        f"`--baseline_stats` {tmp_path} has no statistics/statistics.json",
        "drop `--no_statistics`",
    ):
        assert fragment in message
