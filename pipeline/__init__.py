"""Beam side of sql2tfrecord.

Options, the job, and its parts: `sources` (PostgreSQL, MySQL/MariaDB; Beam-free
except each engine's `beam` module, so the trainer may import the readers),
split assignment, tf.Transform wiring, `sink`, manifest, statistics and report.
"""

METRICS_NAMESPACE = "sql2tfrecord"  # the Beam counters the manifest reports
