"""The desktop camera demo (:mod:`~edge.app.demo`, ``python -m edge.demo``): frames in, labels out, on any runtime."""
