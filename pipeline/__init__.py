"""Beam side of sql2tfrecord.

Options, partitioned PostgreSQL read, split, write, the job.
"""

METRICS_NAMESPACE = "sql2tfrecord"  # the Beam counters the manifest reports
