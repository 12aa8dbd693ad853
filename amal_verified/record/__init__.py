"""The run record: what a run leaves behind for resumption and for the replay certificate.

``ledger`` (the hash-chained world-model ledger and the canonical digests), ``checkpoint`` (atomic,
label-preserving checkpoint files) and ``primary_log`` (the primary transitions a run collected, in
chunks listed by a manifest: the data the certificate replays).  Above the isolation core and the
world model; below the run.
"""
