"""``python -m facemask.cli``: the ``facemask`` command line."""

import sys

from facemask.cli import main

sys.exit(main())
