"""The DirectRunner goes straight to the FnApiRunner; other runners are Beam's."""

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability import prism_runner
from apache_beam.runners.portability.fn_api_runner import fn_runner
from apache_beam.testing.util import assert_that, equal_to

from pipeline.runner import pipeline_runner


@pytest.mark.parametrize(
    "flags",
    [
        [],
        ["--runner=DirectRunner"],
        ["--direct_running_mode=multi_threading", "--direct_num_workers=2"],
    ],
)
def test_pipeline_runner_direct_is_the_fn_api_runner(flags):
    assert isinstance(pipeline_runner(PipelineOptions(flags)), fn_runner.FnApiRunner)


@pytest.mark.parametrize(
    "flags",
    [
        ["--runner=PortableRunner", "--job_endpoint=embed"],
        ["--runner=PrismRunner"],
        ["--runner=DataflowRunner"],
        ["--streaming"],
    ],
)
def test_pipeline_runner_leaves_other_runners_to_beam(flags):
    assert pipeline_runner(PipelineOptions(flags)) is None


def test_pipeline_runner_never_tries_prism(monkeypatch):
    tried = []
    original = prism_runner.PrismRunner.run_pipeline

    def record(self, pipeline, options):
        tried.append(options)
        return original(self, pipeline, options)

    monkeypatch.setattr(prism_runner.PrismRunner, "run_pipeline", record)
    options = PipelineOptions([])
    with beam.Pipeline(runner=pipeline_runner(options), options=options) as p:
        squares = p | beam.Create([1, 2, 3]) | beam.Map(lambda x: x * x)
        assert_that(squares, equal_to([1, 4, 9]))
    assert tried == []
