"""Drift metrics and schema drift on hand-made inputs (pure, no Beam)."""

import math

import numpy as np
import pyarrow as pa
import pytest

from pipeline import drift
from pipeline.statistics import SplitStatistics


def test_js_divergence_bounds_and_symmetry():
    assert drift.js_divergence([1, 2, 3], [2, 4, 6]) == 0.0
    assert drift.js_divergence([5, 0], [0, 7]) == 1.0  # disjoint, base 2
    p, q = [3, 1, 0, 2], [1, 1, 4, 0]
    assert drift.js_divergence(p, q) == pytest.approx(drift.js_divergence(q, p))
    pn, qn = np.array(p) / 6, np.array(q) / 6
    m = (pn + qn) / 2
    kl = lambda a: sum(x * math.log(x / y) for x, y in zip(a, m) if x > 0)  # noqa: E731
    assert drift.js_divergence(p, q) == pytest.approx((kl(pn) + kl(qn)) / 2 / math.log(2))
    assert drift.js_divergence([0, 0], [1, 2]) is None


def test_linf_over_token_shares():
    value, token = drift.linf_distance([["a", 6], ["b", 4]], 10, [["b", 9], ["c", 1]], 10)
    assert value == pytest.approx(0.6) and token == "a"
    assert drift.linf_distance([], 0, [["a", 1]], 1) == (None, None)


def _split(values, tokens):
    batch = pa.RecordBatch.from_arrays(
        [pa.array(values, pa.float64()), pa.array(tokens, pa.binary())], names=["v", "t"]
    )
    stats = SplitStatistics.for_schema(batch.schema)
    stats.add(batch)
    return {"raw": stats.to_json()}


def test_check_flags_only_over_threshold_and_keeps_numbers():
    rng = np.random.default_rng(1)
    train = _split(rng.normal(0, 1, 4000).tolist(), [b"a"] * 3000 + [b"b"] * 1000)
    same = _split(rng.normal(0, 1, 1000).tolist(), [b"a"] * 740 + [b"b"] * 260)
    moved = _split(rng.normal(4, 1, 1000).tolist(), [b"a"] * 300 + [b"b"] * 700)
    columns = [{"name": "v", "type": "double precision", "not_null": False}]
    ok = drift.check({"train": train, "eval": same}, columns, drift.Thresholds())
    assert ok["anomalies"] == []
    assert 0 < ok["splits"]["train_vs_eval"]["v"]["value"] < 0.1
    assert ok["splits"]["train_vs_eval"]["t"]["value"] == pytest.approx(0.01)
    bad = drift.check({"train": train, "eval": moved}, columns, drift.Thresholds())
    assert [a.split(":")[0] for a in bad["anomalies"]] == ["t", "v"]
    assert bad["splits"]["train_vs_eval"]["t"]["value"] == pytest.approx(0.45)
    assert bad["splits"]["train_vs_eval"]["t"]["over"] is True
    loose = drift.check({"train": train, "eval": moved}, columns, drift.Thresholds(1, 1))
    assert loose["anomalies"] == [] and loose["splits"]["train_vs_eval"]["v"]["value"] > 0.5


def test_schema_drift_lists_every_change():
    before = [
        {"name": "a", "type": "integer", "not_null": True},
        {"name": "b", "type": "text", "not_null": False},
        {"name": "gone", "type": "date", "not_null": False},
    ]
    now = [
        {"name": "a", "type": "bigint", "not_null": False},
        {"name": "b", "type": "text", "not_null": False},
        {"name": "new \"odd\" name", "type": "text", "not_null": True},
    ]
    changes = drift.schema_drift(now, before)
    assert changes == [
        {"column": "a", "change": "type", "before": "integer", "after": "bigint"},
        {"column": "a", "change": "nullability", "before": "NOT NULL", "after": "nullable"},
        {"column": "gone", "change": "dropped", "before": "date"},
        {"column": 'new "odd" name', "change": "added", "after": "text"},
    ]
    assert drift.schema_drift(before, before) == []
