"""``python -m changekit.cli``: the same as the ``changekit`` command."""

import sys

from changekit.cli import main

sys.exit(main())
