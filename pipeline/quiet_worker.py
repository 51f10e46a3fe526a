"""A Beam plugin for SDK worker processes: failures and Ctrl-C without tracebacks.

Without `--verbose`, `python -m pipeline` passes `--beam_plugin=pipeline.quiet_worker`:
Beam's worker processes (`--direct_running_mode=multi_processing`, portable runners)
import this module at start-up. Importing it mutes the traceback the SDK harness
prints to its stderr for each failed bundle (the failure still reaches the runner,
and our one error line, through the Fn API). In a worker process started as
`apache_beam.runners.worker.sdk_worker_main`, it also makes SIGINT — which a
terminal's Ctrl-C sends to the launcher and its workers alike — end the worker
quietly with 130: the launcher reports the interrupt in its one line.
"""

import os
import signal
import sys
import threading

from pipeline.console import mute_beam_worker_prints

_WORKER_MAIN = "apache_beam.runners.worker.sdk_worker_main"


def _is_worker_process() -> bool:
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return getattr(spec, "name", None) == _WORKER_MAIN


mute_beam_worker_prints()
if _is_worker_process() and threading.current_thread() is threading.main_thread():
    signal.signal(signal.SIGINT, lambda signum, frame: os._exit(128 + signum))
