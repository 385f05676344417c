"""Shared building blocks of the ViT-family backbones.

The transformer parts come from ``timm`` (``timm.layers`` and timm's ViT ``Block``), so every
backbone keeps timm's key names (``norm1``, ``attn.qkv``, ``attn.proj``, ``norm2``, ``mlp.fc1``,
``mlp.fc2``), which are also the key names of the published PaSST, AudioMAE, MaskSpec and M2D
checkpoints. What timm does not offer in the published form lives here: the MAE-style 2-D sin-cos
table (channel halves for column then row, row-major token order), the 1-D sinusoidal table of
fairseq-style models, random masking, and MAE's initialisation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial

import torch
from timm.layers import DropPath, Mlp
from timm.layers import PatchEmbed as TimmPatchEmbed
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from harness.nn.state_dicts import block_count, check_size
from harness.util.errors import UsageError

__all__ = [
    "POS_LAYOUTS",
    "Block",
    "DropPath",
    "GridViT",
    "Mlp",
    "PatchEmbed",
    "VitSize",
    "audiomae_sincos",
    "check_vit_size",
    "count_parameters",
    "describe_vit_sizes",
    "init_mae_weights",
    "random_masking",
    "sincos_1d",
    "sincos_pos_embed_1d",
    "sincos_pos_embed_2d",
    "vit_block",
]


def vit_block(dim: int, heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0) -> Block:
    """timm's pre-norm ViT block as published audio ViTs use it (qkv bias, LayerNorm eps 1e-6)."""
    if dim % heads:
        raise UsageError(f"attention dims {dim} not divisible by {heads} heads")
    return Block(
        dim,
        heads,
        mlp_ratio=mlp_ratio,
        qkv_bias=True,
        drop_path=drop_path,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
    )


class PatchEmbed(TimmPatchEmbed):
    """timm's conv patch embedding for one-channel spectrograms of any size (``proj`` key)."""

    def __init__(self, dim: int, patch: int | tuple[int, int] = 16, flatten: bool = True) -> None:
        super().__init__(
            img_size=None, patch_size=patch, in_chans=1, embed_dim=dim, flatten=flatten
        )


