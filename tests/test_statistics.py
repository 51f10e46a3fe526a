"""Statistics accumulators on hand-made batches, against numpy and Counter (no Beam)."""

import collections
import math
import pickle

import numpy as np
import pyarrow as pa
import pytest

from pipeline import statistics as st


def _lists(rows, value_type):
    """A list<value_type> column; None rows become empty lists (tf.Transform's NULL)."""
    return pa.array([[] if r is None else r for r in rows], pa.list_(value_type))


def _batches(rng, n_batches=5):
    cities = ["Zürich", "", "New\nYork", "Lyon", "a b", "\u00e9"]
    out = []
    for _ in range(n_batches):
        n = int(rng.integers(1, 400))
        x = []
        for _ in range(n):
            u = rng.random()
            if u < 0.1:
                x.append(None)
            elif u < 0.12:
                x.append([math.nan])
            elif u < 0.14:
                x.append([math.inf if u < 0.13 else -math.inf])
            elif u < 0.16:
                x.append([0.0])
            else:
                x.append([float(np.float32(rng.normal(5, 200)))])
        ids = [[int(v)] for v in rng.integers(-(2**63), 2**63 - 1, size=n)]
        city = [None if rng.random() < 0.1 else [str(rng.choice(cities))] for _ in range(n)]
        arr = [
            None if rng.random() < 0.2 else [int(v) for v in rng.integers(-3, 3, size=rng.integers(0, 4))]
            for _ in range(n)
        ]
        out.append(
            pa.RecordBatch.from_arrays(
                [
                    _lists(x, pa.float32()),
                    _lists(ids, pa.int64()),
                    _lists([None if c is None else [c[0].encode()] for c in city], pa.binary()),
                    _lists(arr, pa.int64()),
                ],
                names=["x", "id", "city", "arr"],
            )
        )
    return out


def _flat(batches, name):
    rows = [r for b in batches for r in b.column(name).to_pylist()]
    return rows, [v for r in rows for v in r]


