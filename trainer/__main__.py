"""`python -m trainer --data_dir OUT --epochs N [--export_dir DIR]`: the demo trainer.

Trains `trainer.model.build_model` on the train split, evaluates on eval (AUC,
accuracy, loss, and the majority-class baseline), optionally exports the serving
model, and prints a summary whose last line is one JSON object of the metrics.
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


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the demo training; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m trainer", allow_abbrev=False)
    parser.add_argument("--data_dir", required=True, help="an sql2tfrecord output")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=512)
    parser.add_argument("--export_dir", help="also export a serving SavedModel here")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1:
        print("trainer: error: --epochs and --batch_size must be >= 1", file=sys.stderr)
        return 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # Keras warns about shuffle= and about epochs of unknown length with tf.data;
    # make_dataset shuffles and sizes epochs itself.
    warnings.filterwarnings("ignore", module="keras.src.trainers.epoch_iterator")
    started = time.time()
    try:
        import keras
        import numpy as np

        from trainer.dataset import make_dataset
        from trainer.model import build_model
        from trainer.serving import export_serving_model

        keras.utils.set_random_seed(args.seed)
        model = build_model(args.data_dir)
        train = make_dataset(args.data_dir, "train", args.batch_size, seed=args.seed)
        evaluation = make_dataset(args.data_dir, "eval", 4096, shuffle=False)
        model.fit(train, epochs=args.epochs, verbose=2)
        loss, auc, accuracy = model.evaluate(evaluation, verbose=0)
        labels = np.concatenate([y.numpy() for _, y in evaluation])
        train_examples = sum(int(tf_len) for tf_len in _batch_sizes(train))
        positive = float(labels.mean()) if len(labels) else 0.0
        metrics = {
            "auc": float(auc),
            "accuracy": float(accuracy),
            "baseline_accuracy": max(positive, 1 - positive),
            "loss": float(loss),
            "train_examples": train_examples,
            "eval_examples": int(len(labels)),
        }
        if args.export_dir:
            export_serving_model(model, args.data_dir, args.export_dir)
            metrics["export_dir"] = args.export_dir
        metrics["seconds"] = round(time.time() - started, 2)
    except (FileNotFoundError, ValueError) as err:
        print(f"trainer: error: {str(err).strip().splitlines()[0]}", file=sys.stderr)
        return 1
    print(
        f"eval: AUC {metrics['auc']:.4f}, accuracy {metrics['accuracy']:.4f} "
        f"(majority baseline {metrics['baseline_accuracy']:.4f}), "
        f"{metrics['eval_examples']} examples"
    )
    print(json.dumps(metrics, sort_keys=True))
    return 0


def _batch_sizes(dataset):
    for _, label in dataset:
        yield label.shape[0]


if __name__ == "__main__":
    sys.exit(main())
