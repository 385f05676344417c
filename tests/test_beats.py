"""BEATs: equivalence with speechbrain's port, front-end, position buckets, checkpoint format."""

from __future__ import annotations

import math
from dataclasses import asdict

import pytest
import torch
import torchaudio.compliance.kaldi as kaldi

from harness.registry.checkpoints import load_backbone_checkpoint
from harness.registry.config import build_dataclass
from harness.registry.plugins import load_plugins
from harness.util.errors import DataError, UsageError
from harness_plugins.backbones.beats import SIZES, Beats, relative_position_bucket

sb_beats = pytest.importorskip("speechbrain.lobes.models.beats")


def make(size: str = "tiny", seed: int = 0) -> Beats:
    """A random model whose biases, norms, gates and position bias are all non-trivial."""
    torch.manual_seed(seed)
    model = Beats(Beats.Config(size=size)).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim == 1 or name.endswith("grep_a"):
                param.add_(torch.randn_like(param) * 0.1)
        model.rel_pos_bias.weight.normal_()
    return model


def waveform(batch: int, seconds: float, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, int(16000 * seconds), generator=gen) * 0.1


def encode(model: Beats, wave: torch.Tensor):
    with torch.no_grad():
        return model(model.frontend()(wave))


# -- relative position buckets --------------------------------------------------

# (offset key - query, bucket) for the published 320 buckets, max distance 800: half 160 per side,
# offsets below 80 exact, beyond: 80 + floor(80 * log10(|offset| / 80)), capped at 159.
PUBLISHED_BUCKETS = [
    (0, 0),
    (-1, 1),
    (1, 161),
    (-79, 79),
    (79, 239),
    (-80, 80),
    (80, 240),
    (-100, 87),  # 80 * log10(1.25) = 7.75
    (200, 271),  # 160 + 80 + floor(80 * log10(2.5) = 31.8)
    (-400, 135),  # 80 * log10(5) = 55.9
    (-799, 159),  # 80 * log10(9.99) = 79.96
    (800, 319),
    (-5000, 159),
    (5000, 319),
]
# 16 buckets, max distance 32: half 8, exact below 4, then 4 + floor(4 * log(d / 4) / log(8)).
SMALL_BUCKETS = [(-3, 3), (3, 11), (-4, 4), (-8, 5), (16, 14), (-31, 7), (-32, 7), (100, 15)]


@pytest.mark.parametrize(("offset", "bucket"), PUBLISHED_BUCKETS)
def test_bucket_published_hand_computed(offset: int, bucket: int) -> None:
    assert relative_position_bucket(torch.tensor([offset]), 320, 800).item() == bucket


@pytest.mark.parametrize(("offset", "bucket"), SMALL_BUCKETS)
def test_bucket_small_hand_computed(offset: int, bucket: int) -> None:
    assert relative_position_bucket(torch.tensor([offset]), 16, 32).item() == bucket


def test_bucket_matches_speechbrain_over_all_offsets() -> None:
    attn = sb_beats.MultiheadAttention(
        64,
        2,
        self_attention=True,
        has_relative_attention_bias=True,
        num_buckets=320,
        max_distance=800,
    )
    offsets = torch.arange(-3000, 3001)
    expected = attn._relative_positions_bucket(offsets, bidirectional=True)
    assert torch.equal(relative_position_bucket(offsets, 320, 800), expected)


def test_position_bias_is_one_table_shared_by_all_layers() -> None:
    model = Beats(Beats.Config(size="small"))
    names = [n for n, _ in model.named_parameters() if "relative_attention" in n or "rel_pos" in n]
    assert names == ["rel_pos_bias.weight"]
    bias = model.rel_pos_bias(5)
    assert bias.shape == (6, 5, 5)
    # the bias depends on the offset only: constant along every diagonal
    assert torch.equal(bias[:, 1:, 1:], bias[:, :-1, :-1])


# -- front-end ----------------------------------------------------------------


@pytest.mark.parametrize("samples", [16000, 52_901])
def test_frontend_is_int16_scaled_kaldi_fbank_with_published_normalization(samples: int) -> None:
    wave = waveform(4, samples / 16000)
    wave[1] *= 30.0  # clipping-level and near-silent clips, and digital silence
    wave[2] *= 1e-4
    wave[3] = 0.0
    features = Beats(Beats.Config(size="tiny")).frontend()(wave)
    frames = 1 + (samples - 400) // 160
    assert features.shape == (4, 1, frames, 128)
    for i in range(4):
        fbank = kaldi.fbank(
            wave[i : i + 1] * 32768,
            num_mel_bins=128,
            sample_frequency=16000,
            frame_length=25,
            frame_shift=10,
        )
        expected = (fbank - 15.41663) / (2 * 6.55582)
        torch.testing.assert_close(features[i, 0], expected, rtol=0, atol=1e-5)


