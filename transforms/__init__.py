"""tf.Transform side of sql2tfrecord (never imports Beam).

Types, raw schema, feature config, preprocessing_fn.
"""
