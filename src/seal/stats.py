"""Uncertainty for tables that compare conditions: bootstrap intervals over contexts.

The unit of resampling is the context (a passage, an ARC task, a continual sequence): the
questions of one passage are not independent draws, so resampling questions would make the
intervals too narrow. A condition's interval resamples its per-context scores; a comparison of
two conditions resamples the per-context differences (the same contexts and questions under
both: a paired comparison, much tighter than two separate intervals suggest).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

LEVEL = 0.95
RESAMPLES = 10_000


def _finite(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and not math.isnan(v)]


def bootstrap_ci(
    values: Sequence[float | None], level: float = LEVEL, resamples: int = RESAMPLES, seed: int = 0
) -> dict[str, float | int]:
    """The mean of `values` and its percentile-bootstrap interval.

    Args:
        values: one score per context (None or NaN are left out: a context without a score).
        level: the interval's coverage (0.95: the 2.5th to the 97.5th percentile of resampled means).
        resamples: bootstrap resamples; the default keeps the interval's ends stable to about 0.002.
        seed: the resampling is deterministic, so a table is the same on every machine.
    Returns:
        {"mean", "lo", "hi", "n"}; with one value the interval is that value, with none every field is NaN.
    """
    xs = _finite(values)
    n = len(xs)
    if n == 0:
        return {"mean": math.nan, "lo": math.nan, "hi": math.nan, "n": 0}
    mean = math.fsum(xs) / n
    if n == 1 or max(xs) == min(xs):
        return {"mean": mean, "lo": mean, "hi": mean, "n": n}
    rng = np.random.default_rng(seed)
    means = np.asarray(xs)[rng.integers(0, n, size=(resamples, n))].mean(axis=1)
    tail = (1 - level) / 2
    lo, hi = np.quantile(means, [tail, 1 - tail])  # linear interpolation between order statistics
    return {"mean": mean, "lo": float(lo), "hi": float(hi), "n": n}


def paired_difference(
    a: Sequence[float | None],
    b: Sequence[float | None],
    level: float = LEVEL,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> dict[str, float | int]:
    """The mean of a - b over contexts scored under both conditions, with its bootstrap interval.

    Args:
        a, b: per-context scores in the same order (a context missing from either is left out).
    Returns:
        {"mean", "lo", "hi", "n", "wins", "losses"}: the mean difference, its interval, the contexts
        compared, and how many of them a beats b on and b beats a on.
    """
    if len(a) != len(b):
        raise ValueError(f"paired scores need the same contexts: {len(a)} against {len(b)}")
    pairs = [(x, y) for x, y in zip(_as_floats(a), _as_floats(b)) if not (math.isnan(x) or math.isnan(y))]
    diffs = [x - y for x, y in pairs]
    out = bootstrap_ci(diffs, level, resamples, seed)
    return out | {"wins": sum(d > 0 for d in diffs), "losses": sum(d < 0 for d in diffs)}


def paired_conditions(scores: dict[str, dict[str, Sequence[float | None]]]) -> dict[str, dict[str, dict]]:
    """For every pair of conditions (later minus earlier, in the order given), the paired difference of their
    per-context scores in each metric: `scores[condition][metric]` lists the contexts in one order;
    returns `{"passage - base": {metric: paired_difference(...)}}`."""
    names, out = list(scores), {}
    for i, earlier in enumerate(names):
        for later in names[i + 1 :]:
            out[f"{later} - {earlier}"] = {
                m: paired_difference(a, scores[earlier][m]) for m, a in scores[later].items()
            }
    return out


def _as_floats(values: Sequence[float | None]) -> list[float]:
    return [math.nan if v is None else float(v) for v in values]


def format_ci(ci: dict, spec: str = ".3f", signed: bool = False) -> str:
    """'0.412 [0.351, 0.470]' (or '+0.061 [+0.020, +0.101]' for a difference)."""
    sign = "+" if signed else ""
    if ci is None or math.isnan(ci["mean"]):
        return "-"
    return f"{ci['mean']:{sign}{spec}} [{ci['lo']:{sign}{spec}}, {ci['hi']:{sign}{spec}}]"
