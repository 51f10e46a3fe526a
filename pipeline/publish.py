"""Publishing an output: build it beside the target, swap it in once the job succeeded.

A run never writes into `--output_dir` or `--raw_parquet_dir` itself. It builds
everything in a staging directory beside the target,
`<parent>/.<name>.sql2tfrecord-staging-<run>`, whose first file is the marker
`.sql2tfrecord` (format, kind, run id, host, pid), and swaps it into place at the end:

* Local filesystem: `renameat2(RENAME_EXCHANGE)` swaps the two directories in one
  step (Linux: ext4, xfs, btrfs, tmpfs); where it is missing, two renames, old ->
  `.<name>.sql2tfrecord-old-<run>` and staging -> target. A crash between those two
  leaves no directory at the target, the complete old output in the `-old-`
  directory and the complete new one in staging; the next run for that target puts
  the old one back. The replaced output is deleted last.
* gs://, s3:// and other object stores (no directory rename): the old manifest is
  deleted first, then the old files, then every new file is moved, the manifest
  last. A crash during these seconds leaves a target without a manifest
  (incomplete, never complete-looking); a crash before them, the old output.

Only an output of ours is ever replaced, and only with `--overwrite`
(`pipeline.ownership` decides what is ours); the target is checked before the run
and again just before the swap. A failed run deletes its staging directory; one
left by a killed process (same host, pid gone) is deleted by the next run for the
same target. All paths go through Beam's `FileSystems` except local renames.
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import json
import logging
import os
import shutil
import socket
import time
import uuid

from apache_beam.io.filesystems import FileSystems

from pipeline import ownership
from pipeline.ownership import FORMAT, MARKER, DirState, check_target, inspect_dir
from pipeline.sink.output import OutputError, join

__all__ = [
    "Publication",
    "plan_publication",
    "begin",
    "publish",
    "abandon",
]

_LOGGER = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Publication:
    """Where a run builds one output (`staging`) and where it publishes it (`final`).

    `final` is the target with symbolic links resolved (local paths): a link to a
    directory keeps pointing at the output.
    """

    path: str  # as the user typed it, for messages
    final: str
    staging: str
    run_id: str
    kind: str  # "tfrecord" or "parquet"
    flag: str
    overwrite: bool


def _split_path(final: str) -> tuple[str, str]:
    if ownership.is_local(final):
        return os.path.split(final)
    scheme, rest = final.split("://", 1)
    if "/" not in rest.strip("/"):
        return "", ""
    parent, base = rest.rstrip("/").rsplit("/", 1)
    return f"{scheme}://{parent}", base


def plan_publication(
    path: str, overwrite: bool, kind: str = "tfrecord", flag: str = "--output_dir"
) -> Publication:
    """Checks the target before anything runs; cleans leftovers of killed runs.

    Raises:
        OutputError: the target holds something we did not write, or cannot be
            built beside (a bucket root, an unwritable parent, a mount point).
        OutputExistsError: it holds our output and `overwrite` is false.
    """
    final = ownership.normalized(path)
    parent, base = _split_path(final)
    if not base:
        raise OutputError(
            f"{flag} {path} is a filesystem or bucket root; the output is built "
            "beside the target and swapped in, so name a directory below it"
        )
    run_id = uuid.uuid4().hex[:12]
    staging = join(parent, f".{base}.sql2tfrecord-staging-{run_id}")
    if ownership.is_local(final):
        _check_local_parent(path, final, parent, flag)
        _clean_leftovers(parent, base, kind)
    check_target(path, inspect_dir(final, kind), overwrite, flag)
    return Publication(path, final, staging, run_id, kind, flag, overwrite)


def _check_local_parent(path: str, final: str, parent: str, flag: str) -> None:
    try:
        os.makedirs(parent, exist_ok=True)
        probe = os.path.join(parent, f".sql2tfrecord-write-test-{uuid.uuid4().hex}")
        with open(probe, "wb"):
            pass
        os.remove(probe)
    except OSError as err:
        reason = err.strerror or err
        raise OutputError(f"{flag} {path} is not writable: {reason}") from err
    if os.path.isdir(final) and os.stat(final).st_dev != os.stat(parent).st_dev:
        raise OutputError(
            f"{flag} {path} is a mount point; the output is built beside it and "
            "swapped in, so name a directory below it"
        )


def _read_marker(directory: str) -> dict | None:
    try:
        with open(os.path.join(directory, MARKER), encoding="utf-8") as f:
            marker = json.load(f)
    except (OSError, ValueError):
        return None
    if isinstance(marker, dict) and marker.get("format") == FORMAT:
        return marker
    return None


def _dead(marker: dict | None) -> bool:
    """Whether the process that wrote `marker` is provably gone (same host only)."""
    if not marker or marker.get("host") != socket.gethostname():
        return False
    pid = marker.get("pid")
    if not isinstance(pid, int) or pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def _rmtree(path: str) -> None:
    """Deletes a tree; what vanished meanwhile (a concurrent clean-up) is fine."""

    def onerror(func, target, exc_info):
        if not issubclass(exc_info[0], FileNotFoundError):
            raise exc_info[1]

    shutil.rmtree(path, onerror=onerror)


def _clean_leftovers(parent: str, base: str, kind: str) -> None:
    """Removes killed runs' staging dirs; restores an old output moved aside.

    Only for this target; the old output is one a run killed mid-swap had moved.
    """
    prefix = f".{base}.sql2tfrecord-"
    final = os.path.join(parent, base)
    try:
        names = sorted(os.listdir(parent))
    except OSError:
        return
    for name in names:
        if not name.startswith(prefix) or not ownership.LEFTOVER.search(name):
            continue
        role, run = name[len(prefix) :].split("-", 1)
        full = os.path.join(parent, name)
        if os.path.islink(full) or not os.path.isdir(full):
            continue
        if role == "staging":
            # Ours by its name and the marker written first; it holds whatever a
            # run writes midway (tf.Transform's temp files too).
            if _dead(_read_marker(full)):
                _LOGGER.info("Removing %s, left by a killed run", full)
                _rmtree(full)
            continue
        state = inspect_dir(full, kind)
        if state.foreign is not None or not state.ours:
            why = state.foreign or f"no {MARKER}"
            _LOGGER.warning("Leaving %s alone: it holds %s", full, why)
            continue
        staging = os.path.join(parent, f"{prefix}staging-{run}")
        owner = _read_marker(staging)
        if owner is not None and owner.get("run_id") == run and not _dead(owner):
            continue  # that run is swapping right now
        if os.path.lexists(final):
            _LOGGER.info("Removing %s, an output replaced by a killed run", full)
            _rmtree(full)
        else:
            _LOGGER.warning("Restoring %s: a run was killed while replacing it", final)
            os.rename(full, final)


def begin(pub: Publication) -> None:
    """Creates the staging directory with the marker as its first file."""
    marker = {
        "format": FORMAT,
        "kind": pub.kind,
        "run_id": pub.run_id,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    try:
        if ownership.is_local(pub.staging):
            os.makedirs(pub.staging)
        with FileSystems.create(join(pub.staging, MARKER)) as f:
            f.write(json.dumps(marker, indent=2, sort_keys=True).encode())
    except OSError as err:
        raise OutputError(
            f"{pub.flag} {pub.path}: cannot create {pub.staging} to build the "
            f"output in: {err.strerror or err}"
        ) from err


def abandon(pub: Publication) -> None:
    """Deletes the staging directory of a failed run (never raises)."""
    try:
        if ownership.is_local(pub.staging):
            if os.path.isdir(pub.staging) and _read_marker(pub.staging):
                _rmtree(pub.staging)
        else:
            _delete_objects(ownership.objects_below(pub.staging))
    except Exception as err:  # noqa: BLE001 - the run's own error matters more
        _LOGGER.warning("Could not remove %s: %s", pub.staging, err)


def publish(pub: Publication) -> None:
    """Swaps the finished staging directory into place (see the module docstring).

    The target is checked again first: something written there during the run is
    never replaced unless it is ours and `--overwrite` was given.
    """
    state = inspect_dir(pub.final, pub.kind)
    check_target(pub.path, state, pub.overwrite, pub.flag)
    try:
        if ownership.is_local(pub.final):
            _swap_local(pub, state)
        else:
            _swap_files(pub, state)
    except OSError as err:
        raise OutputError(
            f"{pub.flag} {pub.path}: the new output could not be swapped in: "
            f"{err.strerror or err}"
        ) from err
    _LOGGER.info("Published %s", pub.path)


def _swap_local(pub: Publication, state: DirState) -> None:
    parent, base = os.path.split(pub.final)
    old = os.path.join(parent, f".{base}.sql2tfrecord-old-{pub.run_id}")
    if not state.exists:
        os.rename(pub.staging, pub.final)
        return
    if state.empty:
        # Keep the user's (empty) directory itself: move the contents, manifest last.
        done = ownership.completion_file(pub.kind)
        names = sorted(os.listdir(pub.staging), key=lambda n: (n == done, n))
        for name in names:
            os.rename(os.path.join(pub.staging, name), os.path.join(pub.final, name))
        os.rmdir(pub.staging)
        return
    if _exchange(pub.staging, pub.final):
        os.rename(pub.staging, old)  # now the replaced output
    else:
        os.rename(pub.final, old)
        try:
            os.rename(pub.staging, pub.final)
        except OSError:
            os.rename(old, pub.final)  # put the old output back
            raise
    moved = inspect_dir(old, pub.kind)
    if moved.foreign is not None:  # written there between the check and the swap
        _LOGGER.warning("Kept %s: it holds %s, not ours", old, moved.foreign)
        return
    _rmtree(old)


def _exchange(a: str, b: str) -> bool:
    """Atomically swaps two paths with renameat2(RENAME_EXCHANGE); False if missing."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange):
        err = ctypes.get_errno()
        if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
            return False
        raise OSError(err, os.strerror(err), b)
    return True


def _swap_files(pub: Publication, state: DirState) -> None:
    """File by file, for filesystems without directory rename.

    The old manifest goes first, the new one last.
    """
    done = ownership.completion_file(pub.kind)
    if state.complete:
        FileSystems.delete([join(pub.final, done)])
    _delete_objects([join(pub.final, rel) for rel in state.entries if rel != done])
    cut = len(pub.staging.rstrip("/")) + 1
    new = [path[cut:] for path in ownership.objects_below(pub.staging)]
    for rel in sorted(new, key=lambda rel: (rel == done, rel == MARKER, rel)):
        if "://" not in pub.final:  # tests run this on local disk: make the dirs
            os.makedirs(os.path.dirname(join(pub.final, rel)), exist_ok=True)
        FileSystems.rename([join(pub.staging, rel)], [join(pub.final, rel)])


def _delete_objects(paths: list[str]) -> None:
    if paths:
        FileSystems.delete(paths)
