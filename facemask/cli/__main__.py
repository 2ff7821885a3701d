"""``python -m facemask.cli ...``: the same as the ``facemask`` console script."""

import sys

from facemask.cli import main

sys.exit(main())
