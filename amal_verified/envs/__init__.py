"""The environments the trainer and the benchmarks run on.

- :mod:`amal_verified.envs.tasks` — the one small API the trainer uses (:func:`make_env`,
  :func:`task_info`, :class:`TaskInfo`) for gymnasium, MuJoCo and MiniGrid ids, and for custom
  environments as ``MODULE:ID`` (``MODULE`` registers ``ID`` when imported);
- :mod:`amal_verified.envs.registration` — the library's own gymnasium ids (``amal/...``): the
  paper's combinatorial tasks, KeyCorridor S8R4, the trading market and the news-filtering stream.
  Importing this package registers them (cheap: registration stores entry-point strings only).
"""

from amal_verified.envs.registration import AMAL_ENV_IDS, register_amal_envs
from amal_verified.envs.tasks import (
    SUPPORTED_ENVS,
    CartPoleTermination,
    FlatFloat32Obs,
    MiniGridFlatObs,
    MountainCarTermination,
    NeverTerminates,
    TaskInfo,
    make_env,
    task_info,
)

register_amal_envs()

__all__ = [
    "AMAL_ENV_IDS",
    "SUPPORTED_ENVS",
    "CartPoleTermination",
    "FlatFloat32Obs",
    "MiniGridFlatObs",
    "MountainCarTermination",
    "NeverTerminates",
    "TaskInfo",
    "make_env",
    "register_amal_envs",
    "task_info",
]
