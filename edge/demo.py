"""``python -m edge.demo``: the entry point users type; the code lives in :mod:`edge.app.demo`."""

import sys

from edge.app.demo import main

if __name__ == "__main__":
    sys.exit(main())
