"""A Beam plugin for SDK worker processes: failed bundles without a stderr traceback.

Without `--verbose`, `python -m pipeline` passes `--beam_plugin=pipeline.quiet_worker`:
Beam's worker processes (`--direct_running_mode=multi_processing`, portable runners)
import this module at start-up. Importing it mutes the traceback the SDK harness
prints to its stderr for each failed bundle; the failure still reaches the runner
(and our one error line) through the Fn API, as before. Importing it anywhere else
does the same to the current process; nothing else happens at import.
"""

from pipeline.console import mute_beam_worker_prints

mute_beam_worker_prints()