def sincos_1d(dim: int, positions: Tensor) -> Tensor:
    """``[M, dim]``: sines then cosines of ``positions * 10000 ** (-2i / dim)`` (MAE layout)."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    angles = positions.double().reshape(-1, 1) * omega
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_pos_embed_2d(dim: int, grid: tuple[int, int], cls_token: bool = True) -> Tensor:
    """MAE's fixed 2-D table ``[(1 +) rows * cols, dim]`` for a row-major grid ``(rows, cols)``.

    The first half of the channels encodes the column index, the second the row index (MAE's
    ``get_2d_sincos_pos_embed`` with ``grid_size = (rows, cols)``); the class token's row is zeros.
    """
    if dim % 4:
        raise UsageError(f"sin-cos positional embedding needs dims divisible by 4, got {dim}")
    rows, cols = grid
    row = torch.arange(rows).repeat_interleave(cols)
    col = torch.arange(cols).repeat(rows)
    table = torch.cat([sincos_1d(dim // 2, col), sincos_1d(dim // 2, row)], dim=1)
    if cls_token:
        table = torch.cat([torch.zeros(1, dim, dtype=table.dtype), table])
    return table.float()


POS_LAYOUTS = ("official", "time-major")
"""Orders of the AudioMAE sin-cos table, see :func:`audiomae_sincos`."""


def audiomae_sincos(dim: int, grid: tuple[int, int], layout: str = "official") -> Tensor:
    """The fixed sin-cos table ``[1 + rows * cols, dim]`` of a ``(time rows, freq cols)`` grid.

    ``official``: the table the official AudioMAE builds from ``PatchEmbed_org.patch_hw``
    ``= (cols, rows)`` (``(8, 64)`` for 1024 frames) and adds to the time-major tokens: token
    ``n`` gets the column code of ``n % rows`` and the row code of ``n // rows``.
    ``time-major``: the table of the token grid itself (token ``t * cols + f`` encodes ``f``
    and ``t``). Both are MAE's ``get_2d_sincos_pos_embed`` on a row-major grid.
    """
    if layout == "official":
        return sincos_pos_embed_2d(dim, (grid[1], grid[0]))
    return sincos_pos_embed_2d(dim, grid)


def sincos_pos_embed_1d(length: int, dim: int) -> Tensor:
    """The interleaved 1-D table ``[length, dim]`` of "Attention is all you need".

    Even channels ``sin(p / 10000 ** (2i / dim))``, odd channels the cosine (fairseq/MAE-AST).
    """
    if dim % 2:
        raise UsageError(f"sinusoidal positions need an even dim, got {dim}")
    position = torch.arange(length, dtype=torch.float64).unsqueeze(1)
    div = torch.exp(
        torch.arange(0, dim, 2, dtype=torch.float64) * (-torch.log(torch.tensor(1e4)) / dim)
    )
    table = torch.zeros(length, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(position * div)
    table[:, 1::2] = torch.cos(position * div)
    return table.float()


def random_masking(x: Tensor, mask_ratio: float) -> tuple[Tensor, Tensor, Tensor]:
    """Keep a random ``int(N * (1 - mask_ratio))`` tokens of each row of ``x`` ``[B, N, D]``.

    Returns the kept tokens ``[B, K, D]``, the mask ``[B, N]`` (1 = removed) and ``ids_restore``
    ``[B, N]`` that puts ``cat(kept, removed)`` back into the original order (MAE's draw).
    """
    batch, length, dim = x.shape
    keep = int(length * (1 - mask_ratio))
    if not 0.0 <= mask_ratio < 1.0 or keep < 1:
        raise UsageError(f"mask ratio {mask_ratio} keeps no patch of {length}")
    ids_shuffle = torch.rand(batch, length, device=x.device).argsort(dim=1)
    ids_restore = ids_shuffle.argsort(dim=1)
    kept = x.gather(1, ids_shuffle[:, :keep, None].expand(-1, -1, dim))
    mask = torch.ones(batch, length, device=x.device)
    mask[:, :keep] = 0
    return kept, mask.gather(1, ids_restore), ids_restore


def init_mae_weights(module: nn.Module) -> None:
    """MAE's initialisation: xavier-uniform linear layers with zero bias, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def count_parameters(cls: type[nn.Module], config: object) -> int:
    """Parameters of ``cls(config)``, counted on the meta device without allocating weights."""
    with torch.device("meta"):
        model = cls(config)
    return sum(p.numel() for p in model.parameters())


@dataclass(frozen=True)
class VitSize:
    """Width, depth and attention heads of a ViT encoder."""

    dim: int
    depth: int
    heads: int


class GridViT(nn.Module):
    """A timm-layout ViT over a grid of spectrogram patches, inherited by backbones next to
    ``Backbone`` (M2D, MaskSpec).

    Its parts keep the published key names: ``patch_embed``, ``cls_token``, ``pos_embed`` (the
    class token's row, then a frequency-major ``rows x cols`` table), ``blocks`` and ``norm``.
    """

    grid: tuple[int, int]
    patch_embed: PatchEmbed
    cls_token: nn.Parameter
    pos_embed: nn.Parameter
    blocks: nn.ModuleList
    norm: nn.LayerNorm

    def build_grid_vit(
        self, size: VitSize, grid: tuple[int, int], patch: int, drop_path: float
    ) -> None:
        """Create the parts for ``size`` over a ``(rows, cols)`` patch grid; the stochastic depth
        rate rises linearly from 0 in the first block to ``drop_path`` in the last."""
        self.grid = grid
        self.patch_embed = PatchEmbed(size.dim, patch, flatten=False)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, size.dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid[0] * grid[1], size.dim))
        rates = [drop_path * i / max(size.depth - 1, 1) for i in range(size.depth)]
        self.blocks = nn.ModuleList(vit_block(size.dim, size.heads, drop_path=r) for r in rates)
        self.norm = nn.LayerNorm(size.dim, eps=1e-6)

    def encode_grid(self, features: Tensor) -> tuple[Tensor, int, int]:
        """Features ``[B, 1, F, T]`` -> normed tokens ``[B, 1 + rows * cols, D]`` (class token
        first, patches frequency-major), ``rows`` and ``cols``.

        Each frequency row adds the first ``cols`` time columns of its row of the table, so input
        shorter than the table uses its start.
        """
        x = self.patch_embed(features)
        rows, cols = x.shape[2], x.shape[3]
        x = x.flatten(2).transpose(1, 2)
        table = self.pos_embed[:, 1:].reshape(1, self.grid[0], self.grid[1], -1)
        x = x + table[:, :, :cols].reshape(1, rows * cols, -1)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x), rows, cols


def check_vit_size(
    backbone: str, chosen: str, state: Mapping[str, Tensor], sizes: Mapping[str, VitSize]
) -> None:
    """Refuse a state dict whose patch embedding and block count fit another size in ``sizes``
    (one line naming the size that fits); a state dict without ``patch_embed.proj`` passes."""
    proj = state.get("patch_embed.proj.weight")
    if proj is not None:
        shapes = {name: (size.dim, size.depth) for name, size in sizes.items()}
        check_size(backbone, chosen, (proj.shape[0], block_count(state)), shapes)


def describe_vit_sizes(
    cls: type[nn.Module], sizes: Mapping[str, VitSize], embedding_factor: int = 1
) -> list[str]:
    """One line per size: layers, dims, heads, parameters of ``cls`` built with ``size=NAME``,
    and the embedding width ``dim * embedding_factor``."""
    lines = []
    for name, size in sizes.items():
        params = count_parameters(cls, cls.Config(size=name))
        lines.append(
            f"size {name}: {size.depth} layers x {size.dim} dims, {size.heads} heads, "
            f"{params / 1e6:.2f}M parameters, embedding [B, {size.dim * embedding_factor}]"
        )
    return lines
