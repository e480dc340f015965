"""Bootstrap intervals over contexts, checked against cases worked out by hand."""

import math

import pytest

from seal.stats import (
    bootstrap_ci,
    contexts_for_power,
    difference_sd,
    format_ci,
    paired_difference,
    paired_variance_components,
    signal_to_noise,
)
from seal.stats import reward_reliability as reliability


def test_interval_of_a_three_value_sample_matches_its_exact_bootstrap_distribution():
    """Resampling [0, 0, 1] with replacement gives means 0, 1/3, 2/3, 1 with probabilities 8, 12, 6, 1 (/27):
    the 2.5% quantile is 0 (P(0) = 0.296) and the 97.5% quantile is 1 (P(<= 2/3) = 26/27 = 0.963 < 0.975)."""
    ci = bootstrap_ci([0, 0, 1])
    assert ci["mean"] == pytest.approx(1 / 3) and ci["n"] == 3
    assert ci["lo"] == 0.0 and ci["hi"] == 1.0
    # at 80%: the 10% quantile is 0 (P(0) = 0.296) and the 90% quantile is 2/3 (P(<= 1/3) = 0.741 < 0.9 < 0.963)
    ci80 = bootstrap_ci([0, 0, 1], level=0.8)
    assert ci80["lo"] == 0.0 and ci80["hi"] == pytest.approx(2 / 3)


def test_interval_of_a_large_sample_matches_the_normal_approximation():
    """100 values, half 0 and half 1: standard error sqrt(0.25 / 100) = 0.05, so about 0.5 +- 1.96 x 0.05."""
    ci = bootstrap_ci([0.0, 1.0] * 50)
    assert ci["lo"] == pytest.approx(0.5 - 1.96 * 0.05, abs=0.01)
    assert ci["hi"] == pytest.approx(0.5 + 1.96 * 0.05, abs=0.01)


def test_degenerate_samples():
    assert bootstrap_ci([0.4]) == {"mean": 0.4, "lo": 0.4, "hi": 0.4, "n": 1}
    assert bootstrap_ci([0.2, 0.2, 0.2])["hi"] == pytest.approx(0.2)
    empty = bootstrap_ci([None, math.nan])
    assert empty["n"] == 0 and math.isnan(empty["mean"])


def test_the_same_seed_gives_the_same_interval():
    values = [0.1, 0.7, 0.3, 0.9, 0.5, 0.2]
    assert bootstrap_ci(values) == bootstrap_ci(values)
    assert bootstrap_ci(values, seed=1) != bootstrap_ci(values, seed=2)


def test_paired_difference_resamples_the_per_context_differences():
    before = [0.2, 0.5, 0.1, 0.9]
    after = [x + 0.25 for x in before]  # every context gains exactly 0.25: no uncertainty left
    d = paired_difference(after, before)
    assert d["mean"] == pytest.approx(0.25) and d["lo"] == pytest.approx(0.25) and d["hi"] == pytest.approx(0.25)
    assert (d["wins"], d["losses"], d["n"]) == (4, 0, 4)
    # the hand case again, as differences: gains of 0, 0 and 1 on three contexts
    d = paired_difference([1, 1, 2], [1, 1, 1])
    assert (d["lo"], d["hi"]) == (0.0, 1.0) and (d["wins"], d["losses"]) == (1, 0)


def test_paired_difference_leaves_out_contexts_missing_from_either_side_and_refuses_unequal_lengths():
    d = paired_difference([1.0, None, 3.0], [0.0, 5.0, math.nan])
    assert d["n"] == 1 and d["mean"] == 1.0
    with pytest.raises(ValueError, match="same contexts"):
        paired_difference([1.0], [1.0, 2.0])


def test_format():
    assert format_ci({"mean": 0.5, "lo": 0.25, "hi": 0.75, "n": 4}) == "0.500 [0.250, 0.750]"
    assert format_ci({"mean": 0.1, "lo": -0.05, "hi": 0.2, "n": 4}, signed=True) == "+0.100 [-0.050, +0.200]"


