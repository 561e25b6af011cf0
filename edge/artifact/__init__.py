"""What an artifact carries and how it is checked: the standard TFLite model metadata
(:mod:`~edge.artifact.tflite_metadata`) and the sha256 check against its manifest (:mod:`~edge.artifact.integrity`)."""
