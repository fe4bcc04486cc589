import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mammofuse.cli import main
from mammofuse.config import ModelConfig
from mammofuse.domain import VIEWS, Side, View
from mammofuse.evaluation.compare import maps_lines
from mammofuse.explain import CASCADE_BREASTS
from mammofuse.explain.checks import (
    Region,
    brightest,
    cascade,
    cascade_stages,
    localise,
    localise_tiles,
    paired_localisation,
    read_regions,
    redrawn,
    region_mask,
    score_map,
    summarise,
    summary_lines,
    tile_area,
)
from mammofuse.explain.explain import Sampled, cascade_table
from mammofuse.explain.gradcam import gradcam
from mammofuse.imaging.cache import display_path
from mammofuse.imaging.geometry import Geometry, as_is
from mammofuse.models import create_model
from mammofuse.problems import DataError, Problems
from mammofuse.runs import Run

TINY = ModelConfig(backbone="tiny_cnn", pretrained="none")
FLAT = Geometry((100, 80), (0, 100, 0, 80), False, 1.0, (0, 0), (100, 80))  # the input is the original


class TestRegions:
    def test_reads_circles_and_boxes_and_names_the_rows_it_cannot_use(self, tmp_path):
        path = tmp_path / "regions.csv"
        path.write_text(
            "patient_id,side,view,x,y,radius,x0,y0,x1,y1\n"
            "P1,L,CC,30,40,5,,,,\n"
            "P1,left,MLO,,,,10,20,30,50\n"
            "P1,L,MLO,60,70,4,,,,\n"  # a second region on the same image
            "P2,X,CC,30,40,5,,,,\n"  # no side
            "P2,R,CC,thirty,40,5,,,,\n"  # no number
            "P3,R,CC,,,,30,20,10,50\n"  # x1 < x0
        )
        problems = Problems()
        regions = read_regions(path, problems)
        assert regions[("P1", Side.LEFT, View.CC)] == [Region(35, 25, 45, 35, ellipse=True)]
        assert regions[("P1", Side.LEFT, View.MLO)] == [
            Region(20, 10, 50, 30, ellipse=False),
            Region(66, 56, 74, 64, ellipse=True),
        ]
        assert len(regions) == 2
        reasons = [p.reason for p in problems.items]
        assert [r.split(":")[0] for r in reasons] == [
            "regions.csv line 5",
            "regions.csv line 6",
            "regions.csv line 7",
        ]
        assert "side 'X'" in reasons[0] and "no region" in reasons[1]

    def test_a_file_without_region_columns_is_refused_with_what_it_needs(self, tmp_path):
        path = tmp_path / "regions.csv"
        path.write_text("patient_id,side,view,label\nP1,L,CC,1\n")
        with pytest.raises(DataError, match=r"regions.csv: no region columns: expected x, y, radius"):
            read_regions(path, Problems())

    def test_a_region_lands_where_the_preprocessing_put_its_pixels(self):
        # a right breast, cropped to rows 20-120 and columns 40-140 of 200 x 160, halved and flipped
        g = Geometry((200, 160), (20, 120, 40, 140), True, 0.5, (3, 0), (56, 50))
        mask = Region(60, 120, 70, 130, ellipse=False).mask(g)  # original rows 60-70, columns 120-130
        rows, cols = np.nonzero(mask)
        assert (rows.min(), rows.max()) == (23, 27)  # 3 + (60 - 20) / 2 .. 3 + (70 - 20) / 2, pixel centres
        assert (cols.min(), cols.max()) == (5, 9)  # mirrored: (139 - 130) / 2 .. (139 - 120) / 2


