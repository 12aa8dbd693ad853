"""Repository tooling of amal_verified, installed from a checkout (``pip install -e tools``):
``bench`` (``amal bench``, the paper's evaluation framework) and ``compliance`` (``amal report``,
the proof obligations of ``proofs/`` run and reported).  Not part of the library users install."""
