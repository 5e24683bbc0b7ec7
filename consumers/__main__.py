"""`python -m consumers`: see `consumers.cli`."""

import sys

from consumers.cli import main

if __name__ == "__main__":
    sys.exit(main())
