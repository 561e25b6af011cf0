"""Training on your own classes (:mod:`~edge.training.train`, ``python -m edge.train``), image folders and
augmentation (:mod:`~edge.training.data`), quantization-aware fine-tuning (:mod:`~edge.training.quant_aware`)."""
