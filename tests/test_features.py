"""Feature config parsing and validation, without TensorFlow graphs or a database."""

import pytest

from transforms.features import ConfigError, infer_features, parse_config
from transforms.types import Column

COLUMNS = [
    Column("id", "int8", "bigint", not_null=True),
    Column("x", "float8", "double precision"),
    Column("n", "int4", "integer", not_null=True),
    Column("cat", "text", "text"),
    Column("ts", "timestamptz", "timestamp with time zone", not_null=True),
    Column("tags", "text", "text[]", is_array=True),
    Column("y", "int4", "integer", not_null=True),
]


def test_inferred_default_config():
    config = infer_features(COLUMNS, "y", exclude=["id"])
    got = {(f.name, f.transform, f.indicator) for f in config.features}
    assert got == {
        ("x", "zscore", True),
        ("n", "zscore", False),
        ("cat", "vocabulary", False),
        ("ts", "zscore", False),
        ("ts_hour_of_day", "hour_of_day", False),
        ("ts_day_of_week", "day_of_week", False),
    }
    assert config.columns[0] == "y" and "id" not in config.columns
    assert "tags" not in config.columns  # arrays are left to user modules


@pytest.mark.parametrize(
    "raw, fragment",
    [
        ({"features": [{"column": "x", "transform": "zscroe"}]}, "unknown transform 'zscroe'"),
        ({"features": [{"column": "nope", "transform": "zscore"}]}, "column 'nope'"),
        ({"features": [{"column": "cat", "transform": "zscore"}]}, "zscore does not apply to column 'cat'"),
        ({"features": [{"column": "x", "transform": "zscore", "topk": 3}]}, "unknown key(s) ['topk']"),
        ({"features": [{"column": "cat", "transform": "vocabulary", "top_k": 0}]}, "top_k must be"),
        ({"features": [{"column": "x", "transform": "zscore"}], "lable": "y"}, "unknown top-level"),
        ({"features": []}, "non-empty list"),
        ({"features": [{"column": "x", "transform": "zscore"}, {"column": "x", "transform": "scale_0_1"}]}, "used twice"),
        ({"features": [{"column": "tags", "transform": "vocabulary"}]}, "array column 'tags'"),
    ],
)
def test_invalid_configs_name_the_problem(raw, fragment):
    with pytest.raises(ConfigError) as info:
        parse_config(raw, COLUMNS, "y")
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_label_column_is_named():
    with pytest.raises(ConfigError, match="--label: column 'nope' not found"):
        parse_config({"features": [{"column": "x", "transform": "zscore"}]}, COLUMNS, "nope")


def test_valid_config_round_trips():
    config = parse_config(
        {"label": {"column": "y", "threshold": 0.5},
         "features": [{"column": "cat", "name": "c", "transform": "vocabulary", "top_k": 5}]},
        COLUMNS,
        None,
    )
    assert config.label.threshold == 0.5
    assert config.features[0].vocab_filename == "c" and config.features[0].top_k == 5


def test_inferred_time_parts_of_a_nullable_timestamp_carry_indicators():
    columns = [
        Column("ts", "timestamp", "timestamp without time zone"),
        Column("d", "date", "date"),
        Column("y", "int4", "integer", not_null=True),
    ]
    config = infer_features(columns, "y")
    got = {(f.name, f.transform, f.indicator) for f in config.features}
    assert got == {
        ("ts", "zscore", True),
        ("ts_hour_of_day", "hour_of_day", True),
        ("ts_day_of_week", "day_of_week", True),
        ("d", "zscore", True),
    }
    outputs = [f.name for f in config.features] + [
        f.indicator_name for f in config.features if f.indicator
    ]
    assert len(outputs) == len(set(outputs)) == 8
    assert {"ts_is_missing", "ts_hour_of_day_is_missing"} <= set(outputs)


@pytest.mark.parametrize(
    "column, impute",
    [("cat", "mean"), ("x", "token"), ("n", "most_frequent")],
)
def test_passthrough_imputation_must_suit_the_column_type(column, impute):
    feature = {"column": column, "transform": "passthrough", "impute": impute}
    raw = {"features": [feature]}
    with pytest.raises(ConfigError, match=f"impute must be one of .* got '{impute}'"):
        parse_config(raw, COLUMNS, "y")
