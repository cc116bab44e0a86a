"""A quantile sketch of a target's latency residuals, for a tail that is not log-normal.

Each observed call's prediction error in sigmas, z = (ln(latency) - mean before the call) /
sigma, falls in one of ``BINS`` bins: below 0, then 0.25-sigma steps up to 6 sigmas, then 6 and
above. Counts decay by ``keep`` per call (a memory of about 1 / (1 - keep) calls). The 95th
percentile is read off by walking down from the top bin and interpolating within the bin where
the upper 5% ends. A log-normal target's is about 1.645 (a little more: the mean it is measured
against is itself an estimate); a Pareto tail's is larger, and ``latency.model`` widens the upper
half of its distribution to match. Pure functions on tuples, stored with ``TargetStats``.
"""

from __future__ import annotations

WIDTH = 0.25
TOP = 6.0
BINS = 2 + int(TOP / WIDTH)
"""Bin 0: z < 0; bins 1..24: [0, 0.25), ..., [5.75, 6); bin 25: z >= 6 (read as [6, 8))."""
MIN_WEIGHT = 20.0
"""Decayed calls the sketch needs before its percentile is used."""


def bin_of(z: float) -> int:
    if z < 0.0:
        return 0
    return min(1 + int(z / WIDTH), BINS - 1)


def add(counts: tuple[float, ...], z: float, keep: float) -> tuple[float, ...]:
    """``counts`` decayed by ``keep``, with one more residual ``z``."""
    hit = bin_of(z)
    base = counts if len(counts) == BINS else (0.0,) * BINS
    return tuple(c * keep + (1.0 if i == hit else 0.0) for i, c in enumerate(base))


def quantile(counts: tuple[float, ...], q: float = 0.95) -> float:
    """The ``q``-quantile of the residuals in sigmas; 0.0 without ``MIN_WEIGHT`` of evidence (or
    when it falls below 0)."""
    total = sum(counts)
    if len(counts) != BINS or total < MIN_WEIGHT:
        return 0.0
    above, needed = 0.0, (1.0 - q) * total
    for i in range(BINS - 1, 0, -1):
        c = counts[i]
        if c > 0.0 and above + c >= needed:
            lo = (i - 1) * WIDTH
            hi = lo + (2.0 if i == BINS - 1 else WIDTH)
            return hi - (needed - above) / c * (hi - lo)
        above += c
    return 0.0
