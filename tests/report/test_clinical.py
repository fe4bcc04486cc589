import numpy as np
import pandas as pd

from mammofuse.report.clinical import subgroups, table_one


def test_a_subgroup_too_small_for_an_interval_gets_none_instead_of_a_degenerate_one():
    """Density 'a': three negatives ranked below five positives. Every bootstrap resample of them gives AUC 1,
    so a percentile interval would read [1.000, 1.000]: certainty from eight breasts. Density 'b' (30 of each
    class) and 'c' (8 of each) get an interval, 'c' flagged as unstable."""
    rng = np.random.default_rng(0)
    groups = {"a": (5, 3), "b": (30, 30), "c": (8, 8)}
    rows = []
    for density, (positives, negatives) in groups.items():
        for label, count in ((1, positives), (0, negatives)):
            for _ in range(count):
                probability = 0.9 if density == "a" and label else 0.1 if density == "a" else rng.random()
                rows.append({"density": density, "label": label, "probability": probability})
    scored = pd.DataFrame(rows).assign(patient_id=lambda d: [f"P{i}" for i in range(len(d))])
    found = {row["group"]: row for row in subgroups(scored)}
    assert found["a"]["auc"] == "1.000 (no interval)" and "too few for an interval" in found["a"]["note"]
    assert "[" in found["b"]["auc"] and found["b"]["note"] == ""
    low, high = map(float, found["c"]["auc"].split("[")[1].rstrip("]").split(", "))
    assert low < high and "unstable" in found["c"]["note"]


def test_a_subgroup_whose_classes_separate_in_every_resample_is_flagged_with_its_interval():
    """Density 'a': 25 positives all scored above 25 negatives. Every resample gives AUC 1, so the interval
    reads [1.000, 1.000]; enough breasts for an interval, but the report says it has no width."""
    rng = np.random.default_rng(0)
    rows = [
        {"density": density, "label": label, "probability": score}
        for density in ("a", "b")
        for label in (0, 1)
        for score in (0.5 * rng.random(25) + (0.5 * label if density == "a" else 0.25))
    ]
    scored = pd.DataFrame(rows).assign(patient_id=lambda d: [f"P{i}" for i in range(len(d))])
    found = {row["group"]: row for row in subgroups(scored)}
    assert found["a"]["auc"] == "1.000 [1.000, 1.000]" and "no width" in found["a"]["note"]
    assert "no width" not in found["b"]["note"]


def breasts(units: list[str]) -> pd.DataFrame:
    n = len(units)
    return pd.DataFrame(
        {
            "patient_id": [f"P{i}" for i in range(n)],
            "label": [i % 2 for i in range(n)],
            "split": ["train"] * (n - 2) + ["test"] * 2,
            "grade": ["1", "2"] * (n // 2),
            "cc_manufacturer": units,
        }
    )


def test_table_one_shows_the_imaging_unit_by_split_where_there_is_more_than_one():
    table = table_one(breasts(["A", "A", "A", "A", "B", "B"]), {"categorical": ["grade"]})
    assert table["columns"] == ["all", "label 1", "label 0", "train", "test"]
    rows = {row["variable"]: row["values"] for row in table["rows"]}
    assert "imaging unit (CC manufacturer), n (%)" in rows and "grade, n (%)" in rows
    assert rows["B"] == ["2 (33\u00a0%)", "1 (33\u00a0%)", "1 (33\u00a0%)", "0 (0\u00a0%)", "2 (100\u00a0%)"]
    one_unit = table_one(breasts(["A"] * 6), {"categorical": ["grade"]})
    assert not any(row["variable"].startswith("imaging unit") for row in one_unit["rows"])
