"""``python -m edge.verify``: the entry point users type; the code lives in :mod:`edge.model.verify`."""

import sys

from edge.model.verify import main

if __name__ == "__main__":
    sys.exit(main())
