"""Training side of sql2tfrecord (TensorFlow only): reading the output, serving export."""

from trainer.dataset import make_dataset, read_manifest

__all__ = ["make_dataset", "read_manifest"]
