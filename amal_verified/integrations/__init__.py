"""Adapters between amal_verified and other RL libraries, each behind its own extra.

``sb3`` (``pip install 'amal_verified[sb3]'``):
:class:`~amal_verified.integrations.sb3.GatedWorldModelCallback`, a Stable-Baselines3 callback that
trains a gated world model on an off-policy agent's real transitions while the agent's replay buffer
also receives auxiliary ones.

Importing this package imports nothing optional; importing an adapter without its extra raises an
``ImportError`` that names the ``pip install`` command.  Above the isolation core, the world model and
the audit; nothing in the package imports it.
"""

from __future__ import annotations