def test_reward_reliability_against_a_case_worked_out_by_hand():
    """Two contexts, three self-edits each. Run one: [0, 1, 2], [1, 1, 3]; run two: [1, 0, 2], [2, 1, 0].
    Pooled x = 0 1 2 1 1 3 (mean 4/3), y = 1 0 2 2 1 0 (mean 1): sum of products of deviations
    (-4/3)(0) + (-1/3)(-1) + (2/3)(1) + (-1/3)(1) + (-1/3)(0) + (5/3)(-1) = -1; sum of squares x: 48/9 = 16/3,
    y: 4; r = -1 / sqrt(16/3 x 4) = -0.2165. Best self-edit: context 1 index 2 in both runs (same), context 2
    index 2 against index 0 (different): same_best 1/2, chance 1/3. Centred on their context's mean: x = -1 0 1
    -2/3 -2/3 4/3, y = 0 -1 1 1 0 -1: products 0 0 1 -2/3 0 -4/3 sum -1; squares x 2 + 24/9 = 14/3, y 4."""
    out = reliability([[0, 1, 2], [1, 1, 3]], [[1, 0, 2], [2, 1, 0]])
    assert out["correlation"] == pytest.approx(-1 / math.sqrt(16 / 3 * 4))
    assert out["within_correlation"] == pytest.approx(-1 / math.sqrt(14 / 3 * 4))
    assert out["same_best"] == 0.5 and out["chance_best"] == pytest.approx(1 / 3)
    assert out["n_self_edits"] == 6 and out["n_contexts"] == 2


def test_reward_reliability_leaves_out_a_context_whose_best_is_tied():
    out = reliability([[1, 1, 0], [0, 2]], [[0, 1, 0], [0, 1]])
    assert out["n_contexts"] == 1 and out["same_best"] == 1.0
    with pytest.raises(ValueError, match="same self-edits"):
        reliability([[1, 2]], [[1, 2, 3]])


def test_signal_to_noise_against_a_case_worked_out_by_hand():
    """One context, two self-edits, two repeats each: [0, 2] and [4, 6]. Means 1 and 5: variance between (ddof 1)
    (1-3)^2 + (5-3)^2 = 8; within: each pair has variance 2, so within_sd = sqrt(2), between_sd = sqrt(8) = 2 sqrt 2,
    ratio 2."""
    out = signal_to_noise([[[0, 2], [4, 6]]])
    assert out["between_sd"] == pytest.approx(math.sqrt(8))
    assert out["within_sd"] == pytest.approx(math.sqrt(2))
    assert out["ratio"] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="two repeats"):
        signal_to_noise([[[1.0], [2.0]]])


def test_contexts_for_power_matches_the_normal_formula():
    """sd 0.2, effect 0.05, 80% power at 95%: ((1.95996 + 0.84162) x 4)^2 = 125.6 -> 126 contexts."""
    assert contexts_for_power(0.2, 0.05) == 126
    assert contexts_for_power(0.2, 0.10) == 32  # a doubled effect needs a quarter: 31.4 -> 32
    with pytest.raises(ValueError, match="positive effect"):
        contexts_for_power(0.2, 0.0)


def test_variance_components_recover_the_parts_of_a_paired_difference():
    """Two contexts, two self-edits a side. Context 1: a [1, 3] b [0, 0]; context 2: a [2, 2] b [1, 3].
    Within: (2 + 0) and (0 + 2), mean 2; mean differences 2 - 0 = 2 and 2 - 2 = 0, observed variance 2;
    the averages contribute mean(2/2 + 0, 0 + 2/2) = 1, so between_var = 1; at 4 self-edits a side the
    difference's sd is sqrt(1 + 2/4)."""
    parts = paired_variance_components([[1, 3], [2, 2]], [[0, 0], [1, 3]])
    assert parts["between_var"] == pytest.approx(1.0) and parts["within_var"] == pytest.approx(2.0)
    assert difference_sd(parts["between_var"], parts["within_var"], 4) == pytest.approx(math.sqrt(1.5))