def test_too_short_input_is_a_readable_error() -> None:
    model = Beats(Beats.Config(size="tiny"))
    with pytest.raises(DataError, match=r"T >= 400 samples"):
        model.frontend()(torch.zeros(1, 100))
    with pytest.raises(DataError, match=r"shape \(1, 1, 10, 128\)"):
        model(torch.zeros(1, 1, 10, 128))


# -- equivalence with speechbrain's BEATs ------------------------------------


@pytest.mark.parametrize("size", ["tiny", "base"])
def test_matches_speechbrain_beats_on_published_checkpoint_format(tmp_path, size: str) -> None:
    model = make(size)
    path = tmp_path / f"beats_{size}.pt"
    torch.save(model.published_checkpoint(), path)

    # speechbrain's constructor reads cfg and model from the file (torch.load, no download) and
    # loads the state dict strictly, so its keys and shapes must be exactly the published layout.
    reference = sb_beats.BEATs(ckp_path=str(path), freeze=True)
    assert not reference.training

    wave = waveform(2, 4.0)  # 24 time x 8 frequency patches: offsets reach the log-spaced buckets
    with torch.no_grad():
        expected = reference.extract_features(wave, torch.ones(2))[0]
    encoded = encode(model, wave)
    assert encoded.tokens.shape == expected.shape == (2, 192, SIZES[size].encoder_embed_dim)
    assert (encoded.tokens - expected).abs().max().item() < 1e-4
    assert (encoded.embedding - expected.mean(dim=1)).abs().max().item() < 1e-4