class TestLocalise:
    def test_a_map_on_the_region_hits_it_and_a_map_elsewhere_does_not(self):
        breast = np.zeros((100, 80), bool)
        breast[10:90, :60] = True
        region = Region(40, 20, 50, 30, ellipse=False).mask(FLAT)
        yy, xx = np.mgrid[:100, :80]
        on = np.exp(-((yy - 45) ** 2 + (xx - 25) ** 2) / 10.0)
        off = np.exp(-((yy - 80) ** 2 + (xx - 50) ** 2) / 50.0)
        hit, miss = localise(on, breast, region), localise(off, breast, region)
        assert hit["hit"] == 1.0 and miss["hit"] == 0.0
        assert hit["area_share"] == miss["area_share"] == pytest.approx(11 * 11 / (80 * 60))
        assert hit["energy_share"] > 0.9 > 0.01 > miss["energy_share"]

    @pytest.mark.parametrize(("top", "hit"), [((4, 2), 1.0), ((8, 5), 0.0)])
    def test_the_tile_attention_is_scored_by_the_tiles_the_region_touches(self, top, hit):
        weights = np.zeros((10, 8))
        weights[1:9, :6] = 1.0  # 48 tiles with breast, one of them weighed 5 times the others
        weights[top] = 5.0
        attention = np.kron(
            weights / weights.sum(), np.ones((10, 10))
        )  # each pixel its 10-pixel tile's weight
        region = Region(40, 20, 50, 30, ellipse=False).mask(FLAT)  # rows and columns 40-50, 20-30: 4 tiles
        found = localise_tiles(attention, region, 10)
        assert found["attention_hit"] == hit
        assert found["tile_share"] == pytest.approx(4 / 48)
        assert found["attention_share"] == pytest.approx((8 if hit else 4) / 52)

    def test_attention_over_the_breasts_area_has_the_area_as_its_chance_level(self):
        """With model.attention_by_area, attention with no preference among the tiles (all scores equal)
        spreads by each tile's breast area: the touching tiles' chance share is their share of the area.
        Here they are half tiles: by count a third of the tiles, by area a quarter of the breast."""
        image = np.zeros((20, 30), np.float32)
        image[:, :10] = 0.6  # first column of tiles: whole tiles of breast
        image[:, 10:15] = 0.6  # second and third columns: half breast each; the region touches the third
        image[:, 20:25] = 0.6
        area = tile_area(image, 10)
        assert area.tolist() == [[1.0, 0.5, 0.5], [1.0, 0.5, 0.5]]
        attention = np.kron(area / area.sum(), np.ones((10, 10)))  # no preference: weights by area
        region = Region(5, 22, 14, 24, ellipse=False).mask(as_is(image.shape))  # the third column's tiles
        by_area, by_tiles = localise_tiles(attention, region, 10, area), localise_tiles(attention, region, 10)
        assert by_area["tile_share"] == pytest.approx(by_area["attention_share"]) == pytest.approx(0.25)
        assert by_tiles["tile_share"] == pytest.approx(1 / 3)

    def test_the_rule_without_a_model_points_at_the_densest_region_not_at_one_bright_pixel(self):
        image = np.zeros((100, 80), np.float32)
        image[10:90, :60] = 0.3  # the breast
        image[40:51, 20:31] = 0.8  # a dense mass
        image[80, 50] = 1.0  # one bright pixel: a calcification, or noise
        image[5, 70] = 1.0  # off the breast: never the peak
        breast = np.zeros((100, 80), bool)
        breast[10:90, :60] = True
        region = Region(40, 20, 50, 30, ellipse=False).mask(FLAT)
        assert localise(brightest(image, breast), breast, region)["hit"] == 1.0
        cam = np.random.default_rng(0).random((100, 80))
        scores, _ = score_map(cam, cam, image, region, View.CC)
        assert scores["brightest_hit"] == 1.0  # beside each map's own score
        image[40:51, 20:31] = 0.3  # no mass: the densest spot is elsewhere
        assert localise(brightest(image, breast), breast, region)["hit"] == 0.0

    def test_a_region_cut_away_by_the_crop_is_not_scored(self):
        image = np.zeros((100, 80), np.float32)
        image[10:90, :60] = 0.6
        cam = np.random.default_rng(0).random((100, 80))
        region = region_mask([Region(40, 70, 50, 78, ellipse=False)], FLAT)
        scores, off = score_map(cam, cam, image, region, View.CC)
        assert off and set(scores) == {"blank", "redrawn_rho"}


def fresh_maps(seed: int) -> tuple[dict[View, np.ndarray], np.ndarray]:
    net = redrawn(ModelConfig(backbone="tiny_cnn", pretrained="none"), 3, seed)
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(52.0), indexing="ij")
    img = ((((yy - 32) / 28) ** 2 + (xx / 40) ** 2) < 1).float()[None, None] * 0.5
    img = img + 0.4 * (((yy - 30) ** 2 + (xx - 20) ** 2) < 16).float()
    return gradcam(net, img, img.clone(), torch.zeros(1, 3)), img[0, 0].numpy()


