"""Beam side of sql2tfrecord: options, partitioned PostgreSQL read, split, write, the job."""
