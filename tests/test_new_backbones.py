"""MAE-AST, MaskSpec and M2D: published layouts, front-ends, and equality with references.

No reference implementation of any of the three is on PyPI (checked with pip: no ``m2d``,
``maskspec``, ``mae-ast``); MaskSpec and M2D *are* timm ``VisionTransformer`` encoders, so those
are compared with timm configured as their published code configures it, and M2D's front-end
with nnAudio (the published runtime's mel) when installed. MAE-AST (fairseq) is checked against
a hand-written forward pass of the published equations and key layout.
"""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from harness.nn.layers import sincos_pos_embed_1d
from harness.nn.mel import PasstMel
from harness.registry.checkpoints import load_backbone_checkpoint
from harness.util.errors import DataError, UsageError
from harness_plugins.backbones import m2d, mae_ast, maskspec


def randomize(model: nn.Module, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=gen) * 0.05)


def timm_vit(dim: int, depth: int, heads: int, img_size: tuple[int, int]) -> nn.Module:
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(
        img_size=img_size,
        patch_size=16,
        in_chans=1,
        num_classes=0,
        embed_dim=dim,
        depth=depth,
        num_heads=heads,
        mlp_ratio=4,
        qkv_bias=True,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
    ).eval()


# -- published key layouts (names and shapes from the reference code) ---------------------


def vit_layout(dim: int, depth: int, grid: tuple[int, int], extra: dict) -> dict[str, torch.Tensor]:
    """The timm ViT encoder keys of a published MaskSpec / M2D file, random values."""
    gen = torch.Generator().manual_seed(3)
    shapes = {
        "cls_token": (1, 1, dim),
        "pos_embed": (1, 1 + grid[0] * grid[1], dim),
        "patch_embed.proj.weight": (dim, 1, 16, 16),
        "patch_embed.proj.bias": (dim,),
        "norm.weight": (dim,),
        "norm.bias": (dim,),
    }
    for i in range(depth):
        p = f"blocks.{i}."
        shapes |= {
            p + "norm1.weight": (dim,),
            p + "norm1.bias": (dim,),
            p + "attn.qkv.weight": (3 * dim, dim),
            p + "attn.qkv.bias": (3 * dim,),
            p + "attn.proj.weight": (dim, dim),
            p + "attn.proj.bias": (dim,),
            p + "norm2.weight": (dim,),
            p + "norm2.bias": (dim,),
            p + "mlp.fc1.weight": (4 * dim, dim),
            p + "mlp.fc1.bias": (4 * dim,),
            p + "mlp.fc2.weight": (dim, 4 * dim),
            p + "mlp.fc2.bias": (dim,),
        }
    shapes |= extra
    return {k: torch.randn(s, generator=gen) * 0.05 for k, s in shapes.items()}


def test_maskspec_loads_the_published_pretraining_layout_and_matches_timm(tmp_path) -> None:
    spec = maskspec.SIZES["tiny"]
    decoder = {
        "mask_token": (1, 1, 32),
        "decoder_embed.weight": (32, spec.dim),
        "decoder_pos_embed": (1, 497, 32),
        "decoder_pred.weight": (256, 32),
    }
    state = vit_layout(spec.dim, spec.depth, (8, 62), decoder)
    path = tmp_path / "maskspec.pth"
    torch.save({"model": state, "epoch": 80}, path)
    model = maskspec.MaskSpec(maskspec.MaskSpec.Config(size="tiny")).eval()
    report = load_backbone_checkpoint(model, path)
    assert report.loaded == len(state) - len(decoder)
    assert any("set aside 4" in n for n in report.notes)

    reference = timm_vit(spec.dim, spec.depth, spec.heads, (128, 1000))
    reference.load_state_dict({k: v for k, v in state.items() if k not in decoder})
    features = torch.randn(2, 1, 128, 300, generator=torch.Generator().manual_seed(1))
    stretched = F.interpolate(features, (128, 1000), mode="bicubic", align_corners=True)
    with torch.no_grad():
        expected = reference.forward_features(stretched)
        out = model(features)
    assert (out.tokens - expected).abs().max() < 1e-5
    assert torch.allclose(out.embedding, expected[:, 0], atol=1e-5)


