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
from statistics import NormalDist

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


# --- can a ReST-EM round learn? ---------------------------------------------------------------------------
# A round keeps, per context, the self-edit with the highest reward. That choice is signal only if a second
# inner-loop run of the same self-edits (another seed) ranks them alike; these are the figures that say so.


def reward_reliability(first: Sequence[Sequence[float]], second: Sequence[Sequence[float]]) -> dict[str, float | int]:
    """How well two independent inner-loop runs of the same self-edits agree on their rewards.

    Args:
        first, second: per context, the reward of each of its self-edits (same contexts, same self-edits, in the
            same order) from run one and run two.
    Returns:
        {"correlation": Pearson correlation of the two runs over all self-edits, "within_correlation": the same
        with each run's rewards centred on their context's mean (what selection within a context sees; a
        reward that only tells passages apart has a high correlation and none within), "same_best": the share of
        contexts (with two or more self-edits and a unique best in both runs) whose best self-edit is the same in
        both runs, "chance_best": that share if the best were drawn at random (mean of 1/k), "n_self_edits",
        "n_contexts": the contexts counted in same_best}.
    """
    if len(first) != len(second) or any(len(a) != len(b) for a, b in zip(first, second)):
        raise ValueError("reward_reliability needs the same self-edits of the same contexts from both runs")
    xs = [float(x) for rs in first for x in rs]
    ys = [float(y) for rs in second for y in rs]
    centred_x = [float(x) - float(np.mean(rs)) for rs in first for x in rs]
    centred_y = [float(y) - float(np.mean(rs)) for rs in second for y in rs]
    agree, chance = [], []
    for a, b in zip(first, second):
        if len(a) < 2 or _ties_at_top(a) or _ties_at_top(b):
            continue
        agree.append(float(int(np.argmax(a)) == int(np.argmax(b))))
        chance.append(1 / len(a))
    return {
        "correlation": _pearson(xs, ys),
        "within_correlation": _pearson(centred_x, centred_y),
        "same_best": math.fsum(agree) / len(agree) if agree else math.nan,
        "chance_best": math.fsum(chance) / len(chance) if chance else math.nan,
        "n_self_edits": len(xs),
        "n_contexts": len(agree),
    }


def _ties_at_top(rewards: Sequence[float]) -> bool:
    return sum(r == max(rewards) for r in rewards) > 1


def _pearson(xs: list[float], ys: list[float]) -> float:
    if len(xs) < 2 or np.std(xs) == 0 or np.std(ys) == 0:
        return math.nan
    return float(np.corrcoef(xs, ys)[0, 1])


def signal_to_noise(rewards: Sequence[Sequence[Sequence[float]]]) -> dict[str, float]:
    """The spread of the reward between the self-edits of a context against its spread between repeats of one
    self-edit (inner-loop runs with other seeds).

    Args:
        rewards: per context, per self-edit, the reward of each repeat (at least two repeats each).
    Returns:
        {"between_sd": the square root of the mean over contexts of the sample variance, across a context's
        self-edits, of their mean rewards; "within_sd": the square root of the mean over self-edits of the sample
        variance across repeats; "ratio": between_sd / within_sd}. A ratio near or below
        1 / sqrt(repeats) means the self-edits of a context differ by no more than repeating one of them does.
    """
    between, within = [], []
    for context in rewards:
        means = [float(np.mean(r)) for r in context]
        if len(means) >= 2:
            between.append(float(np.var(means, ddof=1)))
        for repeats in context:
            if len(repeats) < 2:
                raise ValueError("signal_to_noise needs at least two repeats of every self-edit")
            within.append(float(np.var(repeats, ddof=1)))
    between_sd = math.sqrt(math.fsum(between) / len(between)) if between else math.nan
    within_sd = math.sqrt(math.fsum(within) / len(within)) if within else math.nan
    ratio = between_sd / within_sd if within_sd > 0 else math.inf if between_sd > 0 else math.nan
    return {"between_sd": between_sd, "within_sd": within_sd, "ratio": ratio}


def contexts_for_power(sd: float, effect: float, power: float = 0.8, level: float = LEVEL) -> int:
    """Contexts a paired comparison needs to detect a mean difference of `effect` with probability `power` at a
    two-sided `level` (normal approximation): ceil(((z_(1 - alpha/2) + z_power) * sd / effect)^2).

    Args:
        sd: the standard deviation of the per-context paired difference (from a validation pilot).
        effect: the difference to detect, in the same units.
    """
    if effect <= 0 or sd < 0:
        raise ValueError(f"contexts_for_power needs a positive effect and a non-negative sd, got {effect}, {sd}")
    z = NormalDist()
    n = ((z.inv_cdf(1 - (1 - level) / 2) + z.inv_cdf(power)) * sd / effect) ** 2
    return max(2, math.ceil(n))


def difference_sd(between_var: float, within_var: float, samples: int) -> float:
    """The standard deviation of a context's paired difference when each side averages `samples` self-edits:
    sqrt(between_var + within_var / samples), from a pilot's between-context variance of the true difference and
    its variance between single self-edits of one context."""
    return math.sqrt(max(0.0, between_var) + max(0.0, within_var) / samples)


def paired_variance_components(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> dict[str, float]:
    """From a pilot that scored several self-edits per context under two conditions, the two parts of the variance
    of a context's paired difference (for `difference_sd`, at another number of self-edits per context).

    Args:
        a, b: per context, the score of each self-edit under each condition (two or more on each side).
    Returns:
        {"between_var": the variance over contexts of the true difference (the observed variance of the
        per-context mean differences less the part the self-edit averages contribute), "within_var": the mean over
        contexts of the sum of both sides' sample variances between single self-edits, "n": contexts}.
    """
    if len(a) != len(b) or len(a) < 2:
        raise ValueError("paired_variance_components needs the same two or more contexts on both sides")
    diffs, within, share = [], [], []
    for xs, ys in zip(a, b):
        if len(xs) < 2 or len(ys) < 2:
            raise ValueError("paired_variance_components needs two or more self-edits per context on each side")
        var_x, var_y = float(np.var(xs, ddof=1)), float(np.var(ys, ddof=1))
        diffs.append(float(np.mean(xs)) - float(np.mean(ys)))
        within.append(var_x + var_y)
        share.append(var_x / len(xs) + var_y / len(ys))
    observed = float(np.var(diffs, ddof=1))
    return {"between_var": observed - float(np.mean(share)), "within_var": float(np.mean(within)), "n": len(a)}
