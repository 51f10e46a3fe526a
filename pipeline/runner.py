"""Which Beam runner runs the job: the DirectRunner means the in-memory FnApiRunner.

Beam 2.77's `DirectRunner` (`SwitchingDirectRunner`) first tries the Prism runner:
it translates the whole graph into a runner-API proto, looks for the Prism binary,
downloads it from GitHub when it is missing, and only if that fails falls back to
the FnApiRunner, which then translates the graph again. That detour is a fixed
cost of every run (bench/RESULTS.md), and on a machine with
internet access it would run the job on a Go binary fetched at run time, a runner
this project does not test. So a batch job asked to run on the DirectRunner (the
default) goes straight to the FnApiRunner, built as `SwitchingDirectRunner` builds
it; `--direct_running_mode` and `--direct_num_workers` apply as usual. Any other
`--runner` (`PrismRunner` included, for whoever wants it) is Beam's to resolve.
"""

from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.runner import PipelineRunner

__all__ = ["pipeline_runner"]

_DIRECT_NAMES = (None, "DirectRunner", "SwitchingDirectRunner")


def pipeline_runner(options: PipelineOptions) -> PipelineRunner | None:
    """The FnApiRunner for a batch DirectRunner job; None: let Beam pick."""
    standard = options.view_as(StandardOptions)
    if standard.streaming or standard.runner not in _DIRECT_NAMES:
        return None
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    provision_info = fn_runner.ExtendedProvisionInfo(
        beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded)
    )
    return fn_runner.FnApiRunner(provision_info=provision_info)