def test_maskspec_frontend_is_passt_mel_then_published_band_statistics() -> None:
    wave = torch.randn(2, 32000, generator=torch.Generator().manual_seed(2)) * 0.1
    front = maskspec.MaskSpecMel().eval()
    mel = PasstMel(fmin_aug_range=10, fmax_aug_range=2000).eval()(wave)
    mean = torch.tensor(maskspec.FRAME_MEAN)[:, None]
    std = torch.tensor(maskspec.FRAME_STD)[:, None]
    assert torch.allclose(front(wave), (mel - mean) / std)
    assert len(maskspec.FRAME_MEAN) == len(maskspec.FRAME_STD) == 128
    assert front.mel.fmax == 15000  # sr / 2 - fmax_aug_range / 2, as the reference


def test_m2d_loads_the_published_layout_sets_the_rest_aside_and_matches_timm(tmp_path) -> None:
    spec = m2d.SIZES["tiny"]
    rest = {
        "target_blocks.0.norm1.weight": (spec.dim,),
        "target_norm.weight": (spec.dim,),
        "decoder_embed.weight": (16, spec.dim),
        "mask_token": (1, 1, 16),
    }
    state = vit_layout(spec.dim, spec.depth, (5, 38), rest)
    state["norm_stats"] = torch.tensor([-7.5, 4.5])
    path = tmp_path / "checkpoint-300.pth"
    torch.save({"model": state}, path)
    model = m2d.M2D(m2d.M2D.Config(size="tiny")).eval()
    report = load_backbone_checkpoint(model, path)
    assert report.loaded == len(state) - len(rest) - 1
    assert model.frontend().mean == -7.5 and model.frontend().std == 4.5

    reference = timm_vit(spec.dim, spec.depth, spec.heads, (80, 608))
    reference.load_state_dict(
        {k: v for k, v in state.items() if k.startswith(m2d.ENCODER_PREFIXES)}
    )
    features = torch.randn(2, 1, 80, 608, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference.forward_features(features)[:, 1:]  # [B, 5 * 38, D], freq-major
        out = model(features)
    stacked = expected.reshape(2, 5, 38, spec.dim).permute(0, 2, 1, 3).reshape(2, 38, 5 * spec.dim)
    assert out.tokens.shape == (2, 38, 5 * spec.dim)
    assert (out.tokens - stacked).abs().max() < 1e-5
    assert torch.allclose(out.embedding, stacked.mean(dim=1), atol=1e-5)


def test_m2d_short_input_crops_the_table_per_frequency_row_long_input_is_chunked() -> None:
    torch.manual_seed(0)
    model = m2d.M2D(m2d.M2D.Config(size="tiny")).eval()
    randomize(model)
    features = torch.randn(1, 1, 80, 608 + 160)
    with torch.no_grad():
        whole = model(features).tokens
        first = model(features[..., :608]).tokens
        second = model(features[..., 608:]).tokens
        padded = model(features[..., :600]).tokens  # padded to 608 frames
    assert whole.shape == (1, 38 + 10, model.embed_dim)
    assert torch.allclose(whole, torch.cat([first, second], dim=1), atol=1e-6)
    # the reference crops the table to the first columns of each of the 5 frequency rows
    table = model.pos_embed[:, 1:].reshape(1, 5, 38, -1)[:, :, :10].reshape(1, 50, -1)
    x = model.patch_embed(features[..., 608:]).flatten(2).transpose(1, 2) + table
    assert torch.isfinite(x).all() and padded.shape == (1, 38, model.embed_dim)


def test_m2d_frontend_matches_nnaudio_melspectrogram() -> None:
    features = pytest.importorskip("nnAudio.features")
    wave = torch.randn(2, 16000, generator=torch.Generator().manual_seed(4)) * 0.1
    reference = features.MelSpectrogram(
        sr=16000,
        n_fft=400,
        win_length=400,
        hop_length=160,
        n_mels=80,
        fmin=50,
        fmax=8000,
        center=True,
        power=2,
        verbose=False,
    )
    expected = ((reference(wave) + torch.finfo().eps).log() - m2d.NORM_MEAN) / m2d.NORM_STD
    out = m2d.M2DMel()(wave)
    assert out.shape == (2, 1, 80, 101)
    assert (out[:, 0] - expected).abs().max() < 1e-3


# -- MAE-AST ---------------------------------------------------------------------------


def mae_ast_layout(spec: mae_ast.MaeAstSize, decoder_layers: int = 1) -> dict[str, torch.Tensor]:
    """The published fairseq state dict (``MAE_AST`` with ``enc_sine_pos``/``dec_sine_pos``)."""
    gen = torch.Generator().manual_seed(5)
    d, f = spec.encoder_embed_dim, spec.encoder_ffn_embed_dim
    shapes: dict[str, tuple] = {
        "post_extract_proj.weight": (d, 256),
        "post_extract_proj.bias": (d,),
        "layer_norm.weight": (128,),
        "layer_norm.bias": (128,),
        "encoder_mask_emb": (d,),
        "decoder_mask_emb": (d,),
        "enc_sine_pos_embed.pe": (1, 64, d),
        "dec_sine_pos_embed.pe": (1, 64, d),
        "encoder.layer_norm.weight": (d,),
        "encoder.layer_norm.bias": (d,),
        "decoder.layer_norm.weight": (d,),
        "decoder.layer_norm.bias": (d,),
        "final_proj_reconstruction.weight": (256, d),
        "final_proj_reconstruction.bias": (256,),
        "final_proj_classification.weight": (256, d),
        "final_proj_classification.bias": (256,),
    }

    def layer(prefix: str) -> dict[str, tuple]:
        out = {}
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            out[f"{prefix}self_attn.{name}.weight"] = (d, d)
            out[f"{prefix}self_attn.{name}.bias"] = (d,)
        for norm in ("self_attn_layer_norm", "final_layer_norm"):
            out[f"{prefix}{norm}.weight"] = (d,)
            out[f"{prefix}{norm}.bias"] = (d,)
        return out | {
            f"{prefix}fc1.weight": (f, d),
            f"{prefix}fc1.bias": (f,),
            f"{prefix}fc2.weight": (d, f),
            f"{prefix}fc2.bias": (d,),
        }

    for i in range(spec.encoder_layers):
        shapes |= layer(f"encoder.layers.{i}.")
    for i in range(decoder_layers):
        shapes |= layer(f"decoder.layers.{i}.")
    state = {k: torch.randn(s, generator=gen) * 0.1 for k, s in shapes.items()}
    state["batch_norm.running_mean"] = torch.tensor([-6.0])
    state["batch_norm.running_var"] = torch.tensor([9.0])
    state["batch_norm.num_batches_tracked"] = torch.tensor(100)
    return state


def reference_mae_ast(state: dict, spec: mae_ast.MaeAstSize, fbank: torch.Tensor) -> torch.Tensor:
    """The published forward pass (mask=False, features_only=True), written out by hand."""
    x = (fbank - state["batch_norm.running_mean"]) / torch.sqrt(
        state["batch_norm.running_var"] + 1e-5
    )
    x = (x * 0.5).unsqueeze(1)
    x = F.unfold(x, kernel_size=(16, 16), stride=(16, 16)).transpose(-1, -2)
    x = F.linear(x, state["post_extract_proj.weight"], state["post_extract_proj.bias"])
    n, d, h = x.shape[1], spec.encoder_embed_dim, spec.encoder_attention_heads
    position = torch.arange(n).unsqueeze(1)
    div = torch.exp(torch.arange(0, d, 2) * (-math.log(10000.0) / d))
    pe = torch.zeros(n, d)
    pe[:, 0::2] = torch.sin(position * div)
    pe[:, 1::2] = torch.cos(position * div)
    x = F.layer_norm(
        x + pe, (d,), state["encoder.layer_norm.weight"], state["encoder.layer_norm.bias"]
    )
    for i in range(spec.encoder_layers):
        p = f"encoder.layers.{i}."

        def lin(name, y, p=p):
            return F.linear(y, state[p + name + ".weight"], state[p + name + ".bias"])

        q = lin("self_attn.q_proj", x) * (d // h) ** -0.5
        k, v = lin("self_attn.k_proj", x), lin("self_attn.v_proj", x)
        q, k, v = (t.view(t.shape[0], n, h, d // h).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-1, -2)).softmax(-1) @ v
        x = x + lin("self_attn.out_proj", att.transpose(1, 2).reshape(-1, n, d))
        x = F.layer_norm(
            x,
            (d,),
            state[p + "self_attn_layer_norm.weight"],
            state[p + "self_attn_layer_norm.bias"],
        )
        x = x + lin("fc2", F.gelu(lin("fc1", x)))
        x = F.layer_norm(
            x, (d,), state[p + "final_layer_norm.weight"], state[p + "final_layer_norm.bias"]
        )
    return x


def test_mae_ast_loads_the_published_fairseq_layout_and_matches_the_equations(tmp_path) -> None:
    spec = mae_ast.SIZES["tiny"]
    state = mae_ast_layout(spec)
    cfg = {"model": {**vars(spec), "ast_kernel_size_chan": 16, "ast_kernel_size_time": 16}}
    path = tmp_path / "mae_ast_patch.pt"
    torch.save({"cfg": cfg, "model": state, "args": None}, path)
    model = mae_ast.MaeAst(mae_ast.MaeAst.Config(size="tiny")).eval()
    report = load_backbone_checkpoint(model, path)
    assert report.loaded == len(model.state_dict())
    fbank = torch.randn(2, 64, 128, generator=torch.Generator().manual_seed(6)) * 3 - 6
    with torch.no_grad():
        out = model(fbank.unsqueeze(1))
    expected = reference_mae_ast(state, spec, fbank)
    assert out.tokens.shape == (2, 32, spec.encoder_embed_dim)
    assert (out.tokens - expected).abs().max() < 1e-4
    assert torch.allclose(out.embedding, expected.mean(dim=1), atol=1e-4)


def test_mae_ast_published_export_round_trips(tmp_path) -> None:
    torch.manual_seed(0)
    source = mae_ast.MaeAst(mae_ast.MaeAst.Config(size="tiny"))
    randomize(source)
    exported = source.published_checkpoint()
    assert "encoder.layers.1.self_attn.q_proj.weight" in exported["model"]
    assert "encoder.layer_norm.weight" in exported["model"]
    path = tmp_path / "export.pt"
    torch.save(exported, path)
    target = mae_ast.MaeAst(mae_ast.MaeAst.Config(size="tiny"))
    load_backbone_checkpoint(target, path)
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key


def test_mae_ast_cfg_of_another_size_names_it() -> None:
    model = mae_ast.MaeAst(mae_ast.MaeAst.Config(size="tiny"))
    with pytest.raises(UsageError, match="backbone.size=base"):
        model.check_checkpoint({"cfg": {"model": vars(mae_ast.SIZES["base"])}})


def test_mae_ast_padding_mask_ignores_padded_patches() -> None:
    torch.manual_seed(0)
    model = mae_ast.MaeAst(mae_ast.MaeAst.Config(size="tiny")).eval()
    randomize(model)
    short = torch.randn(1, 1, 32, 128)
    padded = torch.cat([short, torch.zeros(1, 1, 32, 128)], dim=2)
    mask = torch.zeros(1, 32, dtype=torch.bool)
    mask[:, 16:] = True
    with torch.no_grad():
        alone = model(short)
        masked = model(padded, padding_mask=mask)
    assert torch.allclose(masked.tokens[:, :16], alone.tokens, atol=1e-5)
    assert torch.allclose(masked.embedding, alone.embedding, atol=1e-5)


def test_mae_ast_frontend_is_torchaudio_kaldi_fbank_defaults() -> None:
    import torchaudio.compliance.kaldi as kaldi

    wave = torch.randn(2, 16000, generator=torch.Generator().manual_seed(7)) * 0.1
    out = mae_ast.MaeAstFbank()(wave)
    for clip in range(2):
        expected = kaldi.fbank(
            wave[clip : clip + 1], sample_frequency=16000, use_energy=False, num_mel_bins=128
        )
        assert (out[clip, 0] - expected).abs().max() < 1e-3


def test_sinusoid_table_hand_computed() -> None:
    table = sincos_pos_embed_1d(3, 4)
    expected = [[math.sin(p), math.cos(p), math.sin(p / 100), math.cos(p / 100)] for p in range(3)]
    assert torch.allclose(table, torch.tensor(expected), atol=1e-6)


def test_bad_inputs_are_one_line_errors() -> None:
    with pytest.raises(UsageError, match="m2d expects"):
        m2d.M2D(m2d.M2D.Config())(torch.zeros(1, 1, 128, 100))
    with pytest.raises(UsageError, match="maskspec expects"):
        maskspec.MaskSpec(maskspec.MaskSpec.Config())(torch.zeros(1, 1, 80, 100))
    with pytest.raises(DataError, match="at least 16 frames"):
        mae_ast.MaeAst(mae_ast.MaeAst.Config())(torch.zeros(1, 1, 8, 128))


@pytest.mark.parametrize(
    ("module", "cls", "params"),
    [(mae_ast, "MaeAst", 85.25e6), (maskspec, "MaskSpec", 85.64e6), (m2d, "M2D", 85.40e6)],
)
def test_base_sizes_are_the_published_vit_b(module, cls, params) -> None:
    from harness.nn.layers import count_parameters

    backbone = getattr(module, cls)
    assert count_parameters(backbone, backbone.Config(size="base")) == pytest.approx(
        params, rel=2e-3
    )


def test_new_backbones_are_listed() -> None:
    from harness.registry.plugins import load_plugins

    names = load_plugins()["backbone"].names()
    assert {"mae-ast", "maskspec", "m2d", "logmel-stats"} <= set(names)


def test_logmel_stats_hand_computed_and_frontend_is_kaldi() -> None:
    import torchaudio.compliance.kaldi as kaldi

    from harness_plugins.backbones.logmel_stats import LogMelStats

    model = LogMelStats(LogMelStats.Config(n_mels=2))
    # two bands over three frames: band 0 = 1, 2, 6 (mean 3, var (4 + 1 + 9) / 3), band 1 = 4, 4, 4
    features = torch.tensor([[[[1.0, 4.0], [2.0, 4.0], [6.0, 4.0]]]])
    out = model(features).embedding
    assert torch.allclose(out, torch.tensor([[3.0, 4.0, math.sqrt(14 / 3), 0.0]]), atol=1e-6)
    assert not list(model.parameters()) and model.embed_dim == 4
    wave = torch.randn(1, 16000, generator=torch.Generator().manual_seed(8)) * 0.1
    expected = kaldi.fbank(
        wave, sample_frequency=16000, num_mel_bins=64, window_type="hanning", use_energy=False
    )
    front = LogMelStats(LogMelStats.Config()).frontend()(wave)
    assert (front[0, 0] - expected).abs().max() < 1e-3


def test_stage_without_trainable_parameters_is_skipped_not_a_crash(tmp_path) -> None:
    """A parameter-free backbone whose method's heads are frozen: the stage is skipped."""
    from types import SimpleNamespace

    from harness.api import RunSettings, Stage
    from harness.api.testing import TinyBackbone
    from harness.run.components import RunLog
    from harness.run.training import MethodTraining

    backbone = TinyBackbone().requires_grad_(False)
    method = torch.nn.Linear(2, 2).requires_grad_(False)
    log = RunLog(is_main=False)
    parts = SimpleNamespace(
        backbone=backbone, method=method, log=log, cfg=SimpleNamespace(run=RunSettings())
    )
    training = MethodTraining(parts, engine=None, checkpoints=None, validate=dict)
    training.train_stage(Stage("head", 1, 1e-3, 4), torch.Generator())
    assert any("no trainable parameters" in line for line in log.lines)


def test_core_fbank_is_bit_identical_to_torchaudio_per_clip() -> None:
    import torchaudio.compliance.kaldi as kaldi

    from harness.nn.fbank import KaldiFbank

    wave = torch.randn(1, 24000, generator=torch.Generator().manual_seed(9)) * 0.1
    for window in ("hanning", "povey"):
        expected = kaldi.fbank(
            wave, sample_frequency=16000, num_mel_bins=128, window_type=window, use_energy=False
        )
        assert torch.equal(KaldiFbank(window=window)(wave)[0], expected)
