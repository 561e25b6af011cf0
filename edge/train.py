"""``python -m edge.train``: the entry point users type; the code lives in :mod:`edge.training.train`."""

import sys

from edge.training.train import main

if __name__ == "__main__":
    sys.exit(main())
