"""The sink: transformed rows -> tf.Examples -> sharded TFRecords; output paths.

`records` encodes (Arrow batches to serialized tf.Examples), `write` shards and
compresses them per split, `output` joins and checks paths on any Beam filesystem.
Database-agnostic, like everything after `pipeline.sources`.
"""
