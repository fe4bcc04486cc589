import json

import numpy as np
import pandas as pd
import pytest

from mammofuse.data.clinical import ClinicalEncoder

TRAIN = pd.DataFrame(
    {"age": [40, 50, 60, None], "grade": [1, 2, 2, None], "her2": ["pos", "neg", "neg", "neg"]}
)


class TestFit:
    def test_statistics_come_from_the_training_rows_only(self):
        enc = ClinicalEncoder.fit(TRAIN, ["age"], ["grade", "her2"], impute=True)
        assert enc.medians["age"] == 50 and enc.categories["grade"] == ["1", "2"]
        other = pd.DataFrame({"age": [1000, None], "grade": [3, None], "her2": ["neg", "pos"]})
        x = enc.transform(other)
        # ages 40, 50, 60 and the imputed 50: mean 50, population sd sqrt(50)
        assert x[0, 0] == pytest.approx((1000 - 50) / np.sqrt(50)) and x[1, 0] == pytest.approx(0.0)
        grade = [enc.feature_names.index(f"grade={g}") for g in ("1", "2")]
        assert x[:, grade].tolist() == [[0, 0], [0, 1]]  # an unseen 3 is neither; a missing one the mode 2

    def test_impute_adds_missing_indicators_and_fills_with_the_median_and_mode(self):
        enc = ClinicalEncoder.fit(TRAIN, ["age"], ["grade", "her2"], impute=True)
        x = enc.transform(TRAIN)
        names = enc.feature_names
        assert names == [
            "age",
            "age_missing",
            "grade_missing",
            "her2_missing",
            "grade=1",
            "grade=2",
            "her2=neg",
            "her2=pos",
        ]
        assert x[3, names.index("age_missing")] == 1 and x[3, names.index("grade=2")] == 1
        assert x[3, 0] == pytest.approx((50 - enc.means["age"]) / enc.stds["age"])

    def test_drop_policy_has_no_indicators(self):
        enc = ClinicalEncoder.fit(TRAIN.dropna(), ["age"], ["grade"], impute=False)
        assert enc.feature_names == ["age", "grade=1", "grade=2"]

    def test_numeric_columns_are_standardised_on_train(self):
        enc = ClinicalEncoder.fit(TRAIN.dropna(), ["age"], [], impute=False)
        x = enc.transform(TRAIN.dropna())
        assert x[:, 0].mean() == pytest.approx(0, abs=1e-6) and x[:, 0].std() == pytest.approx(1, abs=1e-6)


class TestUnknownValues:
    def test_an_unseen_category_is_reported_and_encoded_as_zeros(self):
        enc = ClinicalEncoder.fit(TRAIN, ["age"], ["grade", "her2"], impute=True)
        new = pd.DataFrame({"age": [45], "grade": [3], "her2": ["neg"]})
        assert enc.unknown_values(new) == [(0, "grade", "3")]
        assert enc.transform(new)[0, 4:6].sum() == 0

    def test_a_whole_number_written_as_a_decimal_is_the_category_of_that_number(self):
        """A grade column saved through a table with a gap is a float column: '3.0' at predict was 'outside
        what the model knows (known: 1, 2, 3)', every breast unscored. A model trained on such a file reads
        a '3' as its '3.0'."""
        enc = ClinicalEncoder.fit(TRAIN, [], ["grade"], impute=False)
        new = pd.DataFrame({"grade": ["2.0", "2", 2.0, "1.00", "1.5"]})
        assert enc.unknown_values(new) == [(4, "grade", "1.5")]
        assert enc.transform(new).tolist() == [[0, 1], [0, 1], [0, 1], [1, 0], [0, 0]]
        written = ClinicalEncoder.fit(TRAIN.assign(grade=["1.0", "2.0", "2.0", None]), [], ["grade"], False)
        assert written.transform(new).tolist() == enc.transform(new).tolist()

    def test_a_missing_category_is_missing_also_in_a_column_pandas_keeps_as_strings(self):
        enc = ClinicalEncoder.fit(TRAIN, [], ["her2"], impute=False)
        new = pd.DataFrame([{"her2": "neg"}, {"her2": None}, {}], columns=["her2"])  # pandas 3: str dtype
        assert enc.unknown_values(new) == [(1, "her2", "missing"), (2, "her2", "missing")]  # not 'nan'

    def test_grade_read_as_float_is_the_same_category(self):
        enc = ClinicalEncoder.fit(TRAIN, [], ["grade"], impute=False)
        assert enc.unknown_values(pd.DataFrame({"grade": [2.0, "2"]})) == []