def test_published_file_loads_back_strictly(tmp_path) -> None:
    model = make("tiny", seed=3)
    path = tmp_path / "beats.pt"
    torch.save(model.published_checkpoint(), path)
    loaded = torch.load(path, weights_only=True)
    assert set(loaded) == {"cfg", "model"}
    wave = waveform(1, 1.0)

    fresh = Beats(Beats.Config(size="tiny")).eval()
    result = fresh.load_state_dict(fresh.adapt_state_dict(loaded), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.equal(encode(fresh, wave).tokens, encode(model, wave).tokens)

    via_harness = Beats(Beats.Config(size="tiny", checkpoint=str(path))).eval()
    report = load_backbone_checkpoint(via_harness, path)
    assert report.loaded == len(via_harness.state_dict())
    assert torch.equal(encode(via_harness, wave).tokens, encode(model, wave).tokens)


def test_checkpoint_of_another_size_does_not_load(tmp_path) -> None:
    path = tmp_path / "tiny.pt"
    torch.save(make("tiny").published_checkpoint(), path)
    small = Beats(Beats.Config(size="small"))
    with pytest.raises(UsageError) as err:
        load_backbone_checkpoint(small, path)
    message = str(err.value)
    assert "\n" not in message
    assert "encoder_embed_dim=64 (size 'small': 384)" in message
    assert message.endswith("use --set backbone.size=tiny")


def test_published_layout_repeats_the_shared_bias_under_every_layer() -> None:
    model = make("tiny")
    published = model.published_checkpoint()["model"]
    keys = [k for k in published if k.endswith("relative_attention_bias.weight")]
    assert keys == [
        f"encoder.layers.{i}.self_attn.relative_attention_bias.weight" for i in range(2)
    ]
    assert "encoder.pos_conv.0.weight_g" in published
    assert published["encoder.pos_conv.0.weight_g"].shape == (1, 1, 128)
    assert not any(k.startswith(("blocks.", "rel_pos_bias", "embed_norm")) for k in published)


def test_harness_state_dict_passes_through() -> None:
    model = make("tiny")
    state = model.state_dict()
    adapted = model.adapt_state_dict(state)
    assert adapted.keys() == state.keys()


def test_predictor_and_tokenizer_keys_are_set_aside() -> None:
    model = make("tiny")
    checkpoint = model.published_checkpoint()
    checkpoint["model"] |= {
        "predictor.weight": torch.zeros(527, 64),
        "predictor.bias": torch.zeros(527),
        "quantize.embedding.weight": torch.zeros(1024, 256),
        "quantize_layer.0.weight": torch.zeros(64, 64),
    }
    checkpoint["cfg"] |= {"finetuned_model": True, "encoder_layerdrop": 0.05}
    adapted = model.adapt_state_dict(checkpoint)
    assert adapted.keys() == model.state_dict().keys()


def test_checkpoint_cfg_of_another_size_is_a_readable_error() -> None:
    checkpoint = {"cfg": asdict(SIZES["base"]) | {"dropout": 0.1}, "model": {}}
    small = Beats(Beats.Config(size="small"))
    with pytest.raises(UsageError) as err:
        small.adapt_state_dict(checkpoint)
    message = str(err.value)
    assert "\n" not in message
    assert "encoder_embed_dim=768 (size 'small': 384)" in message
    assert "--set backbone.size=base" in message


def test_checkpoint_cfg_of_unknown_architecture_is_a_readable_error() -> None:
    model = Beats(Beats.Config(size="tiny"))
    cfg = model.published_cfg() | {"relative_position_embedding": False, "conv_pos": 64}
    with pytest.raises(UsageError, match=r"conv_pos=64 .*no beats size"):
        model.adapt_state_dict({"cfg": cfg, "model": {}})
    with pytest.raises(UsageError, match=r"relative_position_embedding=False"):
        model.check_checkpoint({"cfg": cfg, "model": {}})
    model.check_checkpoint({"cfg": model.published_cfg() | {"encoder_layerdrop": 0.05}})


# -- sizes and the backbone interface -------------------------------------------


def test_base_is_the_published_encoder() -> None:
    model = Beats(Beats.Config(size="base"))
    assert model.num_layers == 12 and model.embed_dim == 768
    assert model.patch_embedding.weight.shape == (512, 1, 16, 16)
    assert model.patch_embedding.bias is None
    assert model.post_extract_proj.weight.shape == (768, 512)
    assert model.pos_conv.weight_v.shape == (768, 768 // 16, 128)
    assert model.rel_pos_bias.weight.shape == (320, 12)
    block = model.blocks[0]
    assert block.fc1.weight.shape == (3072, 768)
    assert block.self_attn.grep_linear.weight.shape == (8, 64)
    assert block.alpha == pytest.approx(math.pow(24, 0.25))
    assert sum(p.numel() for p in model.parameters()) == 90_311_792 == SIZES["base"].num_params()


@pytest.mark.parametrize("size", ["tiny", "small"])
def test_parameter_count_formula(size: str) -> None:
    model = Beats(Beats.Config(size=size))
    assert sum(p.numel() for p in model.parameters()) == SIZES[size].num_params()
    assert any(line.startswith(f"size {size}:") for line in Beats.describe_extra())


def test_one_second_clip_gives_six_by_eight_tokens_and_their_mean() -> None:
    model = make("tiny")
    encoded = encode(model, waveform(3, 1.0))
    assert encoded.tokens.shape == (3, 6 * 8, 64)
    torch.testing.assert_close(encoded.embedding, encoded.tokens.mean(dim=1))


def test_registered_with_typed_config() -> None:
    entry = load_plugins()["backbone"].get("beats")
    assert entry.cls is Beats
    config = build_dataclass(Beats.Config, {"size": "small", "checkpoint": "/x/y.pt"}, "backbone")
    assert config.size == "small" and config.checkpoint == "/x/y.pt"
    with pytest.raises(UsageError, match="huge"):
        build_dataclass(Beats.Config, {"size": "huge"}, "backbone")


# -- published-model details: max_distance from cfg, padding mask ---------------------


def test_checkpoint_with_max_distance_1280_builds_it_and_matches_speechbrain(tmp_path) -> None:
    model = make("tiny", seed=5)
    exported = model.published_checkpoint()
    exported["cfg"]["max_distance"] = 1280  # unilm's class default
    path = tmp_path / "beats_1280.pt"
    torch.save(exported, path)
    reference = sb_beats.BEATs(ckp_path=str(path), freeze=True)
    ours = Beats(Beats.Config(size="tiny")).eval()
    load_backbone_checkpoint(ours, path)
    assert ours.rel_pos_bias.max_distance == 1280 and ours.arch.max_distance == 1280
    wave = waveform(1, 10.0)  # 62 x 8 = 496 tokens: offsets beyond 400 fall in other buckets
    with torch.no_grad():
        expected = reference.extract_features(wave, torch.ones(1))[0]
    assert (encode(ours, wave).tokens - expected).abs().max().item() < 1e-4
    # at 800 the far offsets land in other buckets, so the output differs
    at_800 = make("tiny", seed=5)
    assert (encode(at_800, wave).tokens - expected).abs().max().item() > 1e-3


def test_padded_batch_matches_speechbrain_with_wav_lens(tmp_path) -> None:
    from harness_plugins.backbones.beats import forward_padding_mask

    model = make("tiny", seed=6)
    path = tmp_path / "beats.pt"
    torch.save(model.published_checkpoint(), path)
    reference = sb_beats.BEATs(ckp_path=str(path), freeze=True)
    wave = waveform(2, 4.0)
    wave[1, 40000:] = 0.0  # clip 2 is 2.5 s, zero-padded to 4 s
    lens = torch.tensor([1.0, 40000 / 64000])
    sample_mask = torch.arange(64000)[None, :] >= (lens * 64000)[:, None]
    with torch.no_grad():
        expected = reference.extract_features(wave, lens)[0]
        features = model.frontend()(wave)
        ours = model(features, padding_mask=sample_mask)
        unpadded = model(features)
    assert (ours.tokens - expected).abs().max().item() < 1e-4
    assert not torch.allclose(unpadded.tokens[1], expected[1], atol=1e-3)  # the mask matters
    tokens = forward_padding_mask(
        ours.tokens.shape[1], forward_padding_mask(features.shape[2], sample_mask)
    )
    keep = ~tokens[1]
    assert 0 < keep.sum() < keep.numel()
    assert torch.allclose(ours.embedding[1], ours.tokens[1][keep].mean(dim=0), atol=1e-6)
