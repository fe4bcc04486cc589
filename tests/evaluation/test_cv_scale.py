import numpy as np
import pandas as pd
import pytest

from mammofuse.evaluation.cv import standardised


def logits(p: np.ndarray) -> np.ndarray:
    return np.log(p / (1 - p))


def test_a_fold_on_another_scale_gets_the_same_scores():
    """Logits stretched and shifted (held-out and validation breasts alike) standardise to the same scores."""
    rng = np.random.default_rng(0)
    val, held_out = rng.uniform(0.05, 0.95, 40), rng.uniform(0.05, 0.95, 30)
    squash = lambda p: 1 / (1 + np.exp(-(0.4 * logits(p) - 2)))  # noqa: E731
    a = standardised(pd.Series(held_out), pd.Series(val))
    b = standardised(pd.Series(squash(held_out)), pd.Series(squash(val)))
    assert np.allclose(a, b) and np.mean(standardised(pd.Series(val), pd.Series(val))) == pytest.approx(0)


def test_a_validation_part_too_small_for_an_sd_shifts_only_and_no_scores_give_none():
    held_out = pd.Series([0.2, 0.5])
    assert np.allclose(standardised(held_out, pd.Series([0.5])), logits(held_out.to_numpy()))
    assert np.isnan(standardised(None, None))  # no clinical baseline in the fold
