import cv2
import numpy as np
import pytest

from mammofuse.cohort.phantom import BreastAnatomy, Lesion, add_film_edge, burn_in_marker, render_view
from mammofuse.config import PreprocessConfig
from mammofuse.domain import Side, View
from mammofuse.imaging.cache import dequantize
from mammofuse.imaging.decode import PixelMeta
from mammofuse.imaging.geometry import (
    fit_shape,
    map_to_original,
    needs_flip,
    pad,
    seed_parity,
    to_output,
)
from mammofuse.imaging.preprocess import preprocess_pixels


def phantom(view=View.CC, shape=(300, 240), seed=0):
    rng = np.random.default_rng(seed)
    lesion = Lesion(0.5, 0.1, -0.1, 0.03, 10, 0.04, rng.normal(0, 0.5, (10, 3)))
    anatomy = BreastAnatomy(depth=0.6, half_height=0.4, density="b", lesion=lesion, seed=seed)
    img, place = render_view(anatomy, view, shape, rng)
    return img, place, rng


def breast_mode(
    img: np.ndarray, side: Side, shape=(256, 128), blank: bool = True, spacing=None, header_spacing=None
):
    """The production path ('breast' mode of preprocess_pixels) on an image stored as 12-bit values."""
    raw = np.round(np.clip(img, 0, 1) * 4095).astype(np.uint16)
    cfg = PreprocessConfig(size=shape, voi="none", blank_outside_breast=blank, spacing_mm=spacing)
    meta = PixelMeta(bits_stored=12, spacing_mm=header_spacing)
    done = preprocess_pixels(raw, meta, side, cfg)
    return dequantize(done.image), done.geometry, done.laterality_disagrees


def centroid(img: np.ndarray) -> np.ndarray:
    return np.argwhere(img > 0.5 * img.max()).mean(axis=0)


class TestFlipDecision:
    def test_left_breast_with_chest_wall_left_stays(self):
        assert needs_flip(Side.LEFT, chest_left_by_pixels=True) == (False, False)

    def test_right_breast_with_chest_wall_right_is_flipped(self):
        assert needs_flip(Side.RIGHT, chest_left_by_pixels=False) == (True, False)

    def test_pixels_win_over_a_wrong_tag_and_the_disagreement_is_reported(self):
        assert needs_flip(Side.LEFT, chest_left_by_pixels=False) == (True, True)


