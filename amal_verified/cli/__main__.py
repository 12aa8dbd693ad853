"""``python -m amal_verified.cli``: the ``amal`` command."""

import sys

from amal_verified.cli import main

sys.exit(main())
