"""The declarative feature config: one record per output feature, validated up front.

A config file (`--features`, YAML or JSON) looks like::

    label: label                    # or {column: label, threshold: 0.5}
    features:
      - column: f0                  # raw column; output named `name`, else the
                                    # column's feature name (transforms.names)
        transform: zscore           # zscore | scale_0_1 | bucketize | vocabulary |
                                    # hash | passthrough | hour_of_day | day_of_week
        impute: mean                # numbers: mean | median | constant | drop
                                    # text: token | most_frequent | drop
        indicator: true             # also emit `<name>_is_missing` (1 where NULL)
      - {column: c10, transform: vocabulary, top_k: 1000, num_oov_buckets: 2}

Without a file, `infer_features` builds the default from the catalog: numbers, dates
and timestamps z-scored with NULLs imputed by the train mean (and an is-missing
indicator when nullable); timestamps also give hour of day and day of week (with
their own `<name>_is_missing` indicators when nullable: a missing timestamp's hour
is 24 and its day 7, see `transforms.preprocessing`); text
goes through a vocabulary (top 100,000, one OOV bucket, NULL as its own token);
arrays, the label, the split key and primary key columns are left out.
Unknown keys, transforms or columns are errors that name them.

Names: outputs are named after the column's feature name (`transforms.names`: the
column name itself unless it is not a safe ASCII name or clashes). Derived outputs
(`<name>_is_missing`, `<name>_hour_of_day`, `<name>_day_of_week`) of the inferred
config that would equal a column's feature name get a hash suffix
(`names.derived_name`). A `name:` given in a config is refused unless it is a safe
name (the error suggests one); outputs that are equal, or equal up to case, are
refused naming both features.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from transforms import names as names_
from transforms.types import Column, Kind, check_mapped

__all__ = [
    "Feature",
    "Label",
    "FeatureConfig",
    "ConfigError",
    "infer_features",
    "load_config",
    "parse_config",
    "MISSING_TOKEN",
]

MISSING_TOKEN = "__MISSING__"
DEFAULT_TOP_K = 100_000

_NUMERIC = {Kind.INT, Kind.FLOAT, Kind.DATE, Kind.TIMESTAMP}
_TIME = {Kind.TIMESTAMP}
_ALLOWED_KINDS = {
    "zscore": _NUMERIC,
    "scale_0_1": _NUMERIC,
    "bucketize": _NUMERIC,
    "vocabulary": {Kind.BYTES},
    "hash": {Kind.BYTES},
    "passthrough": _NUMERIC | {Kind.BYTES},
    "hour_of_day": _TIME,
    "day_of_week": _TIME | {Kind.DATE},
}
_KEYS = {
    "zscore": {"impute", "constant", "indicator"},
    "scale_0_1": {"impute", "constant", "indicator"},
    "bucketize": {"impute", "constant", "indicator", "num_buckets"},
    "vocabulary": {
        "impute",
        "top_k",
        "frequency_threshold",
        "num_oov_buckets",
        "missing_token",
        "indicator",
    },
    "hash": {"impute", "hash_buckets", "missing_token", "indicator"},
    "passthrough": {"impute", "constant", "missing_token", "indicator"},
    "hour_of_day": {"indicator"},
    "day_of_week": {"indicator"},
}
_COMMON_KEYS = {"column", "name", "transform"}
_NUMERIC_IMPUTE = {"mean", "median", "constant", "drop"}
_IMPUTE = {
    "zscore": _NUMERIC_IMPUTE,
    "scale_0_1": _NUMERIC_IMPUTE,
    "bucketize": _NUMERIC_IMPUTE,
    "passthrough": _NUMERIC_IMPUTE | {"token"},
    "vocabulary": {"token", "most_frequent", "drop"},
    "hash": {"token", "drop"},
}


class ConfigError(ValueError):
    """An invalid feature config; the message names the feature and the key."""


@dataclasses.dataclass(frozen=True)
class Feature:
    """One output feature computed from one raw column.

    Attributes:
        name: output feature name.
        column: raw column it reads.
        transform: see the module docstring.
        impute: what a NULL (or a NaN/±Infinity) becomes. Numbers: "mean",
            "median" (train statistics of present values) or "constant"; text:
            "token" (`missing_token`, its own category) or "most_frequent"
            (vocabulary only). "drop" drops the row before the split (counted).
            None means the transform's default ("mean" or "token").
        constant: the fill value for impute="constant".
        indicator: also output `indicator_name` (int64 0/1).
        missing_name: the indicator's name when not `<name>_is_missing` (set
            by the inferred config when that would clash with a column).
        top_k, frequency_threshold, num_oov_buckets: vocabulary options.
        missing_token: the token a NULL string becomes (vocabulary, hash).
        num_buckets: bucketize by this many quantiles.
        hash_buckets: hash into this many buckets.
    """

    name: str
    column: str
    transform: str
    impute: str | None = None
    constant: float = 0.0
    indicator: bool = False
    top_k: int | None = None
    frequency_threshold: int | None = None
    num_oov_buckets: int = 1
    missing_token: str = MISSING_TOKEN
    num_buckets: int = 10
    hash_buckets: int = 1000
    missing_name: str | None = None

    @property
    def imputation(self) -> str:
        """The effective imputation ("mean" for numbers, "token" for text)."""
        if self.impute is not None:
            return self.impute
        return "token" if self.transform in ("vocabulary", "hash") else "mean"

    @property
    def indicator_name(self) -> str:
        """Name of the is-missing indicator output."""
        return self.missing_name or f"{self.name}_is_missing"

    @property
    def vocab_filename(self) -> str:
        """The vocabulary's name in transform_fn assets (vocabulary transform)."""
        return self.name


