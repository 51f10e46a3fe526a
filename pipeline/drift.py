"""Drift between two sets of statistics, schema drift, and the anomalies they raise.

Pure module. Numbers: the Jensen-Shannon divergence (base 2, so 0 = same
distribution, 1 = disjoint) of the two exact histograms over shared equal-width bins
(`histogram.common_bins`: at most 24 bins over the union of both ranges; finite
values only). Text: the L-infinity distance, the largest difference of a token's
share of all values between the two sides, over the tokens the statistics keep
(all of them while a side has fewer than `TOKEN_CAP` distinct values; otherwise the
most frequent `DRIFT_TOKENS`, and the distance is marked approximate). Every
number is kept in the result, over its threshold or not.

Schema drift compares the catalog columns recorded in two manifests: columns
added or dropped, type or nullability changed. Every schema change is an anomaly.
The manifests record type names without their modifiers (`numeric`, not
`numeric(10,2)`), so a precision or length change alone is not seen.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pipeline.histogram import Histogram, common_bins

__all__ = [
    "AnomaliesError",
    "Thresholds",
    "js_divergence",
    "linf_distance",
    "compare",
    "schema_drift",
    "check",
]


class AnomaliesError(RuntimeError):
    """`--fail_on_anomalies` and a check failed; the message lists the anomalies."""


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """Drift above these values is an anomaly."""

    js_divergence: float = 0.1
    linf_distance: float = 0.1


def js_divergence(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Jensen-Shannon divergence (log base 2) of two count vectors; None if empty."""
    p, q = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if p.sum() <= 0 or q.sum() <= 0:
        return None
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2

    def kl(x):
        mask = x > 0
        return float(np.sum(x[mask] * np.log2(x[mask] / m[mask])))

    return max(0.0, min(1.0, (kl(p) + kl(q)) / 2))


def linf_distance(
    a: Sequence[Sequence], total_a: int, b: Sequence[Sequence], total_b: int
) -> tuple[float | None, str | None]:
    """(L-infinity distance of token shares, the token where it is largest)."""
    if total_a <= 0 or total_b <= 0:
        return None, None
    shares_a = {t: c / total_a for t, c in a}
    shares_b = {t: c / total_b for t, c in b}
    best, token = 0.0, None
    for t in sorted(set(shares_a) | set(shares_b)):
        diff = abs(shares_a.get(t, 0.0) - shares_b.get(t, 0.0))
        if diff > best:
            best, token = diff, t
    return best, token


def _feature_drift(a: Mapping, b: Mapping, thresholds: Thresholds) -> dict | None:
    if a["kind"] != b["kind"]:
        return None
    if a["kind"] == "bytes":
        value, token = linf_distance(
            a["token_counts"],
            a["num_values"]["total"],
            b["token_counts"],
            b["num_values"]["total"],
        )
        out = {
            "metric": "linf_distance",
            "value": value,
            "token": token,
            "exact": bool(a["exact"] and b["exact"]),
            "threshold": thresholds.linf_distance,
        }
    else:
        ha, hb = (
            Histogram.from_json(a["histogram"]),
            Histogram.from_json(b["histogram"]),
        )
        value, edges, ca, cb = None, [], [], []
        if ha.k is not None and hb.k is not None:
            edges, (ca, cb) = common_bins([ha, hb])
            value = js_divergence(ca, cb)
        out = {
            "metric": "js_divergence",
            "value": value,
            "edges": [float(e) for e in edges],
            "counts": [list(map(int, ca)), list(map(int, cb))],
            "threshold": thresholds.js_divergence,
        }
    out["over"] = out["value"] is not None and out["value"] > out["threshold"]
    return out


def compare(
    a: Mapping[str, Any], b: Mapping[str, Any], thresholds: Thresholds
) -> dict[str, dict]:
    """Drift of every feature both `SplitStatistics.to_json()` values have."""
    result = {}
    for name in sorted(set(a["features"]) & set(b["features"])):
        drift = _feature_drift(a["features"][name], b["features"][name], thresholds)
        if drift is not None:
            result[name] = drift
    return result


def schema_drift(
    now: Sequence[Mapping[str, Any]], before: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Column changes between two manifests' `source.columns` lists."""
    now_by, before_by = {c["name"]: c for c in now}, {c["name"]: c for c in before}
    changes = []
    for name in sorted(set(now_by) | set(before_by)):
        old, new = before_by.get(name), now_by.get(name)
        if old is None:
            changes.append({"column": name, "change": "added", "after": new["type"]})
        elif new is None:
            changes.append({"column": name, "change": "dropped", "before": old["type"]})
        else:
            if old.get("type") != new.get("type"):
                changes.append(
                    {
                        "column": name,
                        "change": "type",
                        "before": old.get("type"),
                        "after": new.get("type"),
                    }
                )
            if bool(old.get("not_null")) != bool(new.get("not_null")):
                changes.append(
                    {
                        "column": name,
                        "change": "nullability",
                        "before": _nullability(old),
                        "after": _nullability(new),
                    }
                )
    return changes


def _nullability(column: Mapping[str, Any]) -> str:
    return "NOT NULL" if column.get("not_null") else "nullable"


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.4f}"


def _over(drift: Mapping[str, Mapping], pair: str) -> list[str]:
    """One anomaly line per feature whose drift is over its threshold."""
    return [
        f"{feature}: {d['metric']} {pair} {_fmt(d['value'])} > {d['threshold']}"
        for feature, d in drift.items()
        if d["over"]
    ]


def check(
    statistics: Mapping[str, Mapping[str, Any]],
    columns: Sequence[Mapping[str, Any]],
    thresholds: Thresholds,
    baseline: tuple[Mapping, Mapping] | None = None,
) -> dict[str, Any]:
    """Train vs every other split, each split vs the baseline's, schema drift.

    Args:
        statistics: {split: {"raw": SplitStatistics JSON, ...}} of this run.
        columns: this run's catalog columns (the manifest's `source.columns`).
        thresholds: drift above them is an anomaly.
        baseline: (statistics, manifest) of an earlier output, or None.

    Returns:
        {"thresholds", "splits": {"train_vs_eval": {feature: drift}}, "baseline":
        {split: {feature: drift}}, "schema": [changes], "anomalies": [one-liners]}.
    """
    result: dict[str, Any] = {
        "thresholds": dataclasses.asdict(thresholds),
        "splits": {},
        "baseline": None,
        "schema": [],
        "anomalies": [],
    }
    names = list(statistics)
    first = names[0] if names else None
    for other in names[1:]:
        key = f"{first}_vs_{other}"
        drift = compare(statistics[first]["raw"], statistics[other]["raw"], thresholds)
        result["splits"][key] = drift
        result["anomalies"] += _over(drift, f"{first} vs {other}")
    if baseline is not None:
        base_stats, base_manifest = baseline
        result["baseline"] = {}
        for name in names:
            if name not in base_stats:
                continue
            drift = compare(
                base_stats[name]["raw"], statistics[name]["raw"], thresholds
            )
            result["baseline"][name] = drift
            result["anomalies"] += _over(drift, f"{name} vs baseline")
        result["schema"] = schema_drift(columns, base_manifest["source"]["columns"])
        for change in result["schema"]:
            detail = ", ".join(
                f"{k} {change[k]}" for k in ("before", "after") if k in change
            )
            result["anomalies"].append(
                f"column {change['column']}: {change['change']} since the baseline "
                f"({detail})"
            )
    return result
