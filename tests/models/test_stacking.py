import numpy as np
from sklearn.linear_model import LogisticRegression

from mammofuse.models.stacking import ClinicalBaseline


def test_the_stored_clinical_baseline_scores_exactly_as_the_fitted_regression():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 6))
    y = (x[:, 0] - x[:, 3] + rng.normal(size=200) > 0).astype(int)
    stored = ClinicalBaseline.model_validate_json(ClinicalBaseline.fit(x, y, seed=0).model_dump_json())
    fitted = LogisticRegression(max_iter=2000, random_state=0).fit(x, y)
    new = rng.normal(size=(50, 6))
    np.testing.assert_array_equal(stored.apply(new), fitted.predict_proba(new)[:, 1])
