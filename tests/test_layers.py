"""Shared ViT layers (harness.nn.layers): the published defaults and table layouts by hand."""

from __future__ import annotations

import math

import torch
from timm.layers import DropPath

from harness.nn.layers import PatchEmbed, sincos_pos_embed_2d, vit_block


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
