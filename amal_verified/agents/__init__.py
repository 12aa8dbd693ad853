"""The agents: the primary agent's SAC (``sac``), CEM planning (``cem``), the auxiliary population
and its perturbed environments (``aux_population``, ``aux_env``), imagined rollouts in the world
model (``rollouts``) and the restorable environment stepper (``env_runner``).

Needs the ``[rl]`` extra (gymnasium).  Above the world model; below the run.
"""
