import numpy as np
import pytest

from mammofuse.cohort.phantom import BreastAnatomy, render_view
from mammofuse.cohort.synth import _lesion
from mammofuse.domain import View
from mammofuse.explain.checks import brightest, tissue
from mammofuse.imaging.geometry import breast_mask
from mammofuse.imaging.pectoral import pectoral_muscle

SHAPE = (256, 128)


def phantoms(n: int, view: View = View.MLO, seed: int = 0):
    """(image, breast mask, drawn muscle mask or None) of `n` phantom breasts of every density."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]]
    for i in range(n):
        anatomy = BreastAnatomy(
            depth=float(rng.uniform(0.55, 0.8)),
            half_height=float(rng.uniform(0.34, 0.44)),
            density="abcd"[i % 4],
            lesion=_lesion(float(rng.standard_normal()), rng),
            seed=int(rng.integers(2**31)),
        )
        image, place = render_view(anatomy, view, SHAPE, rng)
        breast = breast_mask(image)
        muscle = None
        if place.muscle:
            muscle = (xx / place.muscle[0] + yy / place.muscle[1] < 1) & breast
        yield image, breast, muscle


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


class TestPectoralMuscle:
    def test_the_muscle_drawn_on_an_mlo_is_found(self):
        overlaps = []
        for image, breast, drawn in phantoms(24):
            found = pectoral_muscle(image, breast)
            overlaps.append(0.0 if found is None else iou(found, drawn))
        assert np.median(overlaps) >= 0.85 and np.mean(np.array(overlaps) >= 0.7) >= 0.85

    def test_a_breast_facing_the_other_way_gets_the_mirrored_muscle(self):
        image, breast, _ = next(phantoms(1))
        found = pectoral_muscle(image, breast)
        mirrored = pectoral_muscle(image[:, ::-1], breast[:, ::-1])
        assert found is not None and mirrored is not None
        assert iou(mirrored[:, ::-1], found) >= 0.95

    def test_a_breast_without_a_bright_edge_has_no_muscle(self):
        image = np.zeros(SHAPE, np.float32)
        image[20:236, :90] = 0.5
        assert pectoral_muscle(image, image > 0) is None

    @pytest.mark.parametrize("mask", ["breast", "tissue"])
    def test_the_brightest_spot_rule_looks_past_the_muscle(self, mask):
        """The rule that stands for "the densest tissue" finds the muscle on most MLOs when given the whole
        breast; given the tissue, on almost none."""
        on_muscle = []
        for image, breast, drawn in phantoms(24, seed=1):
            allowed = breast if mask == "breast" else tissue(image, breast, View.MLO)
            peak = np.unravel_index(np.argmax(brightest(image, allowed)), SHAPE)
            on_muscle.append(bool(drawn[peak]))
        if mask == "breast":
            assert np.mean(on_muscle) >= 0.5
        else:
            assert np.mean(on_muscle) <= 0.15

    def test_a_cc_is_left_whole(self):
        image, breast, _ = next(phantoms(1, View.CC))
        np.testing.assert_array_equal(tissue(image, breast, View.CC), breast)
