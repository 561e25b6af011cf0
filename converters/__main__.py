import sys

print("use: python -m converters.tflite ... | python -m converters.executorch ...", file=sys.stderr)
sys.exit(2)