class TestBreastCrop:
    def test_finds_the_breast_despite_a_burned_in_marker_and_a_film_edge(self):
        img, place, rng = phantom()
        marked = add_film_edge(burn_in_marker(img, "L CC", True, rng), chest_wall_left=True)
        out, g, _ = breast_mode(marked, Side.LEFT, (256, 128))
        y0, y1, x0, x1 = g.box
        truth = np.argwhere(img > 0.15)
        assert x0 <= 2 and x1 < 0.8 * img.shape[1]  # stops before the marker and the film edge
        assert y0 <= truth[:, 0].min() + 3 and y1 >= truth[:, 0].max() - 3
        assert x1 >= truth[:, 1].max() - 3

    def test_a_marker_inside_the_crop_box_is_blanked_and_the_breast_kept(self):
        img, _, _ = phantom()
        unmarked, g, _ = breast_mode(img, Side.LEFT)
        y0, y1, x0, x1 = g.box
        marked = img.copy()
        corner = (slice(y0 + 2, y0 + 14), slice(x1 - 16, x1 - 4))  # inside the box, beside the curved edge
        assert marked[corner].max() < 0.05  # background there: the breast does not reach the corner
        marked[corner] = 0.95  # a burned-in marker block
        on, g_on, _ = breast_mode(marked, Side.LEFT)
        off, g_off, _ = breast_mode(marked, Side.LEFT, blank=False)
        assert g_on.box == g_off.box == g.box  # the marker is not part of the breast
        assert off.max() > 0.9 and (off > 0.9).sum() > 10  # without blanking the marker reaches the input
        np.testing.assert_array_equal(on, unmarked)  # with blanking it leaves no trace
        breast = unmarked > 0
        np.testing.assert_array_equal(on[breast], off[breast])  # and the breast itself is untouched

    @pytest.mark.parametrize("shape, shown_shape", [((300, 240), (300, 240)), ((1600, 1280), (512, 410))])
    def test_the_original_shown_beside_a_map_keeps_the_breast_and_no_burned_in_text(self, shape, shown_shape):
        """The figures draw each map on the original image too, from the display copy preprocessing makes:
        burned-in text there (here a marker; on some exports a name or a date) is blanked as in the model's
        input, the breast is not; a large image is shrunk to at most 512 pixels a side."""
        img, _, rng = phantom(shape=shape)
        marked = burn_in_marker(img, "DOE J", True, rng)  # a name
        text = marked != img
        assert text.sum() > 20 and marked[text].max() > 0.9
        raw = np.round(marked * 4095).astype(np.uint16)
        cfg = PreprocessConfig(voi="none")
        shown = (
            preprocess_pixels(raw, PixelMeta(bits_stored=12), Side.LEFT, cfg).display.astype(np.float32) / 255
        )
        assert shown.shape == shown_shape
        small = (shown_shape[1], shown_shape[0])  # OpenCV's (width, height)
        near_text = cv2.resize(
            cv2.dilate(text.astype(np.uint8), np.ones((9, 9))), small, interpolation=cv2.INTER_AREA
        )
        assert shown[near_text > 0].max() == 0.0
        inside = cv2.erode((img > 0.15).astype(np.uint8), np.ones((9, 9)))  # the breast, off its edge
        breast = cv2.resize(inside, small, interpolation=cv2.INTER_NEAREST) > 0
        expected = cv2.resize(np.round(marked * 4095) / 4095, small, interpolation=cv2.INTER_AREA)
        assert (shown[breast] > 0).all()  # none of the breast blanked,
        assert abs(shown[breast].mean() - expected[breast].mean()) < 1 / 255  # its brightness kept
        assert np.abs(shown[breast] - expected[breast]).mean() < 0.02  # pixel for pixel, not shifted

    def test_right_breast_comes_out_with_its_chest_wall_on_the_left(self):
        img, _, _ = phantom()
        out, g, disagrees = breast_mode(img[:, ::-1], Side.RIGHT, (256, 128))
        assert g.flipped and not disagrees
        assert out[:, :8].mean() > out[:, -8:].mean()

    def test_mlo_with_pectoral_muscle(self):
        img, _, _ = phantom(View.MLO)
        out, g, _ = breast_mode(img, Side.LEFT, (256, 128))
        assert not g.flipped and out[:, :8].mean() > 0.2


class TestFitAndPad:
    def test_keeps_the_aspect_ratio_and_pads_away_from_the_chest_wall(self):
        new, scale, offset = fit_shape((100, 20), (200, 200))
        assert new == (200, 40) and scale == 2.0 and offset == (0, 0)
        out = pad(np.ones(new, np.float32), (200, 200), offset)
        assert out[:, :40].min() == pytest.approx(1.0) and out[:, 40:].max() == 0.0

    def test_a_wide_crop_is_centred_vertically(self):
        new, scale, offset = fit_shape((50, 100), (200, 100))
        assert new == (50, 100) and offset == (75, 0)


class TestMappingBack:
    def test_a_point_goes_back_to_where_it_came_from(self):
        img, place, _ = phantom(shape=(400, 320))
        img = 0.8 * img[:, ::-1]  # a right breast: the pipeline flips it
        dot = (200, 320 - 1 - 130)
        img[dot[0] - 2 : dot[0] + 3, dot[1] - 2 : dot[1] + 3] = 1.0  # brighter than anything else
        out, g, _ = breast_mode(img, Side.RIGHT)
        found = np.unravel_index(np.argmax(out), out.shape)
        heat = np.zeros_like(out)
        heat[found] = 1.0
        back = map_to_original(heat, g)
        assert back.shape == img.shape and np.hypot(*(centroid(back) - dot)) < 3.0

    @pytest.mark.parametrize("side", [Side.LEFT, Side.RIGHT])
    def test_a_point_marked_on_the_original_lands_where_the_preprocessing_put_its_pixels(self, side):
        img, _, _ = phantom(shape=(400, 320))
        dot = (200, 130)
        if side is Side.RIGHT:  # stored mirrored: the pipeline flips it back
            img, dot = img[:, ::-1], (200, 320 - 1 - 130)
        img = 0.8 * img
        img[dot[0] - 2 : dot[0] + 3, dot[1] - 2 : dot[1] + 3] = 1.0  # brighter than anything else
        out, g, _ = breast_mode(img, side)
        found = np.unravel_index(np.argmax(out), out.shape)
        assert g.flipped is (side is Side.RIGHT)
        assert np.hypot(*(np.array(to_output(*dot, g)) - found)) < 1.5  # the dot is 3 output pixels wide

    def test_a_map_near_the_chest_wall_lands_on_the_chest_wall_side_of_a_right_breast(self):
        img, _, _ = phantom(shape=(400, 320))
        img = img[:, ::-1].copy()
        out, g, _ = breast_mode(img, Side.RIGHT)
        heat = np.zeros_like(out)
        heat[100:110, 10:20] = 1.0  # near the chest wall in output space (the left edge)
        back = map_to_original(heat, g)
        assert back.shape == img.shape
        assert centroid(back)[1] > 0.75 * img.shape[1]  # the chest wall of a right breast is on the right


