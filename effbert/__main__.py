"""``python -m effbert``: see ``effbert.cli``."""

import sys

from effbert.cli import main

sys.exit(main())
