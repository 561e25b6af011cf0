"""Converters from the NASNet builders to deployable artifacts (LiteRT ``.tflite``, ExecuTorch ``.pte``)."""