@dataclasses.dataclass(frozen=True)
class Label:
    """The label: a raw column passed through, or thresholded to 0/1."""

    column: str
    threshold: float | None = None


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
    """The label and the features, in output order.

    `names` maps every source column to its feature name (its raw feature key,
    `transforms.names.feature_names`); the label's output is `label_key`.
    """

    label: Label
    features: tuple[Feature, ...]
    names: Mapping[str, str] = dataclasses.field(default_factory=dict, hash=False)
    # Drift thresholds (`max_js_divergence`, `max_linf_distance`); flags win.
    drift: Mapping[str, float] = dataclasses.field(default_factory=dict, hash=False)

    @property
    def label_key(self) -> str:
        """The label's feature name (raw and transformed)."""
        return self.names.get(self.label.column, self.label.column)

    @property
    def drop_if_null(self) -> tuple[str, ...]:
        """Columns whose NULL drops the row (impute: drop)."""
        return tuple(
            dict.fromkeys(f.column for f in self.features if f.impute == "drop")
        )

    @property
    def columns(self) -> tuple[str, ...]:
        """Raw columns the preprocessing needs (label first, no duplicates)."""
        names = [self.label.column] + [f.column for f in self.features]
        return tuple(dict.fromkeys(names))

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready description for the manifest."""
        return {
            "label": dataclasses.asdict(self.label),
            "features": [dataclasses.asdict(f) for f in self.features],
            "drift": dict(self.drift),
        }


def infer_features(
    columns: Sequence[Column], label: str, exclude: Sequence[str] = ()
) -> FeatureConfig:
    """The default config from catalog types (see module docstring)."""
    skip = {label, *exclude}
    check_mapped(c for c in columns if c.name not in skip and not c.is_array)
    keys = names_.feature_names(c.name for c in columns)
    taken = set(keys.values())  # derived names never take a column's name
    features: list[Feature] = []
    for column in columns:
        if column.name in skip or column.is_array:
            continue
        key = keys[column.name]
        nullable = not column.not_null
        if column.kind in _NUMERIC:
            missing = names_.derived_name(key, "is_missing", taken)
            taken.add(missing)
            features.append(
                Feature(
                    key,
                    column.name,
                    "zscore",
                    indicator=nullable,
                    missing_name=missing if nullable else None,
                )
            )
            if column.kind is Kind.TIMESTAMP:
                for expansion in ("hour_of_day", "day_of_week"):
                    name = names_.derived_name(key, expansion, taken)
                    taken.add(name)
                    part_missing = None
                    if nullable:
                        part_missing = names_.derived_name(name, "is_missing", taken)
                        taken.add(part_missing)
                    features.append(
                        Feature(
                            name,
                            column.name,
                            expansion,
                            indicator=nullable,
                            missing_name=part_missing,
                        )
                    )
        elif column.kind is Kind.BYTES:
            features.append(
                Feature(key, column.name, "vocabulary", top_k=DEFAULT_TOP_K)
            )
    config = FeatureConfig(Label(label), tuple(features), keys)
    validate(config, columns)
    return config


def load_config(
    path: str, columns: Sequence[Column], label: str | None
) -> FeatureConfig:
    """Reads `--features` (YAML or JSON by extension) and validates it."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as err:
        raise ConfigError(f"--features: cannot read {path}: {err.strerror}") from err
    try:
        if os.path.splitext(path)[1].lower() == ".json":
            raw = json.loads(text)
        else:
            import yaml

            raw = yaml.safe_load(text)
    except ValueError as err:  # json.JSONDecodeError and yaml.YAMLError
        raise ConfigError(f"--features: {path} is not valid: {err}") from err
    except Exception as err:  # yaml.YAMLError does not subclass ValueError
        raise ConfigError(f"--features: {path} is not valid YAML: {err}") from err
    return parse_config(raw, columns, label)


