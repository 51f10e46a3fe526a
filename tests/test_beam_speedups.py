"""beam_speedups: each shortcut gives exactly Beam's answers, or measures the same."""
# ruff: noqa: B008 - Beam declares state and timer parameters as defaults

import time

import apache_beam as beam
import pytest
from apache_beam.coders import VarIntCoder
from apache_beam.transforms import userstate
from apache_beam.transforms.timeutil import TimeDomain

from pipeline import beam_speedups

BAG = userstate.BagStateSpec("bag", VarIntCoder())
TIMER = userstate.TimerSpec("timer", TimeDomain.WATERMARK)


class _Plain(beam.DoFn):
    def process(self, element):
        yield element


class _Stateful(beam.DoFn):
    def process(
        self,
        element,
        bag=beam.DoFn.StateParam(BAG),
        timer=beam.DoFn.TimerParam(TIMER),
    ):
        yield element

    @userstate.on_timer(TIMER)
    def expire(self, bag=beam.DoFn.StateParam(BAG)):
        yield 0


class _Duplicate(beam.DoFn):
    def process(
        self, element, a=beam.DoFn.StateParam(BAG), b=beam.DoFn.StateParam(BAG)
    ):
        yield element


def _method(element):
    return element


@pytest.mark.parametrize(
    "dofn", [_Plain(), _Stateful(), beam.Map(_method).fn, beam.Map(str.upper).fn]
)
def test_cached_specs_equal_beams(dofn):
    expected = beam_speedups._ORIGINAL(dofn)
    assert beam_speedups.cached_get_dofn_specs(dofn) == expected
    again = beam_speedups.cached_get_dofn_specs(dofn)  # from the cache
    assert again == expected
    again[0].add("mutated")  # callers get copies
    assert beam_speedups.cached_get_dofn_specs(dofn) == expected


def test_stateful_dofn_specs_are_found():
    states, timers = beam_speedups.cached_get_dofn_specs(_Stateful())
    assert states == {BAG} and timers == {TIMER}


def test_errors_are_raised_every_time_and_never_cached():
    for _ in range(2):
        with pytest.raises(ValueError, match="duplicate"):
            beam_speedups.cached_get_dofn_specs(_Duplicate())


def test_install_routes_beam_through_the_cache():
    before = userstate.get_dofn_specs
    try:
        beam_speedups.install()
        beam_speedups.install()  # idempotent
        assert userstate.get_dofn_specs is beam_speedups.cached_get_dofn_specs
        assert userstate.is_stateful_dofn(_Stateful())
        assert not userstate.is_stateful_dofn(_Plain())
    finally:
        userstate.get_dofn_specs = before


def test_cached_views_share_the_options_state():
    from apache_beam.options.pipeline_options import (
        DebugOptions,
        PipelineOptions,
        StandardOptions,
    )

    options = PipelineOptions(["--runner=DirectRunner", "--experiments=a"])
    fresh = beam_speedups._ORIGINAL_VIEW_AS(options, StandardOptions)
    view = beam_speedups.cached_view_as(options, StandardOptions)
    assert beam_speedups.cached_view_as(options, StandardOptions) is view
    assert view.runner == fresh.runner == "DirectRunner"
    view.runner = "FnApiRunner"  # a write through the cached view ...
    assert fresh.runner == "FnApiRunner"  # ... is the options' own
    assert beam_speedups._ORIGINAL_VIEW_AS(options, StandardOptions).runner == (
        "FnApiRunner"
    )
    fresh.streaming = True  # and a write elsewhere is seen by the cached view
    assert view.streaming is True
    debug = beam_speedups.cached_view_as(options, DebugOptions)
    assert debug.experiments == ["a"]
    other = PipelineOptions([])  # another options object gets its own views
    assert beam_speedups.cached_view_as(other, StandardOptions).runner is None


def test_installed_view_as_serves_pipelines():
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.testing.util import assert_that, equal_to

    beam_speedups.install()
    assert PipelineOptions.view_as is beam_speedups.cached_view_as
    with beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"])) as p:
        assert_that(
            p | beam.Create([1, 2]) | beam.Map(lambda x: x * 3), equal_to([3, 6])
        )


def test_memoized_bz2_gives_bz2s_bytes_and_reads_them():
    import bz2

    payloads = [b"", b"x" * 5000, bytes(range(256)) * 7]
    for data in payloads:
        compressed = beam_speedups.MemoizedBz2.compress(data)
        assert compressed == bz2.compress(data, 9)
        assert beam_speedups.MemoizedBz2.compress(data) is compressed  # remembered
        assert beam_speedups.MemoizedBz2.decompress(compressed) == data
    view = memoryview(b"not bytes")  # other buffers bypass the cache
    assert beam_speedups.MemoizedBz2.compress(view, 1) == bz2.compress(b"not bytes", 1)


