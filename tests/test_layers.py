"""Shared ViT layers (harness.nn.layers): the published defaults and table layouts by hand."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
from timm.layers import DropPath
from torch import nn

from harness.nn.layers import (
    GridViT,
    PatchEmbed,
    VitSize,
    audiomae_sincos,
    check_vit_size,
    describe_vit_sizes,
    sincos_pos_embed_2d,
    vit_block,
)
from harness.nn.state_dicts import block_count, check_size, swap_prefix
from harness.util.errors import DataError


def test_vit_block_defaults_are_the_published_ones():
    block = vit_block(8, 2)
    assert block.mlp.fc1.out_features == 32  # mlp_ratio 4
    assert not isinstance(block.drop_path1, DropPath)  # no stochastic depth by default
    assert block.attn.qkv.bias is not None and block.norm1.eps == 1e-6
    assert isinstance(vit_block(8, 2, drop_path=0.1).drop_path1, DropPath)


def test_patch_embed_defaults_to_flattened_16x16_patches_of_one_channel():
    embed = PatchEmbed(24)
    assert embed.patch_size == (16, 16) and embed.proj.in_channels == 1
    assert embed(torch.zeros(2, 1, 32, 48)).shape == (2, 6, 24)  # 2 x 3 patches
    assert PatchEmbed(24, flatten=False)(torch.zeros(2, 1, 32, 48)).shape == (2, 24, 2, 3)


def test_sincos_table_has_a_zero_class_row_then_columns_and_rows():
    table = sincos_pos_embed_2d(8, (2, 3))
    assert table.shape == (7, 8) and table.dtype == torch.float32
    assert torch.equal(table[0], torch.zeros(8))
    # token 5 is row 1, column 1 (row-major); channels 0-1 sin of the column, 4-5 of the row
    # per half: sin(p), sin(p / 100), cos(p), cos(p / 100)
    expected_5 = [math.sin(1), math.sin(0.01), math.cos(1), math.cos(0.01)] * 2
    assert torch.allclose(table[5], torch.tensor(expected_5), atol=1e-7)
    col2_row1 = [math.sin(2), math.sin(0.02), math.cos(2), math.cos(0.02),
                 math.sin(1), math.sin(0.01), math.cos(1), math.cos(0.01)]  # fmt: skip
    assert torch.allclose(table[6], torch.tensor(col2_row1), atol=1e-7)
    assert sincos_pos_embed_2d(8, (2, 3), cls_token=False).shape == (6, 8)


def tiny_grid_vit(grid: tuple[int, int], depth: int = 0, drop_path: float = 0.0) -> GridViT:
    vit = GridViT()
    vit.build_grid_vit(VitSize(dim=4, depth=depth, heads=2), grid, patch=2, drop_path=drop_path)
    return vit


def test_grid_vit_adds_the_first_time_columns_of_each_frequency_row():
    vit = tiny_grid_vit((2, 4))
    vit.norm = nn.Identity()
    with torch.no_grad():
        vit.patch_embed.proj.weight.zero_()
        vit.patch_embed.proj.bias.zero_()
        vit.cls_token.fill_(100.0)
        vit.pos_embed.copy_(torch.arange(9.0)[None, :, None].expand(1, 9, 4))
    # 4 x 6 features: a 2 x 3 patch grid, one time column fewer than the table's 4
    tokens, rows, cols = vit.encode_grid(torch.randn(1, 1, 4, 6))
    assert (rows, cols) == (2, 3)
    # class token 100 + table row 0, then table entries 1 + r * 4 + c for c < 3
    assert tokens[0, :, 0].tolist() == [100.0, 1.0, 2.0, 3.0, 5.0, 6.0, 7.0]


def test_grid_vit_stochastic_depth_rises_linearly_to_drop_path():
    vit = tiny_grid_vit((2, 2), depth=3, drop_path=0.2)
    rates = [
        b.drop_path1.drop_prob if isinstance(b.drop_path1, DropPath) else 0.0 for b in vit.blocks
    ]
    assert rates == pytest.approx([0.0, 0.1, 0.2])
    assert vit.pos_embed.shape == (1, 1 + 2 * 2, 4) and vit.norm.eps == 1e-6


SIZES = {"tiny": VitSize(dim=48, depth=2, heads=3), "base": VitSize(dim=768, depth=12, heads=12)}


def encoder_state(dim: int, depth: int) -> dict[str, torch.Tensor]:
    state = {"patch_embed.proj.weight": torch.zeros(dim, 1, 16, 16)}
    state.update({f"blocks.{i}.norm1.weight": torch.zeros(dim) for i in range(depth)})
    return state


def test_check_vit_size_names_the_size_that_fits():
    check_vit_size("m2d", "tiny", encoder_state(48, 2), SIZES)
    check_vit_size("m2d", "base", {"norm.weight": torch.zeros(3)}, SIZES)  # no patch embedding
    with pytest.raises(DataError, match=r"48 dims and 2 blocks.*'base' has 768 and 12.*size=tiny"):
        check_vit_size("m2d", "base", encoder_state(48, 2), SIZES)
    with pytest.raises(DataError, match="no m2d size has this shape"):
        check_vit_size("m2d", "tiny", encoder_state(48, 3), SIZES)


class SquareLinear(nn.Module):
    @dataclass
    class Config:
        size: str = "tiny"

    def __init__(self, config: Config) -> None:
        super().__init__()
        dim = SIZES[config.size].dim
        self.linear = nn.Linear(dim, dim)


def test_describe_vit_sizes_counts_parameters_and_the_embedding_width():
    # tiny: 48 * 48 + 48 = 2352 parameters; base: 768 * 768 + 768 = 590592
    assert describe_vit_sizes(SquareLinear, SIZES, embedding_factor=5) == [
        "size tiny: 2 layers x 48 dims, 3 heads, 0.00M parameters, embedding [B, 240]",
        "size base: 12 layers x 768 dims, 12 heads, 0.59M parameters, embedding [B, 3840]",
    ]


def test_audiomae_sincos_official_layout_is_the_transposed_grid_table():
    assert torch.equal(audiomae_sincos(8, (3, 2), "official"), sincos_pos_embed_2d(8, (2, 3)))
    assert torch.equal(audiomae_sincos(8, (3, 2), "time-major"), sincos_pos_embed_2d(8, (3, 2)))


def test_state_dict_helpers():
    state = {"blocks.0.a": 0, "blocks.0.b": 0, "blocks.11.a": 0, "norm.weight": 0}
    assert block_count(state) == 2 and block_count(state, "norm.") == 1
    pairs = [("encoder.", "model.encoder."), ("head.", "classifier.")]
    assert swap_prefix("encoder.x", pairs) == "model.encoder.x"
    assert swap_prefix("model.encoder.x", pairs, reverse=True) == "encoder.x"
    assert swap_prefix("other.x", pairs) == "other.x"
    check_size("passt", "small", (384, 12), {"small": (384, 12)})
