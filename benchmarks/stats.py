"""Latency statistics and the noise estimate used for A/B ratios."""

from __future__ import annotations

import numpy as np


def summarize(ms: list[float]) -> dict:
    a = np.asarray(ms, dtype=np.float64)
    return {"median": float(np.median(a)), "p90": float(np.percentile(a, 90)), "p99": float(np.percentile(a, 99)),
            "mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0, "min": float(a.min()),
            "max": float(a.max()), "n": int(len(a))}


def ratio_with_noise(a_ms: list[float], b_ms: list[float], n_boot: int = 1000, seed: int = 0) -> dict:
    """median(a) / median(b) with a bootstrap 95% interval: the noise estimate of a comparison."""
    a, b = np.asarray(a_ms, np.float64), np.asarray(b_ms, np.float64)
    rng = np.random.default_rng(seed)
    boots = [np.median(rng.choice(a, a.size)) / np.median(rng.choice(b, b.size)) for _ in range(n_boot)]
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return {"ratio": float(np.median(a) / np.median(b)), "ci95": [float(lo), float(hi)]}