def rows_with_breast(out: np.ndarray) -> int:
    return int((out > 0.05).any(axis=1).sum())


class TestPhysicalScale:
    def test_one_breast_at_two_detector_resolutions_comes_out_the_same_size(self):
        img, _, _ = phantom(shape=(300, 240))
        fine = cv2.resize(
            img, (480, 600), interpolation=cv2.INTER_LINEAR
        )  # twice the pixels, half the spacing
        coarse_out, g, _ = breast_mode(img, Side.LEFT, spacing=1.6, header_spacing=0.8)
        fine_out, g_fine, _ = breast_mode(fine, Side.LEFT, spacing=1.6, header_spacing=0.4)
        box_rows = g.box[1] - g.box[0]
        assert abs(rows_with_breast(coarse_out) - box_rows / 2) <= 4  # 0.8 mm pixels become 1.6 mm pixels
        assert abs(rows_with_breast(fine_out) - rows_with_breast(coarse_out)) <= 3
        assert g.spacing_mm == g_fine.spacing_mm == 1.6
        fitted, g_fit, _ = breast_mode(img, Side.LEFT)  # without: the breast box fills the output
        assert g_fit.spacing_mm is None and rows_with_breast(fitted) > rows_with_breast(coarse_out) + 20

    def test_a_breast_beyond_the_field_of_view_is_cut_keeping_the_chest_wall(self):
        img, _, _ = phantom(shape=(300, 240))
        out, g, _ = breast_mode(
            img[:, ::-1].copy(), Side.RIGHT, shape=(128, 64), spacing=1.0, header_spacing=1.0
        )
        assert out.shape == (128, 64) and g.flipped
        assert (g.box[1] - g.box[0], g.box[3] - g.box[2]) == (128, 64)  # cut to the field
        assert g.box[3] >= 235  # a right breast's chest wall (right edge) is kept
        assert out[:, :3].mean() > 0.2  # and lands on the left

    def test_without_a_header_spacing_the_breast_is_fitted(self):
        img, _, _ = phantom(shape=(300, 240))
        out, g, _ = breast_mode(img, Side.LEFT, spacing=1.0, header_spacing=None)
        fitted, _, _ = breast_mode(img, Side.LEFT)
        assert g.spacing_mm is None
        np.testing.assert_array_equal(out, fitted)


class TestSeedParity:
    def test_the_study_input_is_a_200_square_centre_crop(self):
        img, _, _ = phantom(shape=(400, 320))
        out, g = seed_parity(img, 256, 200)
        assert out.shape == (200, 200) and not g.flipped
        back = map_to_original(np.ones_like(out), g)
        assert back.shape == img.shape and back[200, 160] > 0.9 and back[5, 160] == 0

    def test_a_point_marked_on_the_original_lands_where_the_centre_crop_put_it(self):
        img, _, _ = phantom(shape=(400, 320))
        img = 0.8 * img
        dot = (230, 170)
        img[dot[0] - 2 : dot[0] + 3, dot[1] - 2 : dot[1] + 3] = 1.0  # brighter than anything else
        out, g = seed_parity(img, 256, 200)  # a window into the resized image: negative offsets
        found = np.unravel_index(np.argmax(out), out.shape)
        assert np.hypot(*(np.array(to_output(*dot, g)) - found)) < 1.5
