"""make_dataset: the transformed TFRecords of one split as a fast `tf.data.Dataset`.

list_files(shuffle) -> interleave(TFRecordDataset(GZIP), parallel) -> shuffle ->
batch -> vectorised parse_example (transformed spec) -> (features, label) -> prefetch.
The feature spec and the label key come from the output directory itself
(`transformed_metadata/` and `manifest.json`), never typed in by hand.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import tensorflow as tf
import tensorflow_transform as tft

__all__ = ["make_dataset", "read_manifest", "shard_files", "span_dirs"]

SHARD_PATTERN = "part-*.tfrecord.gz"


def read_manifest(output_dir: str) -> dict:
    """The manifest of a complete output; FileNotFoundError if it is incomplete."""
    path = os.path.join(output_dir, "manifest.json")
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(
            f"{output_dir} has no manifest.json: not an sql2tfrecord output, or the "
            "run that wrote it did not finish"
        )
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def shard_files(output_dir: str, split: str) -> list[str]:
    """The split's shard files, sorted; ValueError naming the split when none exist."""
    files = sorted(tf.io.gfile.glob(os.path.join(output_dir, split, SHARD_PATTERN)))
    if not files:
        raise ValueError(f"split {split!r} has no files under {output_dir}/{split}/")
    return files


def transform_fingerprint(output_dir: str) -> str:
    """SHA-256 of every file of `output_dir/transform_fn/` (paths and contents)."""
    import hashlib

    root = os.path.join(output_dir, "transform_fn")
    digest = hashlib.sha256()
    for directory, _, names in sorted(tf.io.gfile.walk(root)):
        for name in sorted(names):
            path = os.path.join(directory, name)
            digest.update(os.path.relpath(path, root).encode() + b"\0")
            with tf.io.gfile.GFile(path, "rb") as f:
                digest.update(f.read())
    return digest.hexdigest()


def span_dirs(output_dir: str, spans: int | Sequence[int]) -> list[str]:
    """The directories of the chosen complete spans of a `--span_column` output.

    `spans` is a count (the last N complete spans) or span numbers (a list or
    range). A span without its manifest is incomplete and never chosen; ValueError
    names what is missing.
    """
    found = tf.io.gfile.glob(os.path.join(output_dir, "span-*", "manifest.json"))
    complete = {}
    for path in found:
        name = os.path.basename(os.path.dirname(path))
        if name[5:].isdigit():
            complete[int(name[5:])] = os.path.dirname(path)
    if isinstance(spans, int):
        if spans < 1 or spans > len(complete):
            raise ValueError(
                f"spans={spans}: {output_dir} has {len(complete)} complete spans"
            )
        return [complete[n] for n in sorted(complete)[-spans:]]
    numbers = list(spans)
    missing = [n for n in numbers if n not in complete]
    if missing or not numbers:
        raise ValueError(
            f"spans={numbers}: span(s) {missing} are not complete spans of "
            f"{output_dir} (complete: {sorted(complete)})"
        )
    return [complete[n] for n in sorted(set(numbers))]


def make_dataset(
    output_dir: str,
    split: str = "train",
    batch_size: int = 256,
    shuffle: bool = True,
    num_epochs: int | None = 1,
    *,
    shuffle_buffer: int = 10_000,
    cache: bool = False,
    shard: tuple[int, int] | tf.distribute.InputContext | None = None,
    deterministic: bool | None = None,
    seed: int | None = None,
    spans: int | Sequence[int] | None = None,
) -> tf.data.Dataset:
    """Returns a dataset of `(features: dict[str, Tensor], label: Tensor)` batches.

    Args:
        output_dir: a complete sql2tfrecord output directory.
        split: which split to read ("train", "eval", ...).
        batch_size: examples per batch (the last batch may be smaller).
        shuffle: shuffle file order and examples (buffer `shuffle_buffer`).
        num_epochs: passes over the data; None repeats forever.
        shuffle_buffer: examples in the example-shuffle buffer when `shuffle` is
            set; with `cache`, whole batches are reshuffled in a buffer of
            `shuffle_buffer // batch_size` (at least 1) batches.
        cache: keep the parsed batches in memory after the first epoch; later
            epochs are several times faster, but reshuffle whole batches only.
        shard: `(num_workers, worker_index)` or a `tf.distribute.InputContext`:
            each worker reads a disjoint subset of files. ValueError when there are
            fewer files than workers.
        deterministic: force (or forbid) a deterministic element order; default:
            deterministic exactly when not shuffling.
        seed: seed of the file and example shuffles.
        spans: for a `--span_column` output: the last N complete spans (an int)
            or those span numbers (a list or range), read as one dataset. The
            feature spec and label come from the latest chosen span; ValueError
            unless every chosen span was transformed by the same graph (byte
            for byte: later spans made with `--transform_from`).
    """
    if spans is None:
        manifest = read_manifest(output_dir)
        spec = tft.TFTransformOutput(output_dir).transformed_feature_spec()
        files = shard_files(output_dir, split)
    else:
        dirs = span_dirs(output_dir, spans)
        manifest = read_manifest(dirs[-1])
        spec = tft.TFTransformOutput(dirs[-1]).transformed_feature_spec()
        files = []
        graph = transform_fingerprint(dirs[-1])
        for directory in dirs:
            if transform_fingerprint(directory) != graph:
                raise ValueError(
                    f"spans: {directory} was transformed by another graph than "
                    f"{dirs[-1]} (its features are not comparable); make later "
                    "spans with --transform_from, or choose fewer spans"
                )
            files += shard_files(directory, split)
    label = manifest["label"]
    if isinstance(shard, tf.distribute.InputContext):
        shard = (shard.num_input_pipelines, shard.input_pipeline_id)
    if shard is not None:
        num_workers, index = shard
        if len(files) < num_workers:
            raise ValueError(
                f"split {split!r} has {len(files)} files for {num_workers} workers; "
                "rerun the pipeline with --num_shards >= the number of workers"
            )
        files = files[index::num_workers]
    if deterministic is None:
        deterministic = not shuffle

    dataset = tf.data.Dataset.from_tensor_slices(files)
    if shuffle:
        dataset = dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.interleave(
        lambda f: tf.data.TFRecordDataset(f, compression_type="GZIP"),
        cycle_length=min(len(files), 8),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic,
    )
    if shuffle:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed)
    dataset = dataset.batch(batch_size)

    def parse(serialized):
        features = tf.io.parse_example(serialized, spec)
        return features, features.pop(label)

    dataset = dataset.map(
        parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic
    )
    if cache:
        # Parsed batches stay in memory; later epochs only reshuffle batch order.
        dataset = dataset.cache()
        if shuffle:
            dataset = dataset.shuffle(
                max(1, shuffle_buffer // batch_size),
                seed=seed,
                reshuffle_each_iteration=True,
            )
    if num_epochs != 1:
        dataset = dataset.repeat(num_epochs)
    return dataset.prefetch(tf.data.AUTOTUNE)
