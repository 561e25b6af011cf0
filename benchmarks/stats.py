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


def shared_drift(times_by_case: dict, per_round: int, threshold: float = 1.10) -> dict | None:
    """How much the machine itself moved during an interleaved run: the slowdown that *every* case saw together.

    Cases run in rounds of ``per_round`` timed runs, interleaved, so a slow stretch of the machine (another tenant
    on the host, a busy second core) falls on every case of the same rounds. Per round, each case's median is
    divided by that case's median over all rounds, and the round's factor is the median over the cases: one
    case's own bad round does not move it, the machine's slowdown does. Returns None with fewer than two cases or three complete
    rounds, else ``{"round_factors", "spread" (max / min factor), "slow_rounds" (1-based, factor above the
    threshold of the fastest round), "drifted" (spread > threshold)}``.
    """
    cases = [t for t in times_by_case.values() if per_round > 0 and len(t) >= 3 * per_round]
    if len(cases) < 2:
        return None
    n_rounds = min(len(t) // per_round for t in cases)
    per_case = []
    for t in cases:
        a = np.asarray(t[: n_rounds * per_round], dtype=float)
        per_case.append(np.median(a.reshape(n_rounds, per_round), axis=1) / np.median(a))
    factors = np.median(np.array(per_case), axis=0)  # the median case: one case's bad round does not move it
    spread = float(factors.max() / factors.min())
    slow = [i + 1 for i, f in enumerate(factors) if f > threshold * factors.min()]
    return {"round_factors": [round(float(f), 4) for f in factors], "spread": round(spread, 4),
            "slow_rounds": slow, "drifted": spread > threshold}
