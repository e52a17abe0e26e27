"""``python -m zsc_core``: see :mod:`zsc_core.cli`."""

import sys

from .cli import main

sys.exit(main())
