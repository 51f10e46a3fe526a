"""Pure partition planning: no gaps, no overlaps, NULL keys once."""

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.sources.partitioning import (
    default_num_partitions,
    plan_block_ranges,
    plan_key_ranges,
    plan_leaves,
    plan_single,
)


def _selects(partition, key):
    """Evaluates a partition predicate in Python, with SQL NULL/NaN semantics."""
    if partition.kind == "all":
        return True
    if partition.kind == "null":
        return key is None
    if key is None:
        return False
    rank = (1, 0) if isinstance(key, float) and math.isnan(key) else (0, key)
    if partition.lower is not None and rank < (0, partition.lower):
        return False
    if partition.upper is not None and not rank < (0, partition.upper):
        return False
    return True


def _block_selects(partition, block):
    lo = partition.lower if partition.lower is not None else 0
    return block >= lo and (partition.upper is None or block < partition.upper)


@settings(deadline=None)  # up to 10k blocks checked: slow on a busy machine
@given(st.integers(0, 10_000), st.integers(1, 100))
def test_plan_block_ranges_cover_every_block_once(pages, n):
    plan = plan_block_ranges(pages, n)
    assert 1 <= len(plan) <= max(1, min(n, pages))
    assert plan[0].lower is None and plan[-1].upper is None  # open at both ends
    for block in list(range(0, pages + 5)):  # + blocks added after planning
        assert sum(_block_selects(p, block) for p in plan) == 1
    assert [p.index for p in plan] == list(range(len(plan)))


def test_plan_block_ranges_are_balanced():
    sizes = [
        (p.upper or 1000) - (p.lower or 0) for p in plan_block_ranges(1000, 7)
    ]
    assert max(sizes) - min(sizes) <= 1


keys = st.one_of(
    st.none(),
    st.integers(-(2**63), 2**63 - 1),
)


@settings(max_examples=200)
@given(st.lists(keys, max_size=50), st.lists(keys, max_size=20))
def test_plan_key_ranges_select_every_key_exactly_once(rows, bounds):
    plan = plan_key_ranges(bounds)
    assert plan[-1].kind == "null"
    for key in rows + [b for b in bounds]:
        assert sum(_selects(p, key) for p in plan) == 1, key


@given(
    st.lists(st.floats(allow_nan=True, allow_infinity=True) | st.none(), max_size=30),
    st.lists(st.floats(allow_nan=False, allow_infinity=True), max_size=10),
)
def test_plan_key_ranges_handle_nan_and_infinity(rows, bounds):
    plan = plan_key_ranges(bounds + [float("nan")])  # NaN bounds are ignored
    for key in rows:
        assert sum(_selects(p, key) for p in plan) == 1, key


def test_plan_key_ranges_without_bounds_is_not_null_plus_null():
    plan = plan_key_ranges([])
    assert [(p.kind, p.lower, p.upper) for p in plan] == [
        ("range", None, None),
        ("null", None, None),
    ]


def test_plan_single_reads_everything():
    assert [p.kind for p in plan_single()] == ["all"]


def test_default_num_partitions_scales_with_rows_and_is_bounded():
    assert default_num_partitions(-1) == 1
    assert default_num_partitions(0) == 1
    assert default_num_partitions(250_000) == 1
    assert default_num_partitions(250_001) == 2
    assert default_num_partitions(10**12) == 64


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 300), st.booleans()), min_size=1, max_size=8),
    st.integers(1, 40),
)
def test_plan_leaves_reads_every_block_of_every_leaf_once(leaves, n):
    spec = [(f"ONLY l{i}", f"s.l{i}", pages, by_blocks)
            for i, (pages, by_blocks) in enumerate(leaves)]
    plan = plan_leaves(spec, n)
    assert [p.index for p in plan] == list(range(len(plan)))
    for relation, _, pages, by_blocks in spec:
        mine = [p for p in plan if p.relation == relation]
        if not by_blocks:  # a foreign leaf: read whole, never resumed by count
            assert [(p.kind, p.resumable) for p in mine] == [("all", False)]
        elif pages == 0:  # empty (it cannot grow visible rows in the snapshot)
            assert mine == []
        else:
            assert all(p.resumable for p in mine)
            for block in range(pages + 3):
                assert sum(_block_selects(p, block) for p in mine) == 1
    assert len({p.label for p in plan}) == len(plan)


def test_plan_leaves_spreads_partitions_by_size():
    plan = plan_leaves([("ONLY a", "s.a", 900, True), ("ONLY b", "s.b", 100, True)], 10)
    assert [p.relation for p in plan].count("ONLY a") == 9
    assert plan[-1].label == "p9:blocks[-inf,+inf) of s.b"