class TestRandomisation:
    def test_maps_that_do_not_change_with_the_weights_are_flagged(self):
        """The check's verdict follows the maps: a network compared with itself (the same seed) keeps its maps
        exactly, and is told its maps do not depend on learnt weights; another draw is not."""
        (same, image), (again, _), (other, _) = fresh_maps(1), fresh_maps(1), fresh_maps(2)
        rows = []
        for view in (View.CC, View.MLO):
            for twin, name in ((again, "same"), (other, "other")):
                scores, _ = score_map(same[view][0], twin[view][0], image, None, view)
                rows.append(
                    {"row": 1, "patient": "P", "side": "L", "label": 1, "view": view.value, "pair": name}
                    | scores
                )
        table = pd.DataFrame(rows)
        assert table.loc[table["pair"] == "same", "redrawn_rho"].tolist() == pytest.approx([1.0, 1.0])
        alike = summary_lines(summarise(table[table["pair"] == "same"], "EIC positive", None))
        assert "change little without the learnt weights" in alike[0]
        assert table.loc[table["pair"] == "other", "redrawn_rho"].max() < 0.99

    @pytest.mark.parametrize(
        ("backbone", "kind", "blocks"),
        [
            ("tiny_cnn", "whole", 4),
            ("resnet18", "whole", 5),
            ("resnet18", "patches", 5),
            ("convnext_tiny", "whole", 8),
        ],
    )
    def test_the_cascade_redraws_from_the_head_down_to_the_whole_network(self, backbone, kind, blocks):
        """Each stage keeps the learnt weights below it and takes the re-drawn ones above; the last stage is
        the re-drawn network, every weight of it."""
        cfg = ModelConfig(backbone=backbone, kind=kind, pretrained="none")
        net, fresh = create_model(cfg, 3).eval(), redrawn(cfg, 3, seed=7)
        stages = cascade_stages(net)
        assert [s.name for s in stages] == ["head"] + [f"block {i} of {blocks}" for i in range(blocks, 0, -1)]
        assert (
            sum(len(s.keys) for s in stages)
            == len(set().union(*(s.keys for s in stages)))
            == len(net.state_dict())
        )
        assert "head.weight" in stages[0].keys and not any(
            ".body." in k for k in stages[0].keys
        )  # after the feature maps
        first_conv = next(k for k in net.state_dict() if k.startswith("backbones.CC.body.") and "weight" in k)
        learnt, drawn = net.state_dict(), fresh.state_dict()
        for i, (stage, model) in enumerate(cascade(net, fresh)):
            assert stage == stages[i]
            state = model.state_dict()
            for done in stages[: i + 1]:
                assert all(torch.equal(state[k], drawn[k]) for k in done.keys)
            for below in stages[i + 1 :]:
                assert all(torch.equal(state[k], learnt[k]) for k in below.keys)
            assert torch.equal(state[first_conv], (drawn if i == len(stages) - 1 else learnt)[first_conv])
        assert torch.equal(learnt[first_conv], net.state_dict()[first_conv])  # the model itself is untouched

    def test_the_redrawn_network_is_not_the_models_own_initialisation(self):
        """Training seeds the network's first draw with train.seed: the re-drawn one, seeded from it too, must
        not repeat that draw (a model trained from random weights stays close to where it started)."""
        torch.manual_seed(3)  # as training does before it builds the network
        start = create_model(TINY, 3).state_dict()
        fresh, again = redrawn(TINY, 3, seed=3).state_dict(), redrawn(TINY, 3, seed=3).state_dict()
        for key in ("backbones.CC.body.0.weight", "head.weight"):
            assert torch.equal(fresh[key], again[key])  # seeded: the same every time
            r = torch.corrcoef(torch.stack([start[key].flatten(), fresh[key].flatten()]))[0, 1]
            assert abs(float(r)) < 0.2

    def test_the_cascade_says_from_which_stage_the_maps_change(self):
        """Against itself every stage keeps the maps exactly (rank correlation 1: they show nothing of the
        weights, and are told so); against another draw the last stage is the re-drawn network's check. A
        map turned into its negative (rho -0.9) is the same picture: it does not count as changed. Each draw
        of the random weights is a row of its own, and the line gives the range of the draws' medians."""
        (maps, image), net = fresh_maps(1), redrawn(TINY, 3, 1)
        x = torch.from_numpy(image)[None, None]
        who = {"row": 5, "patient": "P", "side": "L"}
        sample = [
            Sampled(
                who, {v: image for v in VIEWS}, np.zeros(3, np.float32), {v: m[0] for v, m in maps.items()}
            )
        ]
        same = cascade_table(net, [redrawn(TINY, 3, 1)], sample)
        stages = [c for c in same if c.startswith("cascade_")]
        assert stages == ["cascade_head", *(f"cascade_block{i}" for i in (4, 3, 2, 1))]
        assert same[stages].to_numpy() == pytest.approx(1.0)
        assert same[["row", "patient", "side", "view", "draw"]].values.tolist() == [
            [5, "P", "L", "CC", 0],
            [5, "P", "L", "MLO", 0],
        ]
        draws = [redrawn(TINY, 3, 2), redrawn(TINY, 3, 2, draw=1)]
        other = cascade_table(net, draws, sample)
        assert other["draw"].tolist() == [0, 0, 1, 1]
        for d, fresh_net in enumerate(draws):
            fresh = gradcam(fresh_net, x, x.clone(), torch.zeros(1, 3))
            for row in other[other["draw"] == d].itertuples():
                view = View(row.view)
                expected, _ = score_map(maps[view][0], fresh[view][0], image, None, view)
                assert row.cascade_block1 == pytest.approx(expected["redrawn_rho"])
        assert not np.allclose(other.loc[other["draw"] == 0, stages], other.loc[other["draw"] == 1, stages])
        base = {"row": 5, "patient": "P", "side": "L", "label": 1, "blank": 0, "redrawn_rho": 0.0}
        maps_table = pd.DataFrame([base | {"view": v} for v in ("CC", "MLO")])
        two = pd.concat([same, same.assign(draw=1, cascade_head=0.4)])  # the head's verdict is the median's
        for drawn, verdict in (
            (same, "keep their picture whatever is redrawn"),
            (same.assign(cascade_block4=0.1), "with the head redrawn the maps keep their picture"),
            (
                same.assign(cascade_head=-0.9, cascade_block4=0.2),
                "with the head redrawn the maps keep their picture",
            ),
            (same.assign(cascade_block3=0.1), "with the head and the blocks to block 4 of 4 redrawn"),
            (same.assign(cascade_head=0.3), "change as soon as the head is redrawn"),
            (two, "head 0.70 (0.40-1.00)"),
            (two, "(one draw of the random weights alone could have said either at head)"),
        ):
            summary = summarise(maps_table, "EIC positive", None, cascade=drawn)
            told = summary["randomisation"]["cascade"]
            assert told["breasts"] == 1 and told["draws"] == drawn["draw"].nunique()
            assert [s["stage"] for s in told["stages"]] == [
                "head",
                *(f"block {i} of 4" for i in (4, 3, 2, 1)),
            ]
            line = summary_lines(summary)[-1]  # each view apart, with the same verdict here
            assert line.startswith("cascading randomisation") and line.count(verdict) == 2
            assert "CC: head " in line and "MLO: head " in line
        assert summarise(maps_table, "EIC positive", None)["randomisation"]["cascade"] is None
        # a view whose maps are all blank (a model that learnt nothing of it): no rank correlation to judge
        # by, not "the maps keep their picture whatever is redrawn"
        blank = same.copy()
        blank.loc[blank["view"] == "CC", stages] = np.nan
        told = summarise(maps_table, "EIC positive", None, cascade=blank)["randomisation"]["cascade"]
        assert all(s["by_view"]["CC"]["draws"] == [] for s in told["stages"])
        line = summary_lines(summarise(maps_table, "EIC positive", None, cascade=blank))[-1]
        assert "CC: no stage compared: each of the model's maps is blank or flat" in line
        assert line.count("keep their picture whatever is redrawn") == 1  # MLO's

    def test_the_localisation_line_says_whether_the_maps_beat_the_densest_spot(self):
        """Paired with the brightest-spot rule over 40 breasts: maps that find what it finds, and more, get
        a verdict a reader need not work out from the interval."""
        rng = np.random.default_rng(0)
        rows = []
        for i in range(40):
            for view in ("CC", "MLO"):
                rule = int(rng.random() < 0.5)
                rows.append(
                    {"row": i, "patient": f"P{i}", "side": "L", "label": int(i % 2), "view": view}
                    | {"blank": 0, "redrawn_rho": 0.0, "area_share": 0.05, "energy_share": 0.2}
                    | {"redrawn_hit": 0, "redrawn_energy_share": 0.0, "brightest_hit": rule, "hit": rule}
                )
        table = pd.DataFrame(rows)
        for hit, said in (
            (table["brightest_hit"], "no more often than the breast's densest spot does"),
            (1, "more often than the breast's densest spot does"),
            (0, "less often than the breast's densest spot does"),
        ):
            line = summary_lines(summarise(table.assign(hit=hit), "EIC positive", "lesions.csv"))[-2]
            assert line.startswith("localisation on the marked held-out breasts")
            assert f": the maps find the tumour {said}" in line

    def test_breasts_are_counted_as_breasts_not_row_numbers(self):
        """The folds of a learning-curve share each thin their training part: one row number names another
        breast in each fold's data.csv."""
        maps = [
            {"row": 7, "patient": patient, "side": "L", "fold": fold, "label": 0, "view": view}
            | {"blank": 0, "redrawn_rho": 0.1}
            for patient, fold in (("P1", "r0f0"), ("P2", "r0f1"))
            for view in ("CC", "MLO")
        ]
        summary = summarise(pd.DataFrame(maps), "EIC positive", None)
        assert summary["breasts"] == 2 and summary["maps"] == 4


