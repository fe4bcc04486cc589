import pytest

from mammofuse.domain import (
    Side,
    View,
    find_view_in_text,
    parse_side,
    parse_view,
    view_from_patient_orientation,
)


class TestParseSide:
    @pytest.mark.parametrize(
        "text", ["L", "LEFT", "Lt", "left", " l ", "Left.", "links", "li.", "gauche", "izq", "sx", "左"]
    )
    def test_left_spellings_are_left(self, text):
        assert parse_side(text) is Side.LEFT

    @pytest.mark.parametrize(
        "text", ["R", "RIGHT", "Rt", "right", "rechts", "Re.", "droite", "der", "dx", "右"]
    )
    def test_right_spellings_are_right(self, text):
        assert parse_side(text) is Side.RIGHT

    @pytest.mark.parametrize("text", ["B", "both", "", "X", "LR"])
    def test_anything_else_is_unknown(self, text):
        assert parse_side(text) is None


class TestParseView:
    def test_view_position_terms(self):
        assert parse_view("CC") is View.CC
        assert parse_view("mlo") is View.MLO

    def test_snomed_codes_from_view_code_sequence(self):
        assert parse_view("R-10242") is View.CC
        assert parse_view("399368009") is View.MLO

    def test_supplementary_views_are_not_cc_or_mlo(self):
        assert parse_view("XCCL") is None
        assert parse_view("ML") is None

    def test_view_found_as_a_word_in_free_text(self):
        assert find_view_in_text("R MLO 2D") is View.MLO
        assert find_view_in_text("Left cranio-caudal") is View.CC
        assert find_view_in_text("screening") is None


class TestViewFromPatientOrientation:
    def test_cbis_ddsm_writes_the_view_itself(self):
        assert view_from_patient_orientation("MLO") is View.MLO
        assert view_from_patient_orientation("CC") is View.CC

    def test_oblique_column_direction_means_mlo(self):
        assert view_from_patient_orientation(["A", "FR"]) is View.MLO

    def test_pure_left_right_column_direction_means_cc(self):
        assert view_from_patient_orientation("P\\L") is View.CC

    def test_missing_is_unknown(self):
        assert view_from_patient_orientation(None) is None
