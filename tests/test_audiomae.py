"""The AudioMAE backbone: front-end, equivalence with timm, positions, checkpoints."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
import torchaudio.compliance.kaldi as kaldi
from torch import nn

from harness.registry.checkpoints import load_backbone_checkpoint
from harness.util.errors import DataError, UsageError
from harness_plugins.backbones.audiomae import (
    AUDIOSET_MEAN,
    AUDIOSET_STD,
    SIZES,
    AudioMAE,
    KaldiFbank,
    sincos_pos_embed_2d,
)
from harness_plugins.methods._masked_autoencoder import MaskedAutoencoder


def make(size: str = "tiny", **kw) -> AudioMAE:
    return AudioMAE(AudioMAE.Config(size=size, **kw))


def randomize(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial weights everywhere (LayerNorms too), so equivalence tests see every parameter."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=gen) * 0.05)


def reference_fbank(wave: torch.Tensor) -> torch.Tensor:
    """AudioMAE's dataset.py front-end for one clip, before padding."""
    wave = wave - wave.mean()
    return kaldi.fbank(
        wave[None],
        htk_compat=True,
        sample_frequency=16000,
        use_energy=False,
        window_type="hanning",
        num_mel_bins=128,
        dither=0.0,
        frame_shift=10,
    )


def test_sincos_table_matches_hand_computed_values():
    table = sincos_pos_embed_2d(8, (2, 3))  # 2 time rows, 3 frequency columns
    assert table.shape == (7, 8)
    assert torch.equal(table[0], torch.zeros(8))  # class token
    # dim 8: 4 channels per axis, omega = [1, 1/100]; first half encodes the column (frequency).
    for row in range(2):
        for col in range(3):
            expected = [
                math.sin(col),
                math.sin(col / 100),
                math.cos(col),
                math.cos(col / 100),
                math.sin(row),
                math.sin(row / 100),
                math.cos(row),
                math.cos(row / 100),
            ]
            token = 1 + row * 3 + col  # time-major order
            assert table[token].tolist() == pytest.approx(expected, abs=1e-6)


def test_sincos_of_a_shorter_grid_is_the_prefix_of_the_full_table():
    full = sincos_pos_embed_2d(96, (64, 8))
    assert torch.equal(sincos_pos_embed_2d(96, (7, 8)), full[: 1 + 7 * 8])


@pytest.mark.parametrize("seconds", [1.0, 2.5])
def test_frontend_matches_kaldi_fbank_per_clip(seconds):
    gen = torch.Generator().manual_seed(1)
    n = int(seconds * 16000)
    t = torch.arange(n) / 16000
    waves = torch.stack(
        [
            0.1 * torch.randn(n, generator=gen),
            0.5 * torch.sin(2 * math.pi * 440 * t) + 0.2,  # tone with a DC offset
            0.3 * torch.sin(2 * math.pi * 3000 * t) * torch.exp(-3 * t),
            1e-4 * torch.randn(n, generator=gen),
        ]
    )
    out = KaldiFbank()(waves)
    frames = 1 + (n - 400) // 160
    length = 1 << (frames - 1).bit_length()  # 98 -> 128, 248 -> 256
    assert out.shape == (4, 1, length, 128)
    for clip, wave in enumerate(waves):
        expected = (reference_fbank(wave) - AUDIOSET_MEAN) / (2 * AUDIOSET_STD)
        # float32 batch vs clip-by-clip kernels differ by ~1e-3 in log-mel, below the float32
        # reference's own error against float64 (2.2e-3 in log = 2.5e-4 here); per clip the two
        # are bit-identical (harness.nn.fbank)
        assert (out[clip, 0, :frames] - expected).abs().max().item() < 3e-4
    pad_value = (0.0 - AUDIOSET_MEAN) / (2 * AUDIOSET_STD)  # AudioMAE pads the fbank with zeros
    assert torch.allclose(out[:, 0, frames:], torch.full_like(out[:, 0, frames:], pad_value))


