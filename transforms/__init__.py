"""tf.Transform side of sql2tfrecord: types, raw schema, feature config, preprocessing_fn (never imports Beam)."""
