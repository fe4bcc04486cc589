"""The patch model's view encoder: a view cut into tiles at the working resolution, each tile through a
shared encoder, the tiles pooled by gated attention (multiple-instance learning).

Calcifications are a few pixels wide: a whole-image network downsamples them away before its pooled
features see them, while a tile encoder sees them at full resolution and the attention picks the tiles
that matter [Ilse et al. 2018, attention-based deep MIL; nyukat/GMIC's patch stage]. The attention
weights are an explanation of their own: which tiles made the score (`TileAttention.last`).

Tiles are non-overlapping squares of `tile` pixels from the top-left corner; the image is padded with
black at the bottom and right to whole tiles. Tiles with no breast (all black once preprocessing blanks
the background) are neither encoded nor attended to: about a third of a mammogram's tiles, spared.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from mammofuse.config import ModelConfig
from mammofuse.models.backbones import Backbone

CONTENT = 0.05  # a tile holds breast when one of its pixels is brighter than this ([0, 1] input)


def padded(x: torch.Tensor, tile: int) -> torch.Tensor:
    """(B, 1, H, W) padded with black at the bottom and right to whole tiles."""
    h, w = x.shape[-2:]
    return F.pad(x, (0, -w % tile, 0, -h % tile))


def cut_tiles(x: torch.Tensor, tile: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """(B, 1, H, W) -> tiles (B, N, 1, tile, tile) in row-major order, and the grid (rows, columns)."""
    x = padded(x, tile)
    b, c = x.shape[:2]
    rows, cols = x.shape[-2] // tile, x.shape[-1] // tile
    tiles = x.unfold(2, tile, tile).unfold(3, tile, tile)  # (B, C, rows, cols, tile, tile)
    return tiles.permute(0, 2, 3, 1, 4, 5).reshape(b, rows * cols, c, tile, tile), (rows, cols)


def breast_share(tiles: torch.Tensor) -> torch.Tensor:
    """(B, N, 1, t, t) -> (B, N): the share of each tile's pixels that are breast."""
    return (tiles.flatten(2) > CONTENT).float().mean(dim=2)


def content_mask(share: torch.Tensor) -> torch.Tensor:
    """Tiles' breast share (B, N) -> (B, N) bool: tiles with breast in them (all of an image's when none
    has)."""
    mask = share > 0
    return mask | ~mask.any(dim=1, keepdim=True)


@dataclass
class Layout:
    """Where the last batch's tiles were (known before they are encoded, so Grad-CAM's hooks can use
    it) and, once pooled, their attention: for Grad-CAM (tile feature maps back into one image) and for
    the attention map."""

    mask: torch.Tensor  # (B, N) bool: encoded tiles
    grid: tuple[int, int]  # (rows, columns)
    weights: torch.Tensor | None = None  # (B, N) attention, 0 for tiles without breast


class TileAttention(nn.Module):
    """Tiles of one view -> pooled features (B, C): gated attention over the tile encoder's features."""

    def __init__(self, channels: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.tile, self.tile_batch, self.checkpointing = cfg.tile, cfg.tile_batch, cfg.checkpoint_tiles
        self.by_area = cfg.attention_by_area
        self.value = nn.Linear(channels, cfg.attention_hidden)
        self.gate = nn.Linear(channels, cfg.attention_hidden)
        self.score = nn.Linear(cfg.attention_hidden, 1)
        self.last: Layout | None = None

    def encode(self, encoder: Backbone, tiles: torch.Tensor) -> torch.Tensor:
        """(K, 1, t, t) -> (K, C), in chunks of tile_batch, optionally recomputed in the backward pass
        instead of kept (gradient checkpointing: the memory of one chunk instead of all)."""

        def run(chunk: torch.Tensor) -> torch.Tensor:
            return encoder.pool(encoder(chunk))

        size = self.tile_batch or len(tiles)
        chunks = tiles.split(size)
        if self.checkpointing and self.training and torch.is_grad_enabled():
            return torch.cat([checkpoint(run, c, use_reentrant=False) for c in chunks])
        return torch.cat([run(c) for c in chunks])

    def forward(self, x: torch.Tensor, encoder: Backbone) -> torch.Tensor:  # (B, 1, H, W) -> (B, C)
        tiles, grid = cut_tiles(x, self.tile)
        share = breast_share(tiles)  # (B, N)
        mask = content_mask(share)
        self.last = Layout(mask, grid)
        breast = mask.nonzero(as_tuple=True)  # the one wait for the GPU per view: K is known only here
        kept = self.encode(encoder, tiles[breast])  # (K, C)
        feats = kept.new_zeros(*mask.shape, kept.shape[1])
        feats[breast] = kept  # (B, N, C)
        gated = torch.tanh(self.value(feats)) * torch.sigmoid(self.gate(feats))
        logits = self.score(gated).squeeze(-1).float()  # (B, N)
        if self.by_area:  # softmax of score + log(share): weights proportional to share x exp(score)
            logits = logits + share.clamp_min(1 / self.tile**2).log()
        weights = torch.softmax(logits.masked_fill(~mask, float("-inf")), dim=1)  # (B, N)
        self.last.weights = weights.detach()
        return torch.einsum("bn,bnc->bc", weights.to(feats.dtype), feats)

    def assemble(self, maps: torch.Tensor) -> torch.Tensor:
        """Per-tile feature maps of the last batch (K, C, h, w) -> one map per image (B, C, rows * h,
        cols * w), zero where no tile was encoded: what Grad-CAM weighs and draws."""
        assert self.last is not None, "assemble() follows a forward pass"
        (rows, cols), mask = self.last.grid, self.last.mask
        k, c, h, w = maps.shape
        grid = maps.new_zeros(mask.shape[0], rows * cols, c, h, w)
        grid[mask] = maps
        grid = grid.view(-1, rows, cols, c, h, w).permute(0, 3, 1, 4, 2, 5)  # (B, C, rows, h, cols, w)
        return grid.reshape(-1, c, rows * h, cols * w)

    def attention_map(self, shape: tuple[int, int]) -> torch.Tensor:
        """The last batch's attention as images (B, H, W): each pixel holds its tile's weight."""
        assert self.last is not None and self.last.weights is not None, "attention_map() follows a forward"
        rows, cols = self.last.grid
        weights = self.last.weights.view(-1, rows, cols)
        full = weights.repeat_interleave(self.tile, dim=1).repeat_interleave(self.tile, dim=2)
        return full[:, : shape[0], : shape[1]]
