"""``python -m tddfa`` — same as the ``tddfa`` command."""

import sys

from tddfa.cli.main import main

sys.exit(main())