def test_pickled_dofns_are_unchanged_by_the_bz2_memo(monkeypatch):
    import bz2

    from apache_beam.internal import cloudpickle_pickler, pickler

    beam_speedups.install()
    assert cloudpickle_pickler.bz2 is beam_speedups.MemoizedBz2
    fn = beam.Map(_method).fn
    memoized = pickler.dumps(fn)
    assert pickler.dumps(fn) == memoized
    with monkeypatch.context() as patch:
        patch.setattr(cloudpickle_pickler, "bz2", bz2)  # Beam's own
        assert pickler.dumps(fn) == memoized
        plain_loaded = pickler.loads(memoized)  # a worker without the memo
    assert pickler.loads(memoized).process(4) == plain_loaded.process(4) == [4]


def test_installed_state_sampler_sleeps_at_most_the_cap_and_still_samples():
    from apache_beam.runners.worker import statesampler
    from apache_beam.utils.counters import CounterFactory

    before = statesampler.StateSampler
    try:
        beam_speedups.install()
        beam_speedups.install()  # idempotent: still one level of subclassing
        assert statesampler.StateSampler is beam_speedups.PromptStateSampler
        factory = CounterFactory()
        sampler = statesampler.StateSampler("stage", factory)
        assert sampler.sampling_period_ms == beam_speedups.STATE_SAMPLING_PERIOD_MS
        finer = statesampler.StateSampler("stage", factory, sampling_period_ms=1)
        assert finer.sampling_period_ms == 1  # a finer period asked for is kept
        sampler.start()
        started = time.monotonic()
        with sampler.scoped_state("step", "busy"):
            time.sleep(0.3)  # the work measured, not a wait for another thread
        elapsed_ms = (time.monotonic() - started) * 1000
        sampler.stop()
        sampler.commit_counters()
        (counter,) = [c for c in factory.get_counters() if c.name.name == "busy-msecs"]
        # The sampler still measures the step: its time, within a sampling period
        # (bounded by the time that really passed, however loaded the machine).
        assert 200 <= counter.value() <= elapsed_ms + 2 * beam_speedups.STATE_SAMPLING_PERIOD_MS
    finally:
        statesampler.StateSampler = before


@pytest.mark.parametrize("how", ["another Beam version", "switched off"])
def test_install_changes_nothing_on_another_beam_version_or_when_switched_off(
    monkeypatch, caplog, how
):
    if how == "another Beam version":
        monkeypatch.setattr(beam_speedups.apache_beam, "__version__", "2.78.0")
    else:
        monkeypatch.setenv(beam_speedups.OFF_SWITCH, "0")
    monkeypatch.setattr(beam_speedups, "_SKIPS_LOGGED", set())
    before = (userstate.get_dofn_specs, beam.options.pipeline_options.PipelineOptions.view_as)
    with caplog.at_level("INFO", logger="pipeline.beam_speedups"):
        beam_speedups.install()
        beam_speedups.install()
    assert not beam_speedups.enabled()
    assert (userstate.get_dofn_specs,
            beam.options.pipeline_options.PipelineOptions.view_as) == before
    skipped = [r for r in caplog.records if "not applied" in r.getMessage()]
    assert len(skipped) == 1  # said once


def test_job_output_is_identical_with_and_without_the_speedups(
    database_url, make_table, tmp_path
):
    """Two runs of the same table, patched and unpatched: every example, every file.

    Both switches (Beam's and tf.Transform's speed-ups) flip together.
    """
    import os
    import subprocess
    import sys

    from bench.compare import compare_outputs
    from pipeline import tft_speedups

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    table = make_table(
        "CREATE TABLE {table} (id int PRIMARY KEY, x float8, c text, t timestamptz, "
        "y int NOT NULL)",
        "INSERT INTO {table} SELECT g, CASE WHEN g % 7 = 0 THEN NULL ELSE sin(g) END, "
        "'c' || (g % 13), timestamptz '2024-01-01' + g * interval '37 minutes', g % 2 "
        "FROM generate_series(1, 3000) g",
    )
    outputs = {}
    for switch in ("1", "0"):
        out = tmp_path / f"out{switch}"
        env = {
            **os.environ,
            "PYTHONPATH": root,
            beam_speedups.OFF_SWITCH: switch,
            tft_speedups.OFF_SWITCH: switch,
        }
        done = subprocess.run(
            [sys.executable, "-m", "pipeline", "--db_url", database_url, "--table",
             table, "--label", "y", "--output_dir", str(out), "--num_partitions", "2",
             "--no_statistics", "--verbose"],
            cwd=root, env=env, capture_output=True, text=True, timeout=600,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        for name in ("Beam speed-ups", "tf.Transform speed-up"):
            applied = f"{name} not applied" not in done.stderr
            assert applied == (switch == "1"), name
        outputs[switch] = str(out)
    assert compare_outputs(outputs["1"], outputs["0"]) == []
