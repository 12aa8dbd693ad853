"""The bottom layer: what every other layer uses and that knows nothing of labels.

``rng_streams`` (``RunStreams``: every random stream of a run and its owner), ``runtime_checks``
(beartype on the public API), ``durable_io`` (fsync of directories) and ``module_loading``
(importing a user's ``file.py:function`` target).
"""
