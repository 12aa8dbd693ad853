"""``amal bench``: the paper's evaluation framework (§6.1) at workstation scale.

One module per job: :mod:`.tasks` (the catalogue), :mod:`.methods` and :mod:`.baselines` (what is
trained), :mod:`.evaluation` and :mod:`.references` (how it is scored), :mod:`.isolation` (world model
with and without auxiliary data), :mod:`.ratios` (performance ratios), :mod:`.runner` and
:mod:`.command` (the grid and the command line), :mod:`.records`, :mod:`.stats`, :mod:`.plots` and
:mod:`.report` (from records to ``RESULTS.md``).  Nothing is imported here: the command imports what
it needs, and worker processes stay light.
"""
