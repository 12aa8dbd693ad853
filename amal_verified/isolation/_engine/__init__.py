"""The isolation core's machinery: label storage, per-operation and module-boundary tracking,
gradient labels, the process-wide hooks.  Not a public API; the package docstring of
``amal_verified.isolation`` walks a label through it."""
