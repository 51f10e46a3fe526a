"""Feature config parsing and validation, without TensorFlow graphs or a database."""

import pytest

from transforms.features import ConfigError, infer_features, parse_config
from transforms.names import is_safe
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
        ({"features": [{"column": "x", "transform": "zscore"}, {"column": "x", "transform": "scale_0_1"}]}, "already used by feature 'x'"),
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


ODD = [
    Column("a/b", "text", "text", not_null=True),
    Column("a_b", "text", "text", not_null=True),
    Column("ünïcødé_列", "float8", "double precision"),
    Column("x", "float8", "double precision"),
    Column("x_is_missing", "int4", "integer", not_null=True),
    Column("t s", "timestamptz", "timestamp with time zone"),
    Column("t_s_hour_of_day", "int4", "integer", not_null=True),
    Column("Cat", "text", "text"),
    Column("cat", "text", "text"),
    Column("lab/el", "text", "text"),
]


def test_inferred_config_names_are_unique_valid_and_resolve_derived_clashes():
    config = infer_features(ODD, "lab/el")
    keys = config.names
    outputs = [config.label_key]
    for feature in config.features:
        outputs.append(feature.name)
        if feature.indicator:
            outputs.append(feature.indicator_name)
    assert len({o.lower() for o in outputs}) == len(outputs)
    assert all(is_safe(o) for o in outputs)
    by_column = {}
    for feature in config.features:
        by_column.setdefault(feature.column, []).append(feature)
    assert by_column["a/b"][0].name == keys["a/b"] != "a_b"
    assert by_column["a_b"][0].name == "a_b"
    # The real `x_is_missing` keeps its name; x's indicator takes a suffix.
    assert by_column["x_is_missing"][0].name == "x_is_missing"
    x = by_column["x"][0]
    assert x.indicator and x.indicator_name.startswith("x_is_missing_")
    parts = {f.transform: f.name for f in by_column["t s"]}
    assert parts["hour_of_day"].startswith(keys["t s"] + "_hour_of_day")
    assert by_column["t_s_hour_of_day"][0].name == "t_s_hour_of_day"
    assert config.label_key == keys["lab/el"] and is_safe(config.label_key)


@pytest.mark.parametrize("name", ["a/b", "ünï", "1x", "a b", "_x", "x__y", "", 5])
def test_invalid_user_feature_name_is_refused_with_a_suggestion(name):
    raw = {"features": [{"column": "x", "name": name, "transform": "zscore"}]}
    with pytest.raises(ConfigError) as info:
        parse_config(raw, COLUMNS, "y")
    message = str(info.value)
    assert f"name {name!r} is not a valid feature name" in message
    assert "\n" not in message
    hint = message.rsplit("use e.g. ", 1)[1].strip("'")
    assert is_safe(hint)


def test_outputs_equal_up_to_case_are_refused_naming_both():
    raw = {"features": [
        {"column": "x", "name": "Score", "transform": "zscore"},
        {"column": "n", "name": "score", "transform": "zscore"},
    ]}
    with pytest.raises(ConfigError) as info:
        parse_config(raw, COLUMNS, "y")
    assert "'score'" in str(info.value) and "'Score'" in str(info.value)


def test_user_indicator_clashing_with_a_feature_is_refused_naming_both():
    raw = {"features": [
        {"column": "x", "transform": "zscore", "indicator": True},
        {"column": "n", "name": "x_is_missing", "transform": "zscore"},
    ]}
    with pytest.raises(ConfigError, match="'x_is_missing' of feature 'x_is_missing'.*'x'"):
        parse_config(raw, COLUMNS, "y")


def test_config_without_names_uses_feature_names_of_columns():
    config = parse_config(
        {"label": "lab/el", "features": [{"column": "a/b", "transform": "vocabulary"}]},
        ODD,
        None,
    )
    assert config.features[0].name == config.names["a/b"] != "a/b"
    assert config.features[0].vocab_filename == config.features[0].name


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


def test_drift_thresholds_in_the_config_are_checked():
    base = {"features": [{"column": "x", "transform": "zscore"}]}
    config = parse_config({**base, "drift": {"max_js_divergence": 0.2,
                                             "max_linf_distance": 0}}, COLUMNS, "y")
    assert config.drift == {"max_js_divergence": 0.2, "max_linf_distance": 0.0}
    assert config.to_json()["drift"] == config.drift
    assert parse_config(base, COLUMNS, "y").drift == {}
    for drift, says in [
        ({"max_js_divergence": 2}, "drift.max_js_divergence must be a number between"),
        ({"max_linf_distance": float("nan")}, "drift.max_linf_distance must be"),
        ({"max_linf_distance": True}, "drift.max_linf_distance must be"),
        ({"max_js_divergence": "0.1"}, "drift.max_js_divergence must be"),
        ({"js": 0.1}, "unknown drift key(s) ['js']"),
        ([0.1], "'drift' must be a mapping"),
    ]:
        with pytest.raises(ConfigError) as info:
            parse_config({**base, "drift": drift}, COLUMNS, "y")
        assert says in str(info.value)


def test_drift_thresholds_come_from_the_flag_then_the_config_then_0_1():
    import dataclasses
    import types

    from pipeline.report import _thresholds as thresholds

    def _thresholds(flags, manifest):
        return dataclasses.astuple(thresholds(flags, manifest))

    manifest = {"features": {"drift": {"max_js_divergence": 0.3}}}
    flags = types.SimpleNamespace(max_js_divergence=None, max_linf_distance=None)
    assert _thresholds(flags, manifest) == (0.3, 0.1)
    flags = types.SimpleNamespace(max_js_divergence=0.05, max_linf_distance=0.2)
    assert _thresholds(flags, manifest) == (0.05, 0.2)
    flags = types.SimpleNamespace(max_js_divergence=None, max_linf_distance=None)
    assert _thresholds(flags, {"features": None}) == (0.1, 0.1)