class TestSaveLoad:
    def test_json_round_trip_gives_the_same_encoding(self, tmp_path):
        enc = ClinicalEncoder.fit(TRAIN, ["age"], ["grade", "her2"], impute=True)
        enc.save(tmp_path / "encoder.json")
        again = ClinicalEncoder.load(tmp_path / "encoder.json")
        np.testing.assert_array_equal(again.transform(TRAIN), enc.transform(TRAIN))

    def test_a_category_spelt_another_way_at_another_site_is_the_training_one(self):
        enc = ClinicalEncoder.fit(TRAIN, [], ["her2"], impute=False)
        new = pd.DataFrame({"her2": ["POS", " Neg ", "pos", "positive"]})
        assert enc.unknown_values(new) == [(3, "her2", "positive")]  # a word unlike any: not guessed
        np.testing.assert_array_equal(enc.transform(new), [[0, 1], [1, 0], [0, 1], [0, 0]])


class TestBeyondTraining:
    def test_values_far_outside_the_training_range_are_named(self):
        enc = ClinicalEncoder.fit(TRAIN, ["age"], ["her2"], impute=True)
        assert enc.ranges == {"age": (40.0, 60.0)}  # the training rows' own values, NA left out
        new = pd.DataFrame({"age": [560, 64, 36, None, 30], "her2": ["pos"] * 5})
        # the margin is a quarter of the range, 5 years: 36 and 64 are within it
        assert enc.beyond_training(new) == [
            "clinical 'age' 560 (training 40-60)",
            "",
            "",
            "",
            "clinical 'age' 30 (training 40-60)",
        ]

    def test_an_encoder_saved_before_it_kept_ranges_flags_nothing(self, tmp_path):
        enc = ClinicalEncoder.fit(TRAIN, ["age"], [], impute=True)
        enc.save(tmp_path / "encoder.json")
        assert ClinicalEncoder.load(tmp_path / "encoder.json").ranges == {"age": (40.0, 60.0)}
        data = json.loads((tmp_path / "encoder.json").read_text())
        del data["ranges"]
        (tmp_path / "encoder.json").write_text(json.dumps(data))
        assert ClinicalEncoder.load(tmp_path / "encoder.json").beyond_training(
            pd.DataFrame({"age": [560]})
        ) == [""]


class TestUnitSlips:
    """A size typed in cm in a column of mm ("2.3" for 23 mm) lies inside the training range: one new breast
    has no column of its own to show it, so the training values are the column."""

    SIZES = pd.DataFrame({"size": [float(s) for s in range(10, 50, 2)]})  # 20 whole mm, 10-48

    def slips(self, enc, sizes, plain, written=None):
        new = pd.DataFrame({"size": sizes})
        return enc.unit_slips(new, {"size": "mm"}, written or {}, {"size": plain})

    def test_a_number_written_unlike_the_training_values_and_among_them_in_another_unit_is_named(self):
        enc = ClinicalEncoder.fit(self.SIZES, ["size"], [], impute=False)
        assert enc.spreads["size"].whole == 1.0
        found = self.slips(enc, [2.3, 2.0, 23.0, 0.9, 2.3, None], [False, True, True, False, None, None])
        assert found == [
            "clinical 'size' 2.3 mm (training quartiles 19.5-38.5 mm): written in cm (23 mm)?",
            "",  # a real 2 mm tumour, written whole as the training sizes are
            "",  # near the training values
            "",  # 9 mm in cm: below the training values' 10th percentile
            "",  # written with its unit ("2.3 mm"): meant so
            "",
        ]

    def test_a_site_that_writes_cm_is_judged_in_what_it_wrote(self):
        enc = ClinicalEncoder.fit(self.SIZES, ["size"], [], impute=False)
        # "2.3" read in cm is 23 mm, near; "23", 230 mm, is 23 mm written in mm: its site's form is its own
        # (decimals in cm), not the training values' (whole mm), so it is judged by its distance alone
        assert self.slips(enc, [23.0, 230.0, 3.0], [False, True, False], {"size": "cm"}) == [
            "",
            "clinical 'size' 230 mm (training quartiles 19.5-38.5 mm): written in mm (23 mm)?",
            "",  # "0.3": 3 mm, far below; read in mm 0.3 mm, among none
        ]

    def test_few_training_values_or_an_encoder_saved_before_judge_nothing(self, tmp_path):
        few = ClinicalEncoder.fit(self.SIZES.head(19), ["size"], [], impute=False)
        assert few.spreads == {} and self.slips(few, [2.3], [False]) == [""]
        enc = ClinicalEncoder.fit(self.SIZES, ["size"], [], impute=False)
        enc.save(tmp_path / "encoder.json")
        assert ClinicalEncoder.load(tmp_path / "encoder.json").spreads == enc.spreads
        data = json.loads((tmp_path / "encoder.json").read_text())
        del data["spreads"]
        (tmp_path / "encoder.json").write_text(json.dumps(data))
        assert self.slips(ClinicalEncoder.load(tmp_path / "encoder.json"), [2.3], [False]) == [""]
