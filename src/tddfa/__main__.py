"""``python -m tddfa`` — same as the ``tddfa`` command."""

import sys

from .cli import main

sys.exit(main())
