"""The run: its configuration (``config``), the trainer (``trainer``: Algorithm 1 with Eqs. 3-6),
the run directory's lifecycle (``run_dir``), the replay certificate (``certify``), evaluation on the
real environment (``evaluate``) and training logs (``logs``).

Needs the ``[rl]`` extra.  The top layer below the command line.
"""
