"""The patch model: tiling, attention over the tiles with breast, memory options that change nothing,
and its explanations (Grad-CAM over the tiles, the attention map)."""

import numpy as np
import pytest
import torch

from mammofuse.config import ModelConfig
from mammofuse.domain import VIEWS, View
from mammofuse.explain.gradcam import OneView, TileGradCAM, attention_maps, gradcam
from mammofuse.explain.overlays import top_tiles
from mammofuse.models import create_model
from mammofuse.models.tiles import breast_share, content_mask, cut_tiles
from tests.waits import HostReads


def patch_net(n_clinical: int = 3, **model) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = ModelConfig(backbone="tiny_cnn", pretrained="none", grey="adapt", kind="patches", tile=32, **model)
    return create_model(cfg, n_clinical)


def breast_image(height: int = 100, width: int = 70) -> torch.Tensor:
    """(1, 1, H, W): tissue in the left two thirds and the top 80 rows, black elsewhere."""
    torch.manual_seed(1)
    x = torch.zeros(1, 1, height, width)
    x[..., :80, : width * 2 // 3] = 0.3 + 0.5 * torch.rand(80, width * 2 // 3)
    return x


class TestTiling:
    def test_tiles_put_back_in_order_give_the_padded_image(self):
        x = torch.rand(2, 1, 100, 70)
        tiles, (rows, cols) = cut_tiles(x, 32)
        assert (rows, cols) == (4, 3) and tiles.shape == (2, 12, 1, 32, 32)
        back = tiles.view(2, rows, cols, 32, 32).permute(0, 1, 3, 2, 4).reshape(2, 128, 96)
        assert torch.equal(back[:, :100, :70], x[:, 0]) and back[:, 100:].abs().sum() == 0

    def test_black_tiles_are_left_out_unless_the_whole_image_is_black(self):
        tiles, _ = cut_tiles(breast_image(), 32)
        shares = breast_share(tiles)
        share = shares[0].view(4, 3)  # tissue in rows 0-79, columns 0-45
        assert share[:3, :2].tolist() == [[1, 14 / 32], [1, 14 / 32], [16 / 32, 16 / 32 * 14 / 32]]
        mask = content_mask(shares)[0].view(4, 3)
        assert mask[:3, :2].all() and not mask[3].any() and not mask[:, 2].any()
        black, _ = cut_tiles(torch.zeros(1, 1, 64, 64), 32)
        assert content_mask(breast_share(black)).all()


class TestAttention:
    def test_weights_sum_to_one_over_the_tiles_with_breast_and_black_tiles_do_not_count(self):
        net = patch_net().eval()
        x = breast_image()
        maps = attention_maps(net, x, x.clone(), torch.zeros(1, 3))
        assert maps is not None
        for view in VIEWS:
            assert maps[view].shape == (1, 100, 70)
            assert maps[view][0].sum() / 32**2 == pytest.approx(1.0, abs=1e-4)  # each pixel its tile's weight
            assert maps[view][0, 96:].max() == 0 and maps[view][0, :, 64:].max() == 0
        with torch.no_grad():
            before = net(x, x, torch.zeros(1, 3))
            noisy = x.clone()
            noisy[..., 96:, :] = 0.04 * torch.rand(4, 70)  # tiles of background stay background below
            noisy[..., :, 64:] = 0.04 * torch.rand(100, 6)  # the content level: they do not count
            assert torch.allclose(net(noisy, noisy, torch.zeros(1, 3)), before, atol=1e-6)

    @pytest.mark.parametrize("by_area, sliver_weight", [(False, 1 / 2), (True, 1 / 9)])
    def test_by_area_a_sliver_of_breast_weighs_its_share_of_a_whole_tile(self, by_area, sliver_weight):
        """A whole tile of tissue and a sliver (an eighth of a tile) with the same attention score: by
        tiles they share the attention equally; by area the sliver weighs an eighth of the whole tile."""
        x = torch.zeros(1, 1, 32, 64)
        x[..., :, :32] = 0.5
        x[..., :4, 32:] = 0.5  # the top 4 of 32 rows: a sliver at the breast's edge
        net = patch_net(attention_by_area=by_area).eval()
        with torch.no_grad():
            for view in VIEWS:
                net.tiles[view.value].score.weight.zero_()  # every tile scores the same
        maps = attention_maps(net, x, x.clone(), torch.zeros(1, 3))
        assert maps is not None
        for view in VIEWS:
            assert maps[view][0, 0, 32].item() == pytest.approx(sliver_weight, abs=1e-6)
            assert maps[view][0, 0, 0].item() == pytest.approx(1 - sliver_weight, abs=1e-6)

    def test_the_top_tiles_are_where_the_attention_is(self):
        attention = torch.zeros(100, 70)
        attention[32:64, 32:64], attention[0:32, 0:32] = 0.7, 0.3
        assert top_tiles(attention.numpy(), 32) == [(32, 32), (0, 0)]

    @pytest.mark.parametrize("option", [{"tile_batch": 2}, {"tile_batch": 1, "checkpoint_tiles": True}])
    def test_tile_batches_and_checkpointing_give_the_same_scores_and_gradients(self, option):
        x = torch.cat([breast_image(), breast_image().flip(-1)])
        clinical = torch.randn(2, 3)

        def scores_and_grads(net):
            net.eval()  # batch norm uses running statistics, so chunks see the same normalisation
            net.tiles["CC"].train()  # checkpointing is on in training only; attention has no dropout
            out = net(x, x, clinical)
            out[:, 1].sum().backward()
            return out.detach(), [p.grad.clone() for p in net.parameters() if p.grad is not None]

        plain, chunked = scores_and_grads(patch_net()), scores_and_grads(patch_net(**option))
        assert torch.allclose(plain[0], chunked[0], atol=1e-5)
        assert len(plain[1]) == len(chunked[1])
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(plain[1], chunked[1]))

    def test_a_training_pass_waits_for_the_gpu_once_per_view(self):
        """Which tiles hold breast is known only from the data, so the network reads it back once per view
        (tests/waits.py; a wait on a GPU); the tile features go in and out by those indices, forward and
        backward, without another read."""
        net, x = patch_net(), torch.cat([breast_image(), breast_image().flip(-1)])
        reads = HostReads()
        reads.counting = True
        with reads:
            net(x, x, torch.randn(2, 3))[:, 1].sum().backward()
        assert reads.reads == len(VIEWS)


