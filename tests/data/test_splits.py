import numpy as np
import pandas as pd
import pytest

from mammofuse.config import SplitConfig
from mammofuse.data.splits import breast_dates, held_out, make_splits, split_table
from mammofuse.problems import DataError


def cohort(n_patients=300, seed=0) -> pd.DataFrame:
    """Patients with one or two breasts; about a quarter of the breasts positive."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_patients):
        for side in ("L", "R") if rng.random() < 0.2 else (rng.choice(["L", "R"]),):
            rows.append({"patient_id": f"P{i}", "side": side, "label": int(rng.random() < 0.26)})
    return pd.DataFrame(rows)


class TestHoldoutSplit:
    def test_no_patient_is_in_two_sets(self):
        splits = make_splits(cohort(), SplitConfig(seed=3))
        assert (splits.groupby("patient_id")["split"].nunique() == 1).all()

    def test_proportions_follow_the_study(self):
        splits = make_splits(cohort(), SplitConfig())
        share = splits["split"].value_counts(normalize=True)
        assert share["test"] == pytest.approx(0.10, abs=0.01)
        assert share["val"] == pytest.approx(0.09, abs=0.01)

    @pytest.mark.parametrize("fraction", [0.15, 0.3, 0.4])
    def test_the_configured_fraction_of_each_class_is_held_out_within_one_patient(self, fraction):
        table = cohort(seed=5)
        mask = held_out(table["label"].to_numpy(), table["patient_id"].to_numpy(), fraction, seed=0)
        for label in (0, 1):
            in_class = table["label"].to_numpy() == label
            target = fraction * in_class.sum()
            assert abs(mask[in_class].sum() - target) <= 2  # a patient has at most two breasts
        assert table[mask]["patient_id"].isin(table[~mask]["patient_id"]).sum() == 0

    def test_labels_are_stratified(self):
        splits = make_splits(cohort(), SplitConfig())
        rates = splits.groupby("split")["label"].mean()
        assert rates.max() - rates.min() < 0.06

    def test_same_seed_same_split_and_another_seed_another(self):
        a, b = make_splits(cohort(), SplitConfig(seed=1)), make_splits(cohort(), SplitConfig(seed=1))
        c = make_splits(cohort(), SplitConfig(seed=2))
        assert a.equals(b) and not a["split"].equals(c["split"])

    def test_too_few_patients_is_a_clear_error(self):
        with pytest.raises(DataError, match="too few"):
            make_splits(cohort(5), SplitConfig())


def dated(table: pd.DataFrame, undated: int = 0) -> pd.DataFrame:
    """Each patient examined on a day of their own, in an order unrelated to their number; the CC's date as
    DICOM writes it, the MLO's a day later; the first `undated` patients without a date."""
    patients = table["patient_id"].unique()
    day = dict(zip(patients, np.random.default_rng(1).permutation(len(patients))))
    when = pd.Timestamp("2020-01-01") + pd.to_timedelta(table["patient_id"].map(day) * 3, unit="D")
    out = table.assign(
        cc_exam_date=when.dt.strftime("%Y%m%d"),
        mlo_exam_date=(when + pd.Timedelta(days=1)).dt.strftime("%Y%m%d"),
    )
    out.loc[out["patient_id"].isin(patients[:undated]), ["cc_exam_date", "mlo_exam_date"]] = np.nan
    return out


class TestTemporalSplit:
    def test_the_test_split_is_the_patients_examined_last(self):
        table = dated(cohort(), undated=30)
        splits = make_splits(table, SplitConfig(method="temporal"))
        dates = breast_dates(table)
        test = (splits["split"] == "test").to_numpy()
        assert dates[test].min() > dates[~test].max()  # every test exam after every other
        assert (splits.groupby("patient_id")["split"].nunique() == 1).all()
        assert test.mean() == pytest.approx(0.10, abs=0.01) and dates[test].notna().all()
        assert dates[test].max() == dates.max()
        assert (splits["split"] == "val").mean() == pytest.approx(0.09, abs=0.01)
        shown = split_table(splits, dates)
        assert shown.loc["test", "exams"].endswith(dates.max().strftime("%Y-%m-%d"))

    def test_it_depends_on_the_dates_not_the_seed(self):
        table = dated(cohort())
        a, b = (make_splits(table, SplitConfig(method="temporal", seed=s)) for s in (1, 2))
        assert (a["split"] == "test").equals(b["split"] == "test") and not a["split"].equals(b["split"])

    def test_without_dates_it_is_a_clear_error(self):
        with pytest.raises(DataError, match="split.method = 'temporal' needs dates, and no breast has one"):
            make_splits(dated(cohort(), undated=400), SplitConfig(method="temporal"))

    def test_by_the_labels_dates_where_the_exams_carry_none(self):
        table = dated(cohort())
        table["label_date"] = table["cc_exam_date"]  # e.g. the surgery, as ingest keeps labels.date_column's
        table[["cc_exam_date", "mlo_exam_date"]] = "20250101"  # de-identified: one date for every exam
        splits = make_splits(table, SplitConfig(method="temporal", date="label"))
        test = (splits["split"] == "test").to_numpy()
        dates = breast_dates(table, "label")
        assert dates[test].min() > dates[~test].max()
        with pytest.raises(DataError, match="split.date = 'label' needs the labels' dates"):
            make_splits(table.drop(columns="label_date"), SplitConfig(method="temporal", date="label"))

    def test_one_date_for_every_exam_is_a_clear_error(self):
        table = cohort().assign(cc_exam_date="20250101", mlo_exam_date="20250101")  # a de-identified export
        with pytest.raises(DataError, match="every dated exam is of 2025-01-01, so time cannot split them"):
            make_splits(table, SplitConfig(method="temporal"))


class TestFolds:
    def test_k_folds_are_grouped_and_cover_everyone(self):
        splits = make_splits(cohort(), SplitConfig(folds=5))
        assert set(splits["fold"]) == {0, 1, 2, 3, 4}
        assert (splits.groupby("patient_id")["fold"].nunique() == 1).all()

    def test_the_table_counts_positives_and_negatives(self):
        table = split_table(make_splits(cohort(), SplitConfig(folds=3)))
        assert (table["positive"] + table["negative"] == table["breasts"]).all()


class TestUnusableSplits:
    def test_a_part_without_a_class_is_an_error(self):
        table = cohort()
        table["label"] = 0
        table.loc[:2, "label"] = 1  # three positives: the test or validation part gets none
        with pytest.raises(DataError, match="split of .* breasts has no positive breast"):
            make_splits(table, SplitConfig())
