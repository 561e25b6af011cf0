"""``python -m edge.tflite_metadata``: the entry point users type; the code lives in :mod:`edge.artifact.tflite_metadata`."""

import sys

from edge.artifact.tflite_metadata import main

if __name__ == "__main__":
    sys.exit(main())