class TestExplanations:
    @pytest.mark.parametrize(
        "model", [{"kind": "patches", "tile": 32}, {"fusion": "mlp"}, {"fusion": "late"}, {"kind": "whole"}]
    )
    def test_the_one_view_wrapper_scores_like_the_whole_network(self, model):
        torch.manual_seed(0)
        cfg = ModelConfig(backbone="tiny_cnn", pretrained="none", grey="adapt", **model)
        net = create_model(cfg, 3).eval()
        cc, mlo, clinical = breast_image(), breast_image().flip(-1), torch.rand(1, 3)
        with torch.no_grad():
            full = net(cc, mlo, clinical)
            assert torch.allclose(OneView(net, View.CC, mlo, clinical)(cc), full, atol=1e-5)
            assert torch.allclose(OneView(net, View.MLO, cc, clinical)(mlo), full, atol=1e-5)

    def test_each_tile_weighs_its_channels_by_its_own_gradient(self):
        """Two tiles with the same activations, the score moved by the second only (the attention gave
        the first no weight): the map is zero on the first. Plain Grad-CAM averages the gradient over
        the view and would draw both alike."""
        net = patch_net().eval()
        x = torch.full((1, 1, 32, 64), 0.5)
        net(x, x, torch.zeros(1, 3))  # the layout: one row of two tiles
        activations = np.ones((1, 4, 2, 4), np.float32)  # (B, C, rows * h, cols * w): 2 x 2 per tile
        grads = np.zeros_like(activations)
        grads[..., 2:] = 0.25
        with TileGradCAM(
            OneView(net, View.CC, x, torch.zeros(1, 3)), [net.backbone(View.CC).target_layer], net.tiles["CC"]
        ) as cam:
            maps = cam.get_cam_image(x, cam.target_layers[0], [], activations, grads)
        assert maps.tolist() == [[[0, 0, 1, 1], [0, 0, 1, 1]]]

    def test_gradcam_covers_the_view_and_is_zero_away_from_tiles_with_breast(self):
        net = patch_net(tile_batch=1)
        x = breast_image(160, 120)  # breast in tiles of rows and columns 0-2 of a 5 x 4 grid
        maps = gradcam(net, x, x.clone(), torch.zeros(1, 3))
        assert net.tiles["CC"].tile_batch == 1  # restored after Grad-CAM's single pass
        for view in VIEWS:  # the map is upsampled smoothly: zero from the middle of the next tile on
            assert maps[view].shape == (1, 160, 120)
            assert maps[view][0, 116:].max() == 0 and maps[view][0, :, 116:].max() == 0
        assert max(maps[v].max() for v in VIEWS) > 0
