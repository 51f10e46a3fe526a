"""Training side of sql2tfrecord (TensorFlow only).

Reading the output, serving export.
"""

from trainer.dataset import make_dataset, read_manifest
from trainer.postgres_dataset import dataset_from_postgres

__all__ = ["make_dataset", "read_manifest", "dataset_from_postgres"]
