import pandas as pd

from mammofuse.evaluation.evaluate import early_epoch, unseen_scanners


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


def test_a_run_that_kept_an_early_epoch_by_its_validation_auc_is_warned():
    """15 epochs, the best validation AUC at the first (noise on a small validation split): the model
    evaluated is barely trained. A later best, the last epoch kept, or a short run say nothing."""
    val = [0.63, 0.62, 0.56, 0.45, 0.60, 0.57, 0.57, 0.52, 0.56, 0.55, 0.52, 0.50, 0.50, 0.50, 0.49]
    epochs = pd.DataFrame({"epoch": range(1, 16), "val_auc": val})
    warning = early_epoch(epochs, "best", 49)
    assert warning.startswith("the kept checkpoint is epoch 1 of 15, the best validation AUC (0.630 on 49")
    assert "0.490 at the last epoch" in warning and "train.checkpoint = 'last'" in warning
    later = epochs.assign(val_auc=epochs["val_auc"].where(epochs["epoch"] != 11, 0.7))
    assert early_epoch(later, "best", 49) is None
    assert early_epoch(epochs, "last", 49) is None
    assert early_epoch(epochs.head(4), "best", 49) is None
    assert early_epoch(None, "best", 49) is None
