"""Publishing: --overwrite replaces only our own output; a failed rerun keeps the old.

Pure tests of the ownership check, the swap and the leftover clean-up on a real
filesystem, then a few pipeline runs: a rerun failing late, interrupted or killed
leaves the previous output byte-identical and readable; a successful one replaces it
whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys

import pytest

import trainer
from pipeline import ownership, publish
from pipeline.__main__ import main
from pipeline.sink import write
from pipeline.sink.output import OutputError, OutputExistsError
from tests.conftest import query, reference_split, wait_for_staging

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tree(path) -> dict[str, str]:
    """Every entry under `path` (links not followed) with its content's digest."""
    found = {}
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            full = os.path.join(root, name)
            rel = os.path.relpath(full, path)
            if os.path.islink(full):
                found[rel] = "link:" + os.readlink(full)
            elif os.path.isdir(full):
                found[rel] = "dir"
            else:
                with open(full, "rb") as f:
                    found[rel] = hashlib.sha256(f.read()).hexdigest()
    return found


def put(base, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = os.path.join(base, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)


def fake_output(base, shards: int = 3, tag: str = "old") -> None:
    """A complete output as a run lays it out (contents are placeholders)."""
    files = {
        ".sql2tfrecord": json.dumps({"format": "sql2tfrecord/1", "run_id": tag}),
        "manifest.json": json.dumps({"tag": tag}),
        "metadata/schema.pbtxt": tag,
        "transformed_metadata/schema.pbtxt": tag,
        "transformed_metadata/asset_map": tag,
        "transform_fn/saved_model.pb": tag,
        "transform_fn/assets/cat": f"a\nb\n{tag}\n",
    }
    for split in ("train", "eval"):
        for i in range(shards):
            files[f"{split}/part-{i:05d}-of-{shards:05d}.tfrecord.gz"] = f"{tag}{i}"
    put(base, files)
    os.makedirs(os.path.join(base, "transform_fn", "variables"))


# -- what --overwrite may replace ---------------------------------------------------


def _foreign(tmp_path, case):
    """Builds an adversarial target; returns (path, the entry the error must name)."""
    out = tmp_path / "out"
    if case == "working_tree":
        put(out, {"README.md": "#", "src/a.py": "x = 1", ".git/HEAD": "ref"})
        return out, "README.md"  # files before directories, level by level
    if case == "home":
        put(out, {".bashrc": "alias", ".cache/x": "y"})
        return out, ".bashrc"
    fake_output(out)
    if case == "ours_plus_a_file":
        put(out, {"notes.txt": "mine"})
        return out, "notes.txt"
    if case == "foreign_file_in_a_split":
        put(out, {"train/notes.txt": "mine"})
        return out, "train/notes.txt"
    if case == "foreign_file_in_transform_fn":
        put(out, {"transform_fn/keep.py": "mine"})
        return out, "transform_fn/keep.py"
    if case == "split_is_a_symlink":
        put(tmp_path / "elsewhere", {"part-00000-of-00001.tfrecord.gz": "precious"})
        for name in os.listdir(out / "train"):
            os.remove(out / "train" / name)
        os.rmdir(out / "train")
        os.symlink(tmp_path / "elsewhere", out / "train")
        return out, "train (a symbolic link)"
    if case == "empty_dir_named_like_a_split":
        os.makedirs(out / "docs")
        return out, "docs/"
    if case == "shard_name_off_by_a_digit":
        put(out, {"train/part-0000-of-00003.tfrecord.gz": "x"})
        return out, "train/part-0000-of-00003.tfrecord.gz"
    raise AssertionError(case)


CASES = [
    "working_tree",
    "home",
    "ours_plus_a_file",
    "foreign_file_in_a_split",
    "foreign_file_in_transform_fn",
    "split_is_a_symlink",
    "empty_dir_named_like_a_split",
    "shard_name_off_by_a_digit",
]


@pytest.mark.parametrize("overwrite", [True, False])
@pytest.mark.parametrize("case", CASES)
def test_plan_refuses_a_target_holding_what_we_did_not_write(tmp_path, case, overwrite):
    out, named = _foreign(tmp_path, case)
    before = tree(tmp_path)
    with pytest.raises(OutputError) as refused:
        publish.plan_publication(str(out), overwrite)
    message = str(refused.value)
    assert "\n" not in message
    assert f"holds {named}, which sql2tfrecord did not write" in message
    assert "pass --overwrite" not in message  # never hint at what would be refused
    assert not isinstance(refused.value, OutputExistsError)
    assert tree(tmp_path) == before


def test_plan_refuses_our_file_names_without_marker_or_manifest(tmp_path):
    out = tmp_path / "out"
    put(out, {"metadata/schema.pbtxt": "s",
              "train/part-00000-of-00001.tfrecord.gz": "x"})  # fmt: skip
    before = tree(tmp_path)
    with pytest.raises(OutputError, match="holds metadata/schema.pbtxt but no "):
        publish.plan_publication(str(out), True)
    assert tree(tmp_path) == before


def test_plan_refuses_a_parquet_snapshot_as_output_and_the_reverse(tmp_path):
    snapshot, output = tmp_path / "snap", tmp_path / "out"
    put(snapshot, {".sql2tfrecord": "{}", "_snapshot.json": "{}",
                   "part-00000-of-00001.parquet": "p"})  # fmt: skip
    fake_output(output)
    with pytest.raises(OutputError, match="holds _snapshot.json, which"):
        publish.plan_publication(str(snapshot), True)
    with pytest.raises(OutputError, match="holds manifest.json, which"):
        publish.plan_publication(str(output), True, "parquet", "--raw_parquet_dir")


def test_raw_parquet_dir_overwrite_replaces_only_a_snapshot(tmp_path):
    snapshot = tmp_path / "raw"
    put(snapshot, {".sql2tfrecord": "{}", "_snapshot.json": "{}",
                   "part-00000-of-00002.parquet": "p",
                   "part-00001-of-00002.parquet": "q",
                   f".incomplete/{'a' * 32}.parquet": "partial"})  # fmt: skip
    assert publish.plan_publication(str(snapshot), True, "parquet", "--raw_parquet_dir")
    put(snapshot, {"part-00000.csv": "mine"})
    with pytest.raises(OutputError, match="raw holds part-00000.csv, which"):
        publish.plan_publication(str(snapshot), True, "parquet", "--raw_parquet_dir")


def test_plan_follows_a_link_to_a_foreign_directory_and_refuses(tmp_path):
    put(tmp_path / "real", {"thesis.tex": "years of work"})
    os.symlink(tmp_path / "real", tmp_path / "link")
    before = tree(tmp_path)
    with pytest.raises(OutputError, match=r"link holds thesis.tex, which"):
        publish.plan_publication(str(tmp_path / "link"), True)
    assert tree(tmp_path) == before


@pytest.mark.parametrize("path", ["/", "gs://bucket", "gs://bucket/", "s3://b"])
def test_plan_refuses_a_root(path):
    with pytest.raises(OutputError, match="root"):
        publish.plan_publication(path, True)


def test_plan_accepts_missing_and_empty_targets_and_refuses_ours_without_overwrite(
    tmp_path,
):
    assert publish.plan_publication(str(tmp_path / "a" / "b"), False)
    os.makedirs(tmp_path / "empty")
    assert publish.plan_publication(str(tmp_path / "empty"), False)
    fake_output(tmp_path / "ours")
    with pytest.raises(OutputExistsError, match="holds a complete output; pass --ov"):
        publish.plan_publication(str(tmp_path / "ours"), False)
    pub = publish.plan_publication(str(tmp_path / "ours") + "/", True)
    assert pub.final == str(tmp_path / "ours")
    assert os.path.dirname(pub.staging) == str(tmp_path)
    assert not os.path.exists(pub.staging)  # nothing is created before the run


def test_plan_refuses_a_file_as_target(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match="is a file, not a directory"):
        publish.plan_publication(str(tmp_path / "f"), True)


def test_disjoint_refuses_same_nested_and_staging_paths(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    os.makedirs(a)
    os.symlink(a, b)
    cases = [
        ({"--output_dir": a, "--raw_parquet_dir": a + "/"}, "are the same directory"),
        ({"--output_dir": a, "--raw_parquet_dir": b}, "are the same directory"),
        ({"--output_dir": a, "--raw_parquet_dir": a + "/raw"}, "raw is inside --out"),
        ({"--output_dir": b + "/o", "--input_parquet": a}, "o is inside --input_parq"),
        ({"--output_dir": f"{tmp_path}/.o.sql2tfrecord-staging-0123456789ab/x"},
         "a staging area of sql2tfrecord"),
        ({"--output_dir": "gs://k/o", "--raw_parquet_dir": "gs://k/o/r"}, "inside"),
    ]  # fmt: skip
    for paths, expected in cases:
        with pytest.raises(OutputError, match=expected):
            ownership.check_disjoint(paths)
    ownership.check_disjoint({"--output_dir": a, "--raw_parquet_dir": a + "x"})
    ownership.check_disjoint({"--output_dir": a, "--raw_parquet_dir": None})


# -- the swap -----------------------------------------------------------------------


def _staged(target, shards=1, tag="new", overwrite=True):
    pub = publish.plan_publication(str(target), overwrite)
    publish.begin(pub)
    fake_output(pub.staging, shards, tag)  # overwrites begin's marker: write it again
    with open(os.path.join(pub.staging, ".sql2tfrecord"), "w") as f:
        f.write(json.dumps({"format": "sql2tfrecord/1", "run_id": pub.run_id}))
    return pub, tree(pub.staging)


@pytest.mark.parametrize("mode", ["exchange", "two_renames"])
def test_publish_replaces_the_old_output_whole(tmp_path, monkeypatch, mode):
    out = tmp_path / "out"
    fake_output(out, shards=3, tag="old")
    pub, expected = _staged(out, shards=1)
    if mode == "two_renames":
        monkeypatch.setattr(publish, "_exchange", lambda a, b: False)
    publish.publish(pub)
    assert tree(out) == expected  # no stale shard of the old run's three
    assert os.listdir(tmp_path) == ["out"]  # no staging, no -old- left


def test_object_store_path_publishes_file_by_file_and_abandons(tmp_path, monkeypatch):
    # gs:// and s3:// have no directories: run that code path on local disk.
    monkeypatch.setattr(ownership, "is_local", lambda path: False)
    out = tmp_path / "out"
    fake_output(out, shards=3, tag="old")

    def staged(run_id):
        pub = publish.Publication(str(out), str(out), f"{tmp_path}/.out.s-{run_id}",
                                  run_id, "tfrecord", "--output_dir", True)  # fmt: skip
        publish.begin(pub)
        fake_output(pub.staging, 1, "new")
        return pub, tree(pub.staging)

    failed, _ = staged("a" * 12)
    publish.abandon(failed)
    state = ownership.inspect_dir(failed.staging, "tfrecord")
    assert state == ownership.DirState(False)
    pub, expected = staged("b" * 12)
    publish.publish(pub)
    files = {k: v for k, v in tree(out).items() if v != "dir"}
    assert files == {k: v for k, v in expected.items() if v != "dir"}
    assert not ownership.objects_below(pub.staging)


def test_a_failed_second_rename_puts_the_old_output_back(tmp_path, monkeypatch):
    out = tmp_path / "out"
    fake_output(out)
    before = tree(out)
    pub, _ = _staged(out)
    monkeypatch.setattr(publish, "_exchange", lambda a, b: False)
    rename = os.rename

    def failing(src, dst):
        if str(src) == pub.staging:
            raise OSError(18, "Invalid cross-device link")
        rename(src, dst)

    monkeypatch.setattr(os, "rename", failing)
    with pytest.raises(OutputError, match="could not be swapped in: Invalid cross"):
        publish.publish(pub)
    monkeypatch.undo()
    assert tree(out) == before
    publish.abandon(pub)
    assert os.listdir(tmp_path) == ["out"]


def test_publish_into_an_empty_directory_keeps_it(tmp_path):
    out = tmp_path / "out"
    os.makedirs(out)
    inode = os.stat(out).st_ino
    pub, expected = _staged(out, overwrite=False)
    publish.publish(pub)
    assert os.stat(out).st_ino == inode and tree(out) == expected
    assert os.listdir(tmp_path) == ["out"]


def test_publish_through_a_link_keeps_the_link(tmp_path):
    fake_output(tmp_path / "disk" / "real")
    os.symlink(tmp_path / "disk" / "real", tmp_path / "link")
    pub, expected = _staged(tmp_path / "link")
    publish.publish(pub)
    assert os.readlink(tmp_path / "link") == str(tmp_path / "disk" / "real")
    assert tree(tmp_path / "link" / ".") == expected
    assert os.listdir(tmp_path / "disk") == ["real"]


def test_publish_checks_the_target_again_and_abandon_cleans_up(tmp_path):
    out = tmp_path / "out"
    fake_output(out)
    pub, _ = _staged(out)
    put(out, {"written-meanwhile.txt": "someone's"})
    before = tree(out)
    with pytest.raises(OutputError, match="holds written-meanwhile.txt, which"):
        publish.publish(pub)
    assert tree(out) == before
    publish.abandon(pub)
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_a_file_written_during_the_swap_is_kept(tmp_path, monkeypatch):
    out = tmp_path / "out"
    fake_output(out)
    pub, expected = _staged(out)
    exchange = publish._exchange

    def racing(a, b):  # someone writes into the target after the last check
        put(out, {"late.txt": "precious"})
        return exchange(a, b)

    monkeypatch.setattr(publish, "_exchange", racing)
    publish.publish(pub)
    assert tree(out) == expected
    (kept,) = [n for n in os.listdir(tmp_path) if n != "out"]
    assert ".out.sql2tfrecord-old-" in kept
    assert (tmp_path / kept / "late.txt").read_text() == "precious"


def test_publish_without_overwrite_refuses_an_output_that_appeared(tmp_path):
    out = tmp_path / "out"
    pub, _ = _staged(out, overwrite=False)
    fake_output(out, tag="concurrent")
    before = tree(out)
    with pytest.raises(OutputExistsError):
        publish.publish(pub)
    assert tree(out) == before


# -- leftovers of killed runs -------------------------------------------------------


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _leftover(parent, base, role, run, pid, host=None, tag="new"):
    path = parent / f".{base}.sql2tfrecord-{role}-{run}"
    fake_output(path, 1, tag)
    marker = {"format": "sql2tfrecord/1", "run_id": run, "pid": pid,
              "host": host or publish.socket.gethostname()}  # fmt: skip
    (path / ".sql2tfrecord").write_text(json.dumps(marker))
    return path


def test_leftover_staging_is_removed_only_when_provably_dead(tmp_path):
    dead = _leftover(tmp_path, "out", "staging", "a" * 12, _dead_pid())
    alive = _leftover(tmp_path, "out", "staging", "b" * 12, os.getppid())
    remote = _leftover(tmp_path, "out", "staging", "c" * 12, _dead_pid(), "other-host")
    other = _leftover(tmp_path, "other", "staging", "d" * 12, _dead_pid())
    midway = _leftover(tmp_path, "out", "staging", "e" * 12, _dead_pid())
    put(midway, {f"transform_tmp/{'9' * 32}/saved_model.pb": "x"})  # killed midway
    unmarked = _leftover(tmp_path, "out", "staging", "f" * 12, _dead_pid())
    os.remove(unmarked / ".sql2tfrecord")
    publish.plan_publication(str(tmp_path / "out"), False)
    assert not dead.exists() and not midway.exists()
    assert alive.exists() and remote.exists() and other.exists() and unmarked.exists()


def test_a_run_killed_between_the_two_renames_is_recovered(tmp_path):
    old = _leftover(tmp_path, "out", "old", "f" * 12, 1, tag="old")
    expected = tree(old)
    _leftover(tmp_path, "out", "staging", "f" * 12, _dead_pid())
    with pytest.raises(OutputExistsError, match="complete output"):
        publish.plan_publication(str(tmp_path / "out"), False)
    assert tree(tmp_path / "out") == expected
    assert os.listdir(tmp_path) == ["out"]


def test_an_old_output_left_after_the_swap_is_removed(tmp_path):
    fake_output(tmp_path / "out", tag="new")
    _leftover(tmp_path, "out", "old", "0" * 12, _dead_pid(), tag="old")
    publish.plan_publication(str(tmp_path / "out"), True)
    assert os.listdir(tmp_path) == ["out"]


# -- pipeline runs ------------------------------------------------------------------

ROWS = 3000


@pytest.fixture(scope="module")
def publish_table(make_table):
    return make_table(
        "CREATE TABLE {table} (id int PRIMARY KEY, x float8 NOT NULL, "
        "cat text NOT NULL, y int NOT NULL)",
        "INSERT INTO {table} SELECT g, g * 0.5, 'c' || (g % 3), g % 2 "
        f"FROM generate_series(1, {ROWS}) g",
    )


def _argv(database_url, table, out, *extra):
    return ["--db_url", database_url, "--table", table, "--label", "y",
            "--output_dir", str(out), *extra]  # fmt: skip


@pytest.fixture(scope="module")
def first_output(database_url, publish_table, tmp_path_factory):
    out = tmp_path_factory.mktemp("first") / "out"
    assert main(_argv(database_url, publish_table, out, "--num_shards", "3")) == 0
    return out


def _copy(first_output, tmp_path):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(first_output, out, symlinks=True)
    return out, tree(out)


def _examples(out, split) -> int:
    return sum(
        int(label.shape[0])
        for _, label in trainer.make_dataset(str(out), split, batch_size=512,
                                             shuffle=False, num_epochs=1)
    )  # fmt: skip


def _expected_rows(database_url, table):
    ids = [r[0] for r in query(database_url, f'SELECT id FROM "{table}"')]
    train = sum(reference_split(i) == "train" for i in ids)
    return {"train": train, "eval": len(ids) - train}


def test_first_output_is_complete_and_marked(database_url, publish_table, first_output):
    names = sorted(os.listdir(first_output))
    assert names == [".sql2tfrecord", "eval", "manifest.json", "metadata",
                     "report.html", "statistics", "train", "transform_fn",
                     "transformed_metadata"]  # fmt: skip
    marker = json.loads((first_output / ".sql2tfrecord").read_text())
    assert marker["format"] == "sql2tfrecord/1" and marker["kind"] == "tfrecord"
    assert len(os.listdir(first_output / "train")) == 3
    expected = _expected_rows(database_url, publish_table)
    assert {s: _examples(first_output, s) for s in expected} == expected
    assert os.listdir(first_output.parent) == ["out"]


@pytest.mark.parametrize(
    "fault", ["database_gone", "exception_in_pipeline", "interrupt_before_swap"]
)
def test_a_rerun_failing_late_keeps_the_old_output(
    database_url, publish_table, first_output, tmp_path, monkeypatch, capsys, fault
):
    out, before = _copy(first_output, tmp_path)
    extra = []
    if fault == "database_gone":  # after the checks, when the snapshot is taken
        from pipeline.sources.postgres.connection import DatabaseError

        def gone(self):
            raise DatabaseError("server closed the connection unexpectedly (injected)")

        monkeypatch.setattr("pipeline.sources.postgres.plan.ExportedSnapshot.__enter__", gone)
        extra = ["--raw_parquet_dir", str(tmp_path / "raw")]
        code = 1
    elif fault == "exception_in_pipeline":

        def boom(self, batch):
            raise OSError("No space left on device (injected)")

        monkeypatch.setattr(write._ShardWriter, "_write_now", boom)
        code = 1
    else:

        def interrupt(job):
            raise KeyboardInterrupt

        monkeypatch.setattr("pipeline.run._cleanup_temp", interrupt)
        code = 130
    capsys.readouterr()
    argv = _argv(database_url, publish_table, out, "--overwrite", "--num_shards", "1")
    assert main(argv + extra) == code
    assert tree(out) == before
    assert os.listdir(tmp_path) == ["out"]  # the run removed its staging dirs
    if fault == "database_gone":
        assert capsys.readouterr().err.count("\n") == 1  # one line
    expected = _expected_rows(database_url, publish_table)
    assert {s: _examples(out, s) for s in expected} == expected


def test_a_killed_rerun_keeps_the_old_output_and_the_next_run_replaces_it(
    database_url, publish_table, first_output, tmp_path
):
    out, before = _copy(first_output, tmp_path)
    argv = [sys.executable, "-m", "pipeline",
            *_argv(database_url, publish_table, out, "--overwrite")]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": ROOT}
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    staging = wait_for_staging(out, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert tree(out) == before
    assert staging.exists()  # a SIGKILL'd run cannot clean up after itself
    assert main(_argv(database_url, publish_table, out, "--overwrite",
                      "--num_shards", "1")) == 0  # fmt: skip
    assert sorted(os.listdir(tmp_path)) == ["out"]  # the leftover is gone
    assert os.listdir(out / "train") == ["part-00000-of-00001.tfrecord.gz"]
    manifest = trainer.read_manifest(str(out))
    expected = _expected_rows(database_url, publish_table)
    assert {s: v["rows"] for s, v in manifest["splits"].items()} == expected
    assert {s: _examples(out, s) for s in expected} == expected
    marker = json.loads((out / ".sql2tfrecord").read_text())
    first = json.loads((first_output / ".sql2tfrecord").read_text())
    assert marker["run_id"] != first["run_id"]
    _check_transform_graph_loads_from(out)


def _check_transform_graph_loads_from(out):
    """The moved transform_fn loads with its vocabulary asset from the final path."""
    import tensorflow as tf
    import tensorflow_transform as tft

    output = tft.TFTransformOutput(str(out))
    assert output.vocabulary_file_by_name("cat").startswith(str(out) + "/")
    vocabulary = [t.decode() for t in output.vocabulary_by_name("cat")]
    assert sorted(vocabulary) == ["c0", "c1", "c2"]
    tokens = [*vocabulary, "never-seen"]
    raw = {"id": tf.constant([1] * 4, tf.int64), "x": tf.constant([1.0] * 4),
           "cat": tf.constant(tokens), "y": tf.constant([0] * 4, tf.int64)}  # fmt: skip
    ids = output.transform_features_layer()(raw)["cat"].numpy().tolist()
    assert ids[:3] == [0, 1, 2] and ids[3] >= 3


def test_cli_refuses_a_working_tree_as_output(
    database_url, publish_table, tmp_path, monkeypatch, capsys
):
    put(tmp_path / "repo", {"README.md": "#", "pipeline/job.py": "x"})
    monkeypatch.chdir(tmp_path / "repo")
    before = tree(tmp_path)
    for extra in (["--overwrite"], []):
        assert main(_argv(database_url, publish_table, ".", *extra)) == 1
        err = capsys.readouterr().err.strip()
        assert err == (
            "sql2tfrecord: error: --output_dir . holds README.md, which sql2tfrecord "
            "did not write; " + ("refusing to --overwrite it" if extra else
                                 "use a new or empty one")
        )  # fmt: skip
    # Refused before any connection: also with a database that cannot be reached.
    unreachable = "postgresql://nobody@127.0.0.1:1/none"
    assert main(_argv(unreachable, publish_table, ".", "--overwrite")) == 1
    assert "holds README.md, which" in capsys.readouterr().err
    assert tree(tmp_path) == before