def parse_config(
    raw: Any, columns: Sequence[Column], label: str | None
) -> FeatureConfig:
    """Builds and validates a FeatureConfig from parsed YAML/JSON."""
    if not isinstance(raw, Mapping):
        raise ConfigError("--features: the config must be a mapping with 'features'")
    unknown = set(raw) - {"label", "features", "drift"}
    if unknown:
        raise ConfigError(f"--features: unknown top-level key(s) {sorted(unknown)}")
    label_raw = raw.get("label", label)
    if isinstance(label_raw, str):
        label_obj = Label(label_raw)
    elif isinstance(label_raw, Mapping):
        extra = set(label_raw) - {"column", "threshold"}
        if extra or "column" not in label_raw:
            raise ConfigError(
                f"--features: label needs 'column' and may have 'threshold', got "
                f"{sorted(label_raw)}"
            )
        label_obj = Label(label_raw["column"], label_raw.get("threshold"))
    else:
        raise ConfigError("--features: no label given (use --label or 'label:')")
    if label is not None and label_obj.column != label:
        raise ConfigError(
            f"--label {label!r} disagrees with the config's label {label_obj.column!r}"
        )
    entries = raw.get("features")
    if not isinstance(entries, list) or not entries:
        raise ConfigError("--features: 'features' must be a non-empty list")
    keys = names_.feature_names(c.name for c in columns)
    features = []
    for i, entry in enumerate(entries):
        features.append(_parse_feature(entry, i, keys))
    config = FeatureConfig(label_obj, tuple(features), keys, _parse_drift(raw))
    validate(config, columns)
    return config


DRIFT_KEYS = ("max_js_divergence", "max_linf_distance")


def _parse_drift(raw: Mapping) -> dict[str, float]:
    """The config's `drift:` thresholds, each a number in [0, 1]."""
    drift = raw.get("drift") or {}
    if not isinstance(drift, Mapping):
        raise ConfigError("--features: 'drift' must be a mapping of thresholds")
    unknown = set(drift) - set(DRIFT_KEYS)
    if unknown:
        raise ConfigError(
            f"--features: unknown drift key(s) {sorted(unknown)}; "
            f"use {', '.join(DRIFT_KEYS)}"
        )
    for key, value in drift.items():
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not 0 <= value <= 1
        ):
            raise ConfigError(
                f"--features: drift.{key} must be a number between 0 and 1, "
                f"got {value!r}"
            )
    return {key: float(value) for key, value in drift.items()}


