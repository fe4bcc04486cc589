import pandas as pd

from mammofuse.evaluation.evaluate import unseen_scanners


def test_test_breasts_from_a_unit_no_training_breast_came_from_are_warned():
    data = pd.DataFrame(
        {
            "split": ["train"] * 4 + ["val", "test", "test", "test"],
            "cc_manufacturer": ["A", "A", "A", "B", "C", "A", "C", None],
        }
    )
    warning = unseen_scanners(data)
    assert warning.startswith("2 of 3 test breasts were imaged on a unit no training breast was (C, unknown)")
    data.loc[data["split"] == "test", "cc_manufacturer"] = "B"  # a scanner some training breasts came from
    assert unseen_scanners(data) is None
    assert unseen_scanners(data.drop(columns="cc_manufacturer")) is None  # an image table without headers