def test_frontend_lengths_follow_audiomae_targets():
    frontend = KaldiFbank()
    assert [frontend.frames_for(f) for f in (98, 498, 998, 1500, 3)] == [128, 512, 1024, 1024, 16]
    assert KaldiFbank(target_length=64).frames_for(98) == 64
    wave = torch.randn(1, 16000)
    cropped = KaldiFbank(target_length=64)(wave)
    assert torch.equal(cropped, KaldiFbank()(wave)[:, :, :64])


def timm_audiomae(model: AudioMAE, frames: int) -> nn.Module:
    """timm's VisionTransformer configured as AudioMAE's encoder, with ``model``'s weights."""
    from timm.models.vision_transformer import VisionTransformer

    spec = SIZES[model.config.size]
    reference = VisionTransformer(
        img_size=(frames, 128),
        patch_size=16,
        in_chans=1,
        num_classes=0,
        global_pool="avg",
        fc_norm=True,
        embed_dim=spec.dim,
        depth=spec.depth,
        num_heads=spec.heads,
        mlp_ratio=4.0,
        qkv_bias=True,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
    )
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("norm.")}
    state["pos_embed"] = model.positions((frames // 16, 8))
    reference.load_state_dict(state, strict=True)
    return reference.eval()


@pytest.mark.parametrize(("size", "frames", "batch"), [("tiny", 1024, 2), ("base", 256, 2)])
def test_matches_timm_vision_transformer(size, frames, batch):
    torch.manual_seed(0)
    model = make(size)
    randomize(model)
    model.eval()
    reference = timm_audiomae(model, frames)
    features = torch.randn(batch, 1, frames, 128)
    with torch.no_grad():
        ours = model(features)
        theirs = reference(features)
    assert ours.embedding.shape == (batch, SIZES[size].dim)
    assert ours.tokens.shape == (batch, 1 + frames // 16 * 8, SIZES[size].dim)
    assert (ours.embedding - theirs).abs().max().item() < 1e-4


def test_shorter_input_equals_a_model_built_for_that_grid():
    """Using the first rows of the 1024-frame table is the sin-cos table of the shorter grid."""
    model = make()
    randomize(model)
    model.eval()
    features = torch.randn(2, 1, 128, 128)
    reference = timm_audiomae(model, 128)
    reference.pos_embed.data = sincos_pos_embed_2d(model.embed_dim, (8, 8))[None]
    with torch.no_grad():
        assert torch.allclose(model(features).embedding, reference(features), atol=1e-5)


def test_training_mask_drops_time_rows_and_frequency_columns():
    model = make(mask_t_prob=0.5, mask_f_prob=0.25)
    features = torch.randn(2, 1, 128, 128)  # 8 x 8 patches
    model.train()
    assert model(features).tokens.shape[1] == 1 + 4 * 6
    model.eval()
    assert model(features).tokens.shape[1] == 1 + 8 * 8


def test_layers_and_stem_for_freezing_and_decay():
    model = make()
    assert model.time_axis == -2
    assert model.layer_of("patch_embed.proj.weight") == 0
    assert model.layer_of("cls_token") == 0
    assert model.layer_of("blocks.2.attn.qkv.weight") == 3
    assert model.layer_of("fc_norm.weight") == model.num_layers + 1
    model.freeze_all_but_top(1)
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained == {
        n for n, _ in model.named_parameters() if n.startswith(("blocks.3.", "norm", "fc_norm"))
    }
    assert "pos_embed" not in dict(model.named_parameters())  # fixed, a buffer


def test_bad_input_is_a_usage_error():
    model = make()
    with pytest.raises(UsageError, match="128"):
        model(torch.randn(1, 1, 128, 64))
    with pytest.raises(UsageError, match="target_length"):
        model(torch.randn(1, 1, 2048, 128))
    with pytest.raises(ValueError, match="multiple of 16"):
        AudioMAE.Config(target_length=100)


@pytest.mark.parametrize("size", list(SIZES))
def test_listing_reports_true_parameter_counts(size):
    count = sum(p.numel() for p in make(size).parameters())
    assert SIZES[size].num_params() == count
    assert any(f"{count / 1e6:.2f}M" in line for line in AudioMAE.describe_extra())


# -- checkpoints --------------------------------------------------------------

ENCODER_KEYS = {"patch_embed.proj.weight", "patch_embed.proj.bias", "cls_token", "pos_embed"}
BLOCK_KEYS = [
    f"{m}.{p}"
    for m in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2")
    for p in ("weight", "bias")
]


def published_pretraining_state(model: AudioMAE) -> dict[str, torch.Tensor]:
    """A state dict in the layout of AudioMAE's released pretraining file, decoder included."""
    decoder = MaskedAutoencoder(MaskedAutoencoder.Config())
    decoder.setup(model, task=None)
    grid = model.max_grid
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("fc_norm.")}
    state.update(decoder.state_dict())
    state["decoder_pos_embed"] = sincos_pos_embed_2d(decoder.mask_token.shape[-1], grid)[None]
    return state


def test_published_key_layout():
    model = make()
    expected = ENCODER_KEYS | {"norm.weight", "norm.bias", "fc_norm.weight", "fc_norm.bias"}
    expected |= {f"blocks.{i}.{k}" for i in range(model.num_layers) for k in BLOCK_KEYS}
    assert set(model.state_dict()) == expected


def test_loads_published_pretraining_checkpoint_and_sets_decoder_aside(tmp_path):
    source = make()
    randomize(source, seed=3)
    state = published_pretraining_state(source)
    decoder_keys = {k for k in state if k.startswith(("decoder_", "mask_token"))}
    assert {"mask_token", "decoder_pos_embed", "decoder_pred.weight"} <= decoder_keys
    path = tmp_path / "pretrained.pth"
    torch.save({"model": state, "epoch": 32}, path)

    target = make()
    report = load_backbone_checkpoint(target, path)
    loaded = target.state_dict()
    for key, value in source.state_dict().items():
        if not key.startswith("fc_norm."):
            assert torch.equal(loaded[key], value), key
    assert torch.equal(loaded["fc_norm.weight"], torch.ones(target.embed_dim))  # fresh, as AudioMAE
    assert set(target.set_aside) == decoder_keys
    assert report.loaded == len(loaded)
    assert any("fc_norm absent" in note for note in target.load_notes)


def test_loads_fine_tuned_checkpoint_and_keeps_a_fitting_head(tmp_path):
    source = make()
    randomize(source, seed=4)
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("norm.")}
    head = {"head.weight": torch.randn(527, source.embed_dim), "head.bias": torch.randn(527)}
    path = tmp_path / "finetuned.pth"
    torch.save({"model": {**state, **head}}, path)

    target = make()
    report = load_backbone_checkpoint(target, path, num_classes=527)
    assert report.head == "kept"
    assert torch.equal(target.fc_norm.weight, source.fc_norm.weight)
    assert torch.equal(target.norm.weight, torch.ones(target.embed_dim))
    assert torch.equal(target.build_head(527).head.weight, head["head.weight"])
    assert load_backbone_checkpoint(make(), path, num_classes=10).head == "replaced"


def test_pos_embed_of_another_grid_is_recomputed_when_it_is_sincos(tmp_path):
    source = make()
    state = source.state_dict()
    state["pos_embed"] = sincos_pos_embed_2d(source.embed_dim, (32, 8))[None]  # 512 frames (ESC)
    torch.save({"model": state}, tmp_path / "esc.pth")
    target = make()
    load_backbone_checkpoint(target, tmp_path / "esc.pth")
    assert torch.equal(target.pos_embed, sincos_pos_embed_2d(target.embed_dim, (64, 8))[None])
    assert any("recomputed" in note for note in target.load_notes)

    state["pos_embed"] = torch.randn(1, 1 + 32 * 8, source.embed_dim)  # not the fixed table
    torch.save(state, tmp_path / "trained.pth")
    with pytest.raises(DataError, match=r"shape mismatch.*pos_embed"):
        load_backbone_checkpoint(make(), tmp_path / "trained.pth")


def test_checkpoint_of_another_size_names_the_right_one(tmp_path):
    torch.save(make("tiny").state_dict(), tmp_path / "tiny.pt")
    with pytest.raises(DataError, match="backbone.size=tiny"):
        load_backbone_checkpoint(make("small"), tmp_path / "tiny.pt")


def test_backbone_pt_round_trip(tmp_path):
    source = make()
    randomize(source, seed=5)
    torch.save(source.state_dict(), tmp_path / "backbone.pt")  # what the core writes
    target = make(checkpoint=str(tmp_path / "backbone.pt"))
    load_backbone_checkpoint(target, target.config.checkpoint)
    features = torch.randn(2, 1, 128, 128)
    source.eval()
    target.eval()
    with torch.no_grad():
        assert torch.equal(source(features).embedding, target(features).embedding)
    assert target.set_aside == []


# -- official AudioMAE details (issue 10 item 4) ---------------------------------------


def official_table(dim: int, patch_hw: tuple[int, int]) -> torch.Tensor:
    """The official ``get_2d_sincos_pos_embed_flexible(dim, patch_hw, cls_token=True)``, written
    out: meshgrid(w, h), first half of the channels from the w index, second from h."""
    h, w = patch_hw
    grid_w, grid_h = torch.meshgrid(torch.arange(w), torch.arange(h), indexing="xy")
    half = dim // 2
    omega = 1.0 / 10000 ** (torch.arange(half // 2, dtype=torch.float64) / (half / 2))

    def code(pos: torch.Tensor) -> torch.Tensor:
        angles = pos.reshape(-1, 1).double() * omega
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    table = torch.cat([code(grid_w), code(grid_h)], dim=1)
    return torch.cat([torch.zeros(1, dim, dtype=table.dtype), table]).float()


def test_official_pos_embed_orders_the_grid_as_8_by_64():
    model = make()
    expected = official_table(model.embed_dim, (8, 64))  # PatchEmbed_org.patch_hw for 1024 x 128
    assert torch.allclose(model.pos_embed[0], expected, atol=1e-6)
    own = make(pos_layout="time-major").pos_embed[0]
    assert (own - expected).abs().max() > 1.0  # the two layouts differ by up to 2.0 per entry
    # a shorter input gets the official table of its own grid, as the official code builds it
    assert torch.allclose(model.positions((32, 8))[0], official_table(96, (8, 32)), atol=1e-6)


def test_official_layout_file_loads_at_target_length_2048(tmp_path):
    source = make()
    state = source.state_dict()
    assert state["pos_embed"].shape == (1, 513, 96)
    torch.save({"model": state}, tmp_path / "official.pth")
    target = make(target_length=2048)
    load_backbone_checkpoint(target, tmp_path / "official.pth")
    assert target.pos_embed.shape == (1, 1025, 96)
    assert torch.allclose(target.pos_embed[0], official_table(96, (8, 128)), atol=1e-6)
    assert any("recomputed for 1024" in n for n in target.load_notes)
    with torch.no_grad():
        assert target(torch.randn(1, 1, 2048, 128)).embedding.shape == (1, 96)


def test_checkpoint_table_sets_the_layout(tmp_path):
    source = make(pos_layout="time-major")
    torch.save(source.state_dict(), tmp_path / "own.pt")
    target = make()
    load_backbone_checkpoint(target, tmp_path / "own.pt")
    assert target.pos_layout == "time-major"
    assert any("time-major layout" in n for n in target.load_notes)


def test_args_namespace_is_allowed_any_other_class_refused(tmp_path):
    import argparse
    import fractions

    state = make().state_dict()
    torch.save(
        {"model": state, "args": argparse.Namespace(model="mae_vit_base"), "epoch": 3},
        tmp_path / "official.pth",
    )
    load_backbone_checkpoint(make(), tmp_path / "official.pth")
    torch.save({"model": state, "args": fractions.Fraction(1, 3)}, tmp_path / "other.pth")
    with pytest.raises(DataError, match="cannot read checkpoint"):
        load_backbone_checkpoint(make(), tmp_path / "other.pth")