def _parse_feature(entry: Any, index: int, keys: Mapping[str, str]) -> Feature:
    where = f"--features: feature #{index + 1}"
    if not isinstance(entry, Mapping) or "column" not in entry:
        raise ConfigError(f"{where} must be a mapping with a 'column'")
    where = f"--features: feature {entry.get('name', entry['column'])!r}"
    if "name" in entry:
        name = entry["name"]
        if not isinstance(name, str) or not names_.is_safe(name):
            hint = names_.suggest(str(name))
            raise ConfigError(
                f"{where}: name {name!r} is not a valid feature name (ASCII letters "
                f"and digits in words joined by single underscores, starting with a "
                f"letter); use e.g. {hint!r}"
            )
    else:
        column = str(entry["column"])
        name = keys.get(column, column)
    transform = entry.get("transform")
    if transform not in _KEYS:
        raise ConfigError(
            f"{where}: unknown transform {transform!r}; choose one of {sorted(_KEYS)}"
        )
    unknown = set(entry) - _COMMON_KEYS - _KEYS[transform]
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)} for {transform}")
    values = {k: v for k, v in entry.items() if k not in _COMMON_KEYS}
    allowed = _IMPUTE.get(transform, set())
    if "impute" in values and values["impute"] not in allowed:
        raise ConfigError(
            f"{where}: impute must be one of {sorted(allowed)} for {transform}, "
            f"got {values['impute']!r}"
        )
    for key in ("top_k", "frequency_threshold", "num_buckets", "hash_buckets"):
        if key in values and (not isinstance(values[key], int) or values[key] < 1):
            raise ConfigError(
                f"{where}: {key} must be an integer >= 1, got {values[key]!r}"
            )
    if "num_oov_buckets" in values and (
        not isinstance(values["num_oov_buckets"], int) or values["num_oov_buckets"] < 0
    ):
        raise ConfigError(f"{where}: num_oov_buckets must be an integer >= 0")
    return Feature(
        name=name,
        column=str(entry["column"]),
        transform=transform,
        **values,
    )


def validate(config: FeatureConfig, columns: Sequence[Column]) -> None:
    """Checks columns exist, types suit transforms, and output names are unique."""
    by_name = {c.name: c for c in columns}
    label = by_name.get(config.label.column)
    if label is None:
        raise ConfigError(f"--label: column {config.label.column!r} not found")
    if label.is_array or label.kind not in (Kind.INT, Kind.FLOAT, Kind.BYTES):
        raise ConfigError(
            f"--label: column {label.name!r} of type {label.display_type} "
            "cannot be a label"
        )
    outputs = {config.label_key.lower(): f"the label {config.label.column!r}"}
    for feature in config.features:
        column = by_name.get(feature.column)
        if column is None:
            raise ConfigError(
                f"--features: feature {feature.name!r} reads column "
                f"{feature.column!r}, which is not in the source"
            )
        _ = column.kind  # UnsupportedTypeError: unmapped types (jsonb, int[][])
        if column.is_array:
            raise ConfigError(
                f"--features: feature {feature.name!r}: array column {column.name!r} "
                "needs a --preprocessing_module (the built-in transforms are scalar)"
            )
        if column.kind not in _ALLOWED_KINDS[feature.transform]:
            raise ConfigError(
                f"--features: feature {feature.name!r}: {feature.transform} does not "
                f"apply to column {column.name!r} of type {column.display_type}"
            )
        if feature.transform == "passthrough" and feature.impute is not None:
            text = column.kind is Kind.BYTES
            allowed = {"token", "drop"} if text else _NUMERIC_IMPUTE
            if feature.impute not in allowed:
                raise ConfigError(
                    f"--features: feature {feature.name!r}: impute must be one of "
                    f"{sorted(allowed)} for passthrough of column {column.name!r} of "
                    f"type {column.display_type}, got {feature.impute!r}"
                )
        names = [feature.name] + ([feature.indicator_name] if feature.indicator else [])
        for name in names:
            other = outputs.get(name.lower())
            if other is not None:
                raise ConfigError(
                    f"--features: output name {name!r} of feature {feature.name!r} "
                    f"(column {feature.column!r}) is already used by {other} "
                    "(names must differ, also in case); rename one with 'name:'"
                )
            outputs[name.lower()] = (
                f"feature {feature.name!r} (column {feature.column!r})"
            )
