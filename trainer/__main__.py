"""`python -m trainer --data_dir OUT --epochs N [--export_dir DIR]`: the demo trainer.

Trains `trainer.model.build_model` on the train split, evaluates on eval (AUC,
accuracy, loss, and the majority-class baseline accuracy), optionally exports the
serving model, and prints a short summary whose last stdout line is one JSON object:
`auc, accuracy, baseline_accuracy, loss, train_examples, eval_examples, seconds`
(+ `export_dir` when exporting). Seeds are fixed (`--seed`). A user-facing failure
(bad flags, incomplete output, unreadable data) is one line on stderr and exit 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from collections.abc import Sequence

__all__ = ["main"]


class _UsageError(Exception):
    pass


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str):  # one line and exit 1, not usage + exit 2
        raise _UsageError(message)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = _ArgumentParser(prog="python -m trainer", allow_abbrev=False)
    parser.add_argument("--data_dir", required=True, help="an sql2tfrecord output")
    parser.add_argument("--epochs", type=int, default=3, help="passes over train")
    parser.add_argument("--batch_size", type=int, default=512)
    parser.add_argument("--export_dir", help="also export a serving SavedModel here")
    parser.add_argument("--seed", type=int, default=0, help="weights and shuffles")
    args = parser.parse_args(argv)
    for flag in ("epochs", "batch_size"):
        if getattr(args, flag) < 1:
            raise _UsageError(f"--{flag} must be >= 1, got {getattr(args, flag)}")
    return args


def _train_and_evaluate(args: argparse.Namespace) -> dict:
    import keras
    import numpy as np

    from trainer.dataset import make_dataset, read_manifest
    from trainer.model import build_model, model_inputs
    from trainer.serving import export_serving_model

    started = time.time()
    keras.utils.set_random_seed(args.seed)
    manifest = read_manifest(args.data_dir)
    model = build_model(args.data_dir)

    def for_model(features, label):
        return model_inputs(model, features), label

    train = make_dataset(args.data_dir, "train", args.batch_size, seed=args.seed)
    evaluation = make_dataset(args.data_dir, "eval", 4096, shuffle=False)
    history = model.fit(train.map(for_model), epochs=args.epochs, verbose=2)
    scores = model.evaluate(evaluation.map(for_model), verbose=0, return_dict=True)
    labels = np.concatenate([y.numpy().reshape(-1) for _, y in evaluation])
    positive = float(labels.mean()) if len(labels) else 0.0
    train_rows = (manifest.get("splits") or {}).get("train", {}).get("rows")
    if train_rows is None:  # an older manifest: count the examples
        train_rows = sum(
            int(y.shape[0])
            for _, y in make_dataset(args.data_dir, "train", 4096, shuffle=False)
        )
    metrics = {
        "auc": float(scores["auc"]),
        "accuracy": float(scores["accuracy"]),
        "baseline_accuracy": max(positive, 1.0 - positive),
        "loss": float(scores["loss"]),
        "train_examples": int(train_rows),
        "eval_examples": int(len(labels)),
    }
    print(
        f"train: {args.epochs} epochs, final loss "
        f"{history.history['loss'][-1]:.4f}, {metrics['train_examples']} examples"
    )
    if args.export_dir:
        export_serving_model(model, args.data_dir, args.export_dir)
        metrics["export_dir"] = args.export_dir
        print(f"serving model: {args.export_dir}")
    metrics["seconds"] = round(time.time() - started, 2)
    return metrics


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the demo training; returns the exit code (0, or 1 on a user error)."""
    try:
        args = _parse(argv)
    except _UsageError as err:
        print(f"trainer: error: {err}", file=sys.stderr)
        return 1
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # Keras warns about shuffle= and about epochs of unknown length with tf.data;
    # make_dataset shuffles and sizes epochs itself.
    warnings.filterwarnings("ignore", module="keras.src.trainers.epoch_iterator")
    import tensorflow as tf

    try:
        metrics = _train_and_evaluate(args)
    except (OSError, ValueError, tf.errors.OpError) as err:
        # OpError: e.g. a truncated or corrupt shard (DataLossError).
        line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        print(f"trainer: error: {line}", file=sys.stderr)
        return 1
    print(
        f"eval: AUC {metrics['auc']:.4f}, accuracy {metrics['accuracy']:.4f} "
        f"(majority baseline {metrics['baseline_accuracy']:.4f}), loss "
        f"{metrics['loss']:.4f}, {metrics['eval_examples']} examples, "
        f"{metrics['seconds']:.1f} s"
    )
    print(json.dumps(metrics, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