class TestOverlays:
    def test_the_marked_tumour_is_outlined_on_every_map_not_on_the_clean_input(self):
        from mammofuse.explain.overlays import case_figure

        image = {v: np.full((100, 80), 0.5, np.float32) for v in (View.CC, View.MLO)}
        cam = {v: np.random.default_rng(0).random((100, 80)) for v in image}
        original = {v: np.full((200, 160), 0.5, np.float32) for v in image}
        marked = (
            {v: Region(40, 20, 50, 30, ellipse=True).mask(FLAT) for v in image},
            {v: Region(80, 40, 100, 60, ellipse=True).mask(as_is((200, 160))) for v in image},
        )
        back = {v: np.random.default_rng(1).random((200, 160)) for v in image}
        figure = case_figure(image, cam, original, back, "row 1", marked=marked)
        axes = figure.axes[:6]  # input, map on the input, map on the original; CC and MLO
        assert [len(ax.collections) > 0 for ax in axes] == [False, False, True, True, True, True]
        assert any("the tumour as marked" in t.get_text() for t in figure.texts)

    @pytest.mark.parametrize(
        ("attention", "marked", "shape"), [(False, False, (3328, 2560)), (True, True, (800, 1200))]
    )
    def test_nothing_is_cut_off_or_drawn_over_another(self, attention, marked, shape):
        """The figure's fixed layout: every title, label and image inside the figure, none over another,
        whether a patch model adds a row, a tumour is marked (a line below) or the original is wide."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        from mammofuse.explain.overlays import case_figure

        rng = np.random.default_rng(0)
        image = {v: rng.random((512, 256)).astype(np.float32) for v in (View.CC, View.MLO)}
        original = {v: rng.random(shape).astype(np.float32) for v in image}
        tiles = {v: np.kron(rng.random((8, 4)), np.ones((64, 64))) for v in image} if attention else None
        outlined = ({v: np.zeros((512, 256), bool) for v in image}, {v: np.zeros(shape, bool) for v in image})
        title = "false-negative: row 1234, label 1, probability 0.12"
        figure = case_figure(image, image, original, original, title, tiles, 64, outlined if marked else None)
        renderer = FigureCanvasAgg(figure).get_renderer()
        figure.draw(renderer)
        *images, bar = figure.axes
        assert len(images) == 2 * (3 + attention)
        boxes = [ax.get_window_extent(renderer) for ax in images]
        boxes += [ax.title.get_window_extent(renderer) for ax in images]
        boxes += [bar.get_tightbbox(renderer)]  # the bar with its ticks and label
        boxes += [text.get_window_extent(renderer) for text in figure.texts]  # its title, the line below
        assert len(figure.texts) == 1 + marked
        inside = figure.bbox
        for i, box in enumerate(boxes):
            assert inside.x0 <= box.x0 and box.x1 <= inside.x1 and inside.y0 <= box.y0 and box.y1 <= inside.y1
            assert not [j for j, other in enumerate(boxes[:i]) if box.overlaps(other)], i


class TestPairedLocalisation:
    def test_setups_are_compared_on_the_positive_maps_both_scored(self):
        def checks(hits: list[float]) -> pd.DataFrame:
            return pd.DataFrame(
                {
                    "patient": ["P1", "P1", "P2", "P2", "P3", "P3"],
                    "side": "L",
                    "view": ["CC", "MLO"] * 3,
                    "fold": "r0f0",
                    "label": [1, 1, 1, 1, 0, 0],
                    "hit": hits,
                    "energy_share": [0.4, 0.2, 0.3, 0.1, 0.5, 0.5],
                }
            )

        a = checks([1.0, 0.0, 0.0, 0.0, 1.0, 1.0])
        b = checks([1.0, 1.0, 1.0, np.nan, 0.0, 0.0])  # a blank map: P2's MLO is left out of both
        b["energy_share"] += 0.1
        table = paired_localisation({"a": a, "b": b}).set_index("preset")
        assert (table["tumour_maps"] == 3).all()  # the negative breast's maps are not counted
        assert table.loc["a", "tumour_peak"] == pytest.approx(1 / 3) and table.loc["b", "tumour_peak"] == 1.0
        assert table.loc["b", "tumour_peak_diff"] == pytest.approx(2 / 3)
        assert table.loc["b", "tumour_mass_diff"] == pytest.approx(0.1)
        assert pd.isna(table.loc["a", "tumour_peak_diff"])
        # each view apart: a's peak on the tumour in P1's CC alone (CC 1 of 2, MLO 0 of 1), with intervals
        # over the same patient resamples, and b's difference from a per view
        assert table.loc["a", ["tumour_peak_cc", "tumour_peak_mlo"]].tolist() == [0.5, 0.0]
        assert table.loc["a", ["tumour_peak_cc_low", "tumour_peak_cc_high"]].tolist() == [0.0, 1.0]
        assert table.loc["a", ["tumour_peak_mlo_low", "tumour_peak_mlo_high"]].tolist() == [0.0, 0.0]
        assert table.loc["b", ["tumour_peak_diff_cc", "tumour_peak_diff_mlo"]].tolist() == [0.5, 1.0]
        assert table.loc["b", "tumour_peak_diff_cc_high"] == 1.0
        assert "attention_peak" not in table  # whole-image models: no tile attention

    def test_patch_models_are_also_compared_on_their_tile_attention(self):
        def checks(attention_hits: list[float]) -> pd.DataFrame:
            return pd.DataFrame(
                {
                    "patient": ["P1", "P1", "P2", "P2"],
                    "side": "L",
                    "view": ["CC", "MLO"] * 2,
                    "label": 1,
                    "hit": [1.0, 0.0, 1.0, 0.0],
                    "energy_share": 0.3,
                    "attention_hit": attention_hits,
                    "attention_share": 0.2,
                }
            )

        table = paired_localisation({"a": checks([1, 0, 1, 0]), "b": checks([1, 1, 1, 1])}).set_index(
            "preset"
        )
        assert table.loc["a", ["attention_peak_cc", "attention_peak_mlo"]].tolist() == [1.0, 0.0]
        assert table.loc["b", "attention_peak_diff"] == pytest.approx(0.5)
        lines = maps_lines(table.reset_index())
        assert "a top attention tile on it in 50 % [50, 50] (CC 100 % [100, 100], MLO 0 % [0, 0])" in lines[0]
        assert "vs a: +50 % [+50, +50] (CC +0 % [+0, +0], MLO +100 % [+100, +100])" in lines[1]


class TestExplainChecks:
    def test_every_test_breast_is_checked_against_its_marked_tumour(self, trained_master, tmp_path, capsys):
        run_dir = tmp_path / "run"
        shutil.copytree(trained_master, run_dir)
        lesions = trained_master.parents[2] / "lesions.csv"
        bad = tmp_path / "lesions.csv"
        bad.write_text(
            lesions.read_text() + "MF99999,L,CC,1,2,-3\n" + "X42,L,CC,10,20,3\n"
        )  # no region; no breast
        assert main(["explain", str(run_dir), "--n", "1", "--regions", str(bad)]) == 0
        out = capsys.readouterr().out
        run = Run(run_dir)
        test = run.read_predictions().query("split == 'test'")
        table = pd.read_csv(run.explain_checks)
        assert len(table) == 2 * len(test) and set(table["view"]) == {"CC", "MLO"}
        assert table["area_share"].between(0, 1).all()
        drawn = table[table["blank"] == 0]  # a blank map (nothing raises the score) has no peak, no mass
        assert drawn["hit"].isin([0, 1]).all() and table.loc[table["blank"] == 1, "hit"].isna().all()
        summary = json.loads(run.explain_summary.read_text())
        assert summary["maps"] == len(table) and summary["blank"] == len(table) - len(drawn)
        assert summary["randomisation"]["maps"] == table["redrawn_rho"].notna().sum() >= len(drawn) - 2
        cascade = pd.read_csv(run.explain_cascade_table)  # a row per breast, view and draw; no patient
        stages = [c for c in cascade if c.startswith("cascade_")]  # the run's tiny_cnn: the head and 4 blocks
        assert stages[0] == "cascade_head" and len(stages) == 5 and "patient" not in cascade
        assert sorted(cascade["draw"].unique()) == [0, 1, 2, 3, 4]
        breasts = min(CASCADE_BREASTS, len(test))
        assert summary["randomisation"]["cascade"]["breasts"] == breasts and len(cascade) == 5 * 2 * breasts
        first = cascade[cascade["draw"] == 0].merge(
            table, on=["row", "view"]
        )  # its whole network: the check's
        whole = first[stages[-1]].notna()  # a blank map ranks nothing: NaN at every stage
        assert whole.any() and np.allclose(first.loc[whole, stages[-1]], first.loc[whole, "redrawn_rho"])
        assert not any(c.startswith("cascade") for c in table)
        assert "cascading randomisation (on the maps of" in out
        groups = {g["name"]: g for g in summary["localisation"]["groups"]}
        assert groups["marked"]["maps"] == len(drawn) and groups["marked"]["blank"] == summary["blank"]
        positives = drawn[drawn["label"] == 1]
        assert groups["EIC positive"]["maps"] == len(positives)
        assert groups["EIC positive"]["hit"][0] == pytest.approx(positives["hit"].mean())
        assert groups["EIC positive"]["area_share"][0] == pytest.approx(positives["area_share"].mean())
        assert groups["EIC positive"]["brightest_hit"][0] == pytest.approx(positives["brightest_hit"].mean())
        paired = (positives["hit"] - positives["brightest_hit"]).mean()  # the same maps, paired
        assert groups["EIC positive"]["hit_over_brightest"][0] == pytest.approx(paired)
        for view, difference in groups["EIC positive"]["hit_over_brightest_by_view"].items():
            maps = positives[positives["view"] == view]
            assert difference[0] == pytest.approx((maps["hit"] - maps["brightest_hit"]).mean())
            assert difference[1] <= difference[0] <= difference[2]
        assert summary["left_out"] == [
            f"lesions.csv line {len(lesions.read_text().splitlines()) + 1}: no region (numbers in x, y and a "
            "positive radius, or x0 < x1 and y0 < y1)"
        ]
        assert "randomisation check" in out and "localisation on the EIC positive held-out breasts" in out
        assert "brightest spot, smoothed, with no model at all (on an MLO, outside the pectoral" in out
        kept = Run(run_dir).read_data()  # breasts left out at ingest were marked too, and X42 is nobody
        unmatched = len(lesions.read_text().splitlines()) - 2 * len(kept)  # the header line stands for X42
        assert summary["localisation"]["unmatched_images"] == unmatched > 1
        assert (
            f"{unmatched} of the {len(lesions.read_text().splitlines())} images marked in lesions.csv" in out
        )
        assert "warning: none of" not in out
        for text in (run.explain_checks.read_text(), run.explain_summary.read_text()):
            assert "MF" not in text  # rows, never patients
        index = pd.read_csv(run.explain_index)  # the drawn cases: does each view's map point at the tumour?
        for view in ("CC", "MLO"):
            hits = table[table["view"] == view].set_index("row")["hit"]
            assert index[f"{view.lower()}_on_tumour"].equals(index["row"].map(hits))
        index.loc[0, ["cc_on_tumour", "mlo_on_tumour"]] = [1, 0]  # the caption says what the index says
        index.loc[1:, ["cc_on_tumour", "mlo_on_tumour"]] = np.nan
        index.to_csv(run.explain_index, index=False)
        assert main(["report", str(run_dir)]) == 0
        assert "Can the Grad-CAM maps be trusted?" in run.report.read_text()
        page = run.report.read_text()
        assert (
            run.explain_cascade.is_file() and 'alt="cascading randomisation"' in page
        )  # one case says so, in its image's text and its caption; the others not
        assert (
            "peak on the marked tumour: CC yes, MLO no" in page
            and page.count("peak on the marked tumour") == 2
        )
        alien = tmp_path / "alien.csv"  # another cohort's IDs: nothing matches, and it is said
        alien.write_text("patient_id,side,view,x,y,radius\nX1,L,CC,10,20,3\nX2,R,MLO,10,20,3\n")
        assert main(["explain", str(run_dir), "--n", "1", "--regions", str(alien), "--cascade", "0"]) == 0
        out = capsys.readouterr().out
        assert "warning: none of the 2 images marked in alien.csv names a breast of this run" in out
        assert not run.explain_cascade.exists()  # an earlier cascade is not of these checks
        assert not run.explain_cascade_table.exists()
        data = pd.read_csv(run.data, dtype={"patient_id": str})
        data["cc_path"] = [f"/moved/{i}.dcm" for i in range(len(data))]  # the export moved since ingest
        data.to_csv(run.data, index=False)
        assert main(["explain", str(run_dir), "--n", "1", "--cascade", "0"]) == 0
        assert "not drawn" not in capsys.readouterr().out  # the originals are shown from the cache's copies
        assert len(pd.read_csv(run.explain_index)) == 4 and len(list(run.explain.glob("*row*.png"))) == 4
        settings = Path(data.loc[0, "cc_cache"]).parents[1]  # the master's: shared, so copied before changed
        copy = tmp_path / "cache"
        shutil.copytree(settings, copy / settings.name)
        for column in ("cc_cache", "mlo_cache"):
            data[column] = data[column].str.replace(str(settings.parent), str(copy), regex=False)
        data.to_csv(run.data, index=False)
        for entry in data["cc_cache"]:  # a cache made before copies were kept: the moved files are needed
            display_path(entry).unlink()
        assert main(["explain", str(run_dir), "--n", "1", "--cascade", "4", "--cascade-draws", "2"]) == 0
        out = " ".join(capsys.readouterr().out.split())
        cascade = pd.read_csv(run.explain_cascade_table)
        assert sorted(cascade["draw"].unique()) == [0, 1] and len(cascade) == 2 * 2 * 4
        assert (
            "4 overlays not drawn" in out and "CC /moved/" in out and "not found (moved since ingest?)" in out
        )
        assert pd.read_csv(run.explain_index).empty and not list(run.explain.glob("*row*.png"))
        assert "randomisation check" in out  # the checks need the preprocessed images only
        assert main(["report", str(run_dir)]) == 0

    def test_a_cross_validation_checks_every_breast_with_the_fold_model_that_never_saw_it(
        self, cv_copy, capsys
    ):
        cohort, cv_dir = cv_copy
        pooled = (cv_dir / "metrics.json").read_bytes()
        (cv_dir / "metrics.json").unlink()  # as an unfinished cross-validation is
        assert main(["explain", str(cv_dir)]) == 2
        assert "the cross-validation is not finished" in capsys.readouterr().out
        (cv_dir / "metrics.json").write_bytes(pooled)
        assert main(["explain", str(cv_dir), "--regions", str(cohort / "lesions.csv"), "--cascade", "0"]) == 0
        out = capsys.readouterr().out
        assert "for overlays, explain a fold" in out and "cascading randomisation" not in out
        run = Run(cv_dir)
        table, oof = pd.read_csv(run.explain_checks), pd.read_csv(run.oof)
        assert len(table) == 2 * len(oof)  # every breast, both views, once per repeat
        for fold, part in table.groupby("fold"):
            split = Run(cv_dir / "folds" / fold).read_data()["split"]
            assert (split.iloc[part["row"] - 1] == "test").all()  # held out from that fold's model
        summary = json.loads(run.explain_summary.read_text())
        assert summary["maps"] == len(table) and summary["randomisation"]["cascade"] is None
        assert not run.explain_cascade.exists()
        assert not any(c.startswith("cascade") for c in table) and not run.explain_cascade_table.exists()
        assert summary["breasts"] == len(oof.drop_duplicates(["patient_id", "side"]))
        assert main(["report", str(cv_dir)]) == 0
        assert "Can the Grad-CAM maps be trusted?" in run.report.read_text()
        assert main(["explain", str(cv_dir), "--cascade", "7", "--cascade-draws", "1"]) == 0
        cascade = pd.read_csv(run.explain_cascade_table)  # 7 breasts shared out among the 6 fold models
        assert cascade.groupby("fold").size().to_dict() == {fold: 2 * 2 for fold in table["fold"].unique()}


class TestTakingUp:
    def test_an_explain_stopped_between_folds_takes_up_the_finished_ones_to_the_same_result(
        self, cv_copy, monkeypatch
    ):
        """A cross-validation's checks, a fold model at a time: an explain stopped in the third takes up
        the two it finished; the files equal those of an explain that ran through; other settings are
        another key."""
        from mammofuse.explain import explain

        cohort, cv_dir = cv_copy
        argv = ["explain", str(cv_dir), "--regions", str(cohort / "lesions.csv"), "--cascade", "6"]
        argv += ["--cascade-draws", "1"]
        computed, check_maps = [], explain.check_maps

        def counted(run, *args, **kwargs):
            computed.append(run.dir.name)
            if stop_at and len(computed) == stop_at:
                raise KeyboardInterrupt
            return check_maps(run, *args, **kwargs)

        monkeypatch.setattr(explain, "check_maps", counted)
        stop_at = 3
        assert main(argv) == 130
        stop_at = 0
        computed.clear()
        assert main(argv) == 0 and len(computed) == 4  # 3 folds x 2 repeats, 2 taken up
        run = Run(cv_dir)
        files = (run.explain_checks, run.explain_summary, run.explain_cascade_table)
        taken_up = [path.read_bytes() for path in files]
        for kept in (cv_dir / "folds").glob(f"*/explain/{explain.KEPT_CHECKS}"):
            kept.unlink()
        computed.clear()
        assert main(argv) == 0 and len(computed) == 6
        assert [path.read_bytes() for path in files] == taken_up
        computed.clear()
        assert main(argv) == 0 and not computed  # nothing changed: every model taken up
        fold = Run(next((cv_dir / "folds").iterdir()))
        key = explain.checks_key(fold, {}, 1, 1)
        assert key == explain.checks_key(fold, {}, 1, 1)
        assert all(explain.checks_key(fold, {}, *other) != key for other in ((2, 1), (1, 2)))
