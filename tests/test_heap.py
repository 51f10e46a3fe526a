"""heap: what is frozen, when the collector is off, and that every job thaws."""

import gc

import pytest

from pipeline import heap
from pipeline.__main__ import main


class _Cycle:
    def __init__(self):
        self.me = self


@pytest.fixture(autouse=True)
def _collector_restored():
    enabled = gc.isenabled()
    yield
    heap.thaw()
    if enabled:
        gc.enable()


def test_long_lived_freezes_what_was_made_inside_and_turns_the_collector_back_on():
    heap.thaw()
    gc.enable()
    with heap.long_lived():
        assert not gc.isenabled()
        kept = [_Cycle() for _ in range(100)]
    assert gc.isenabled()
    assert gc.get_freeze_count() >= len(kept)
    assert all(gc.is_tracked(c) for c in kept)
    heap.thaw()
    assert gc.get_freeze_count() == 0


def test_frozen_cycles_are_kept_until_thawed_then_collected():
    heap.thaw()
    gc.collect()
    _Cycle()  # garbage at once, but only the collector can free a cycle
    heap.freeze()
    assert gc.collect() == 0  # frozen: not even looked at
    heap.thaw()
    assert gc.collect() >= 1  # given back: collected


def test_collection_paused_restores_the_previous_setting():
    gc.disable()
    with heap.collection_paused():
        assert not gc.isenabled()
    assert not gc.isenabled()  # was off: stays off
    gc.enable()
    with pytest.raises(RuntimeError), heap.collection_paused():
        raise RuntimeError("inside")
    assert gc.isenabled()  # back on after an error too


def test_a_refused_command_line_leaves_nothing_frozen(capsys):
    heap.thaw()
    assert main(["--no_such_flag"]) == 2
    assert gc.get_freeze_count() == 0
    assert gc.isenabled()
    assert "--no_such_flag" in capsys.readouterr().err
