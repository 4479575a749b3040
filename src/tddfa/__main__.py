"""``python -m tddfa`` — same as the ``tddfa`` command."""

import sys

from tddfa.cli.main import main

if __name__ == "__main__":  # worker processes started with spawn import this module too
    sys.exit(main())