def _accumulate(batches, parts=2):
    """Adds the batches into `parts` accumulators, pickles them, merges them."""
    accs = [st.SplitStatistics.for_schema(batches[0].schema) for _ in range(parts)]
    for i, batch in enumerate(batches):
        accs[i % parts].add(batch)
    merged = pickle.loads(pickle.dumps(accs[0]))
    for acc in accs[1:]:
        merged.merge(pickle.loads(pickle.dumps(acc)))
    return merged.to_json()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_numbers_match_numpy(seed):
    batches = _batches(np.random.default_rng(seed))
    stats = _accumulate(batches, parts=seed + 1)
    rows, values = _flat(batches, "x")
    x = stats["features"]["x"]
    values = np.array(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    assert x["rows"] == len(rows) == stats["rows"]
    assert x["missing"] == sum(1 for r in rows if not r)
    assert x["non_finite"] == int(np.sum(~np.isfinite(values)))
    assert x["nan"] == int(np.sum(np.isnan(values)))
    assert x["finite"] == len(finite)
    assert x["zeros"] == int(np.sum(finite == 0))
    assert x["mean"] == pytest.approx(finite.mean(), rel=1e-12)
    assert x["std"] == pytest.approx(finite.std(), rel=1e-9)
    assert (x["min"], x["max"]) == (finite.min(), finite.max())
    # Deciles: within the sketch's rank error of the exact ones.
    ranks = np.sort(finite)
    for q, got in zip(np.linspace(0, 1, 11), x["quantiles"], strict=True):
        low = np.searchsorted(ranks, got, side="left") / len(ranks)
        high = np.searchsorted(ranks, got, side="right") / len(ranks)  # ties
        assert low - 0.005 - 1 / len(ranks) <= q <= high + 0.005 + 1 / len(ranks)
    _check_histogram(x["histogram"], finite)


def _check_histogram(value, numbers):
    hist = st.Histogram.from_json(value)
    assert hist.counts.sum() == len(numbers) and len(hist.counts) <= st.FINE_BINS
    for low, high, count in st.display_bins(hist):
        assert count == int(np.sum((numbers >= low) & (numbers < high)))
    bins = st.display_bins(hist)
    assert sum(c for *_, c in bins) == len(numbers) and len(bins) <= st.DISPLAY_BINS
    widths = {high - low for low, high, _ in bins}
    assert len(widths) == 1  # equal width


def test_huge_int64_exact():
    batches = _batches(np.random.default_rng(5))
    stats = _accumulate(batches, parts=3)
    _, values = _flat(batches, "id")
    ids = stats["features"]["id"]
    assert (ids["min"], ids["max"]) == (min(values), max(values))
    assert isinstance(ids["min"], int)
    hist = st.Histogram.from_json(ids["histogram"])
    edges = st.display_bins(hist)
    for low, high, count in edges:  # integer edges: exact membership, no float rounding
        assert count == sum(1 for v in values if low <= v < high)


def test_text_matches_counter():
    batches = _batches(np.random.default_rng(3))
    stats = _accumulate(batches, parts=2)
    rows, values = _flat(batches, "city")
    counts = collections.Counter(values)
    city = stats["features"]["city"]
    assert city["missing"] == sum(1 for r in rows if not r)
    assert city["unique"] == len(counts) and city["exact"]
    expected = sorted(counts.items(), key=lambda tc: (-tc[1], tc[0]))
    assert city["top"] == [[t.decode(), c] for t, c in expected]
    assert city["avg_length"] == pytest.approx(sum(map(len, values)) / len(values))


def test_array_list_lengths():
    batches = _batches(np.random.default_rng(4))
    stats = _accumulate(batches)
    rows, values = _flat(batches, "arr")
    arr = stats["features"]["arr"]
    lengths = [len(r) for r in rows]
    assert arr["num_values"] == {
        "min": min(lengths),
        "max": max(lengths),
        "mean": pytest.approx(np.mean(lengths)),
        "total": len(values),
    }
    assert arr["missing"] == lengths.count(0)
    assert arr["mean"] == pytest.approx(np.mean(values))


@pytest.mark.parametrize("large", [False, True])
def test_sliced_lists_with_null_rows_backed_by_values(large):
    # Row 1 is NULL but its offsets cover [9.0]; slices start mid-array.
    offsets = pa.array([0, 1, 2, 2, 4, 5, 7], pa.int64() if large else pa.int32())
    values = pa.array([1.0, 9.0, 2.0, 3.0, 4.0, 5.0, 6.0], pa.float32())
    cls = pa.LargeListArray if large else pa.ListArray
    mask = pa.array([False, True, False, False, False, False])
    with_null = cls.from_arrays(offsets, values, mask=mask)
    without_null = cls.from_arrays(offsets, values)
    for column, rows in (
        (with_null.slice(1, 4), [None, [], [2.0, 3.0], [4.0]]),
        (without_null.slice(2, 4), [[], [2.0, 3.0], [4.0], [5.0, 6.0]]),
    ):
        feature = st.FeatureStatistics("float")
        feature.add(column)
        out = feature.to_json()
        present = [v for r in rows if r for v in r]
        assert out["rows"] == len(rows)
        assert out["missing"] == sum(1 for r in rows if not r)
        assert out["num_values"]["total"] == len(present)
        assert out["num_values"]["max"] == max(len(r or []) for r in rows)
        assert (out["min"], out["max"]) == (min(present), max(present))
        assert out["mean"] == pytest.approx(np.mean(present))


def test_many_distinct_tokens_are_estimated_and_flagged():
    tokens = [f"t{i}".encode() for i in range(st.TOKEN_CAP * 2)] + [b"hot"] * 50
    batch = pa.RecordBatch.from_arrays([pa.array(tokens, pa.binary())], names=["t"])
    stats = st.SplitStatistics.for_schema(batch.schema)
    stats.add(batch)
    t = stats.to_json()["features"]["t"]
    assert not t["exact"]
    assert abs(t["unique"] - (2 * st.TOKEN_CAP + 1)) / (2 * st.TOKEN_CAP) < 0.05
    assert t["top"][0][0] == "hot"


def test_flat_columns_and_all_missing():
    batch = pa.RecordBatch.from_arrays(
        [pa.array([None, None], pa.float64()), pa.array([1, None], pa.int32())],
        names=["empty", "i"],
    )
    stats = st.SplitStatistics.for_schema(batch.schema)
    stats.add(batch)
    out = stats.to_json()["features"]
    assert out["empty"]["missing"] == 2 and out["empty"]["mean"] is None
    assert out["i"]["missing"] == 1 and out["i"]["min"] == out["i"]["max"] == 1
    proto = st.to_proto("train", {"raw": stats.to_json()})
    assert proto.datasets[0].num_examples == 2


@pytest.mark.parametrize(
    "values",
    [
        [0.0] * 5,
        [1e-300, 2e-300, 3e-300],
        [-3.4e38, 3.4e38],
        [1e308, -1e308, 0.0],
        [5e-324, 1.0],
        [-1.7976931348623157e308, 1.7976931348623157e308, 1.0],
    ],
)
@pytest.mark.parametrize("whole", [False, True])
def test_histogram_extremes(values, whole):
    """Also a batch spanning more than the largest float (its width overflowed)."""
    hist = st.Histogram(integer=False)
    for chunk in [values] if whole else (values[:1], values[1:]):
        hist.add(np.array(chunk, dtype=np.float64))
    numbers = np.array(values)
    assert hist.counts.sum() == len(values)
    assert 0 < len(hist.counts) <= st.FINE_BINS
    for low, high, count in st.display_bins(hist):
        assert count == int(np.sum((numbers >= low) & (numbers < high)))


def test_common_bins_share_edges():
    rng = np.random.default_rng(9)
    a_values, b_values = rng.normal(0, 1, 5000), rng.normal(3, 10, 700)
    a, b = st.Histogram(False), st.Histogram(False)
    a.add(a_values)
    b.add(b_values)
    edges, (ca, cb) = st.common_bins([a, b])
    assert len(edges) == len(ca) + 1 == len(cb) + 1 <= st.DISPLAY_BINS + 1
    for values, counts in ((a_values, ca), (b_values, cb)):
        expected = np.histogram(values, bins=edges)[0]
        # np.histogram closes the last bin; ours are half-open: equal unless a value
        # sits exactly on the last edge.
        assert counts.tolist() == expected.tolist()


def test_proto_fields():
    batches = _batches(np.random.default_rng(0))
    stats = _accumulate(batches)
    proto = st.to_proto("eval", {"raw": stats})
    dataset = proto.datasets[0]
    by_name = {f.path.step[0]: f for f in dataset.features}
    assert dataset.name == "eval" and dataset.num_examples == stats["rows"]
    x = by_name["x"].num_stats
    assert x.mean == stats["features"]["x"]["mean"]
    assert x.common_stats.num_missing == stats["features"]["x"]["missing"]
    assert sum(b.sample_count for b in x.histograms[0].buckets) == stats["features"]["x"]["finite"]
    city = by_name["city"].string_stats
    assert city.unique == stats["features"]["city"]["unique"]
    assert city.top_values[0].value == stats["features"]["city"]["top"][0][0]


def test_quantile_summary_rank_error_after_compactions():
    rng = np.random.default_rng(11)
    parts = [st.QuantileSummary() for _ in range(3)]
    chunks = [rng.lognormal(0, 2, int(rng.integers(1, 40_000))) for _ in range(60)]
    for i, chunk in enumerate(chunks):
        parts[i % 3].add(chunk)
    summary = pickle.loads(pickle.dumps(parts[0]))
    for part in parts[1:]:
        summary.merge(part)
    values = np.sort(np.concatenate(chunks))
    assert len(summary.values) <= 8 * summary.points  # compacted, bounded
    got = summary.quantiles(100, values[0], values[-1])
    assert got[0] == values[0] and got[-1] == values[-1]
    for q, value in zip(np.linspace(0, 1, 101), got, strict=True):
        rank = np.searchsorted(values, value, side="right") / len(values)
        assert abs(rank - q) < 0.005


def test_token_counts_exact_then_sketch_across_merges():
    rng = np.random.default_rng(12)
    cap = 50
    exact_part, big_part = st.TokenCounts(cap), st.TokenCounts(cap)
    low = [f"t{i}".encode() for i in rng.integers(0, 30, 500)]
    exact_part.add(pa.array(low, pa.binary()))
    assert exact_part.exact
    high = [f"u{i}".encode() for i in range(200)] + [b"t1"] * 400
    for chunk in (high[:300], high[300:]):
        big_part.add(pa.array(chunk, pa.binary()))
    big_part.result()
    assert not big_part.exact
    merged = pickle.loads(pickle.dumps(exact_part))
    merged.merge(big_part)
    unique, exact, tokens = merged.result()
    assert not exact and abs(unique - 230) <= 230 * 0.2
    expected = collections.Counter(low) + collections.Counter(high)
    total = sum(expected.values())
    assert tokens[0][0] == b"t1"  # the heavy hitter, its count within total / cap
    assert abs(tokens[0][1] - expected[b"t1"]) <= total / cap
    # Exact both sides: counts summed exactly, ties by bytes.
    a, b = st.TokenCounts(cap), st.TokenCounts(cap)
    a.add(pa.array([b"b", b"a", b"b"], pa.binary()))
    b.add(pa.array([b"a", b"c"], pa.binary()))
    a.merge(b)
    assert a.result() == (3, True, [(b"a", 2), (b"b", 2), (b"c", 1)])


def test_long_tokens_are_counted_whole_and_written_cut():
    long_a, long_b = b"x" * 1_000_000 + b"a", b"x" * 1_000_000 + b"b"
    batch = pa.RecordBatch.from_arrays(
        [pa.array([long_a, long_b, long_b, "€".encode() * 100], pa.binary())], names=["t"]
    )
    stats = st.SplitStatistics.for_schema(batch.schema)
    stats.add(batch)
    t = stats.to_json()["features"]["t"]
    assert t["unique"] == 3 and t["exact"]
    assert [c for _, c in t["top"]] == [2, 1, 1]
    assert t["top"][0][0] == "x" * 200 + "…(+999801 bytes)"
    assert t["top"][2][0] == "€" * 66 + "…(+102 bytes)"  # whole characters only
    assert max(len(x) for x, _ in t["token_counts"]) < 300


class _ReferenceSummary:
    """QuantileSummary as first written: every point's weight held, one array each."""

    def __init__(self, points=4096):
        self.points, self.values, self.weights = points, np.zeros(0), np.zeros(0)

    @staticmethod
    def _pick(values, weights, points):
        if weights is None:
            values = np.sort(values)
            index = ((np.arange(points) + 0.5) * (len(values) / points)).astype(int)
            return values[index], np.full(points, len(values) / points)
        order = np.argsort(values)
        values, weights = values[order], weights[order]
        cumulative = np.cumsum(weights)
        total = cumulative[-1]
        targets = (np.arange(points) + 0.5) * (total / points)
        index = np.minimum(np.searchsorted(cumulative, targets), len(values) - 1)
        return values[index], np.full(points, total / points)

    def add(self, values):
        if not len(values):
            return
        if len(values) > self.points:
            self._append(*self._pick(values, None, self.points))
        else:
            self._append(values.astype(np.float64), np.ones(len(values)))

    def _append(self, values, weights):
        self.values = np.concatenate([self.values, values])
        self.weights = np.concatenate([self.weights, weights])
        if len(self.values) > 8 * self.points:
            picked = self._pick(self.values, self.weights, self.points)
            self.values, self.weights = picked

    def merge(self, other):
        if len(other.values):
            self._append(other.values, other.weights)

    def quantiles(self, count, lowest, highest):
        if not len(self.values):
            return None
        order = np.argsort(self.values)
        values, cumulative = self.values[order], np.cumsum(self.weights[order])
        targets = np.arange(1, count) / count * cumulative[-1]
        index = np.minimum(np.searchsorted(cumulative, targets), len(values) - 1)
        return [float(lowest), *values[index].tolist(), float(highest)]


def _bits(values):
    return [np.float64(v).tobytes() for v in values]


_VALUES = [
    lambda rng, n: rng.lognormal(0, 2, n),  # float64, not float32-exact
    lambda rng, n: rng.normal(0, 1, n).astype(np.float32).astype(np.float64),
    lambda rng, n: rng.integers(-3, 4, n).astype(np.float64) * -1.0,  # -0.0 too
    lambda rng, n: rng.integers(1, 4, n).astype(np.float64),  # ties, no zero
    lambda rng, n: rng.choice(np.array([-0.0, 0.0, -1.0, 1.0]), n),  # both zeros
    lambda rng, n: rng.integers(-(2**31), 2**31, n).astype(np.float64),
    lambda rng, n: rng.integers(-(2**53), 2**53, n).astype(np.float64),
]


@pytest.mark.parametrize("make", _VALUES)
def test_quantile_summary_pickled_and_merged_matches_reference(make):
    """Same points, bit for bit, as the reference through adds, pickles and merges."""
    rng = np.random.default_rng(13)
    sizes = [int(rng.integers(1, 9000)) for _ in range(40)]
    chunks = [make(rng, n) for n in sizes]
    parts = [st.QuantileSummary() for _ in range(4)]
    refs = [_ReferenceSummary() for _ in range(4)]
    for i, chunk in enumerate(chunks):
        parts[i % 4].add(chunk)
        refs[i % 4].add(chunk)
        if i % 7 == 0:  # a Beam stage boundary mid-way
            parts[i % 4] = pickle.loads(pickle.dumps(parts[i % 4]))
    merged, ref = st.QuantileSummary(), _ReferenceSummary()
    for part, ref_part in zip(parts, refs, strict=True):
        part = pickle.loads(pickle.dumps(part, pickle.HIGHEST_PROTOCOL))
        assert _bits(part.values) == _bits(ref_part.values)
        assert _bits(part.weights) == _bits(ref_part.weights)
        merged.merge(part)
        ref.merge(ref_part)
        merged = pickle.loads(pickle.dumps(merged))
    lo, hi = min(c.min() for c in chunks), max(c.max() for c in chunks)
    assert _bits(merged.values) == _bits(ref.values)
    assert _bits(merged.weights) == _bits(ref.weights)
    for count in (10, 100):
        got, want = merged.quantiles(count, lo, hi), ref.quantiles(count, lo, hi)
        assert _bits(got) == _bits(want)


@pytest.mark.parametrize("make", _VALUES)
def test_quantile_summary_of_unit_weights_matches_reference(make):
    """Small batches, no compaction yet (the sorted shortcut): the same quantiles."""
    rng = np.random.default_rng(17)
    summary, ref = st.QuantileSummary(), _ReferenceSummary()
    chunks = [make(rng, int(rng.integers(1, 3000))) for _ in range(10)]
    for chunk in chunks:
        summary.add(chunk)
        ref.add(chunk)
        assert summary.quantiles(10, 0, 1) is not None
        assert set(summary.weights.tolist()) == {1.0}  # still uncompacted
        for count in (3, 10, 100):
            got, want = summary.quantiles(count, 0, 1), ref.quantiles(count, 0, 1)
            assert _bits(got) == _bits(want)


def test_quantile_summary_pickle_is_small():
    rng = np.random.default_rng(14)
    summary = st.QuantileSummary()
    for _ in range(8):
        summary.add(rng.normal(0, 1, 4000).astype(np.float32).astype(np.float64))
    assert len(summary.values) == 32_000  # no compaction yet: 8 chunks of weight 1
    # float32-exact values as 4 bytes each, one weight per chunk (was 16 bytes a point)
    assert len(pickle.dumps(summary, pickle.HIGHEST_PROTOCOL)) < 4 * 32_000 + 1000
    small = st.QuantileSummary()
    small.add(rng.integers(-100, 100, 4000).astype(np.float64))
    assert len(pickle.dumps(small, pickle.HIGHEST_PROTOCOL)) < 4000 + 1000  # int8
    assert pickle.loads(pickle.dumps(st.QuantileSummary())).quantiles(10, 0, 1) is None
