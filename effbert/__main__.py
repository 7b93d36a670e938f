"""``python -m effbert``: see ``effbert.runner``."""

import sys

from effbert.runner import main

sys.exit(main())
