"""The `mae` method: masking, decoder order, the masked-patch loss, and pretraining end to end."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from harness.api import Backbone, Batch, Encoded, Task
from harness.nn.layers import audiomae_sincos
from harness.registry.checkpoints import load_backbone_checkpoint
from harness.util.errors import UsageError
from harness_plugins.backbones.audiomae import AudioMAE, random_masking
from harness_plugins.methods._masked_autoencoder import masked_patch_loss
from harness_plugins.methods.mae import MaskedAutoencoder
from tests.conftest import TOY_PLUGIN, run_cli

TASK = Task(classes=[], devices=[], sample_rate=16000, time_axis=-2)


def tiny_pair(**method_kw) -> tuple[AudioMAE, MaskedAutoencoder]:
    backbone = AudioMAE(AudioMAE.Config(size="tiny"))
    method = MaskedAutoencoder(MaskedAutoencoder.Config(**method_kw))
    method.setup(backbone, TASK)
    return backbone, method


def tone_features(backbone: AudioMAE, batch: int = 6) -> Tensor:
    """Fbank of 0.5 s decaying tones at different pitches: structure a decoder can learn."""
    t = torch.arange(8000) / 16000
    pitches = torch.linspace(200, 3000, batch)[:, None]
    wave = torch.sin(2 * math.pi * pitches * t) * torch.exp(-4 * t) * 0.5
    return backbone.frontend()(wave)


def test_random_masking_keeps_the_ratio_and_restores_the_order():
    torch.manual_seed(0)
    x = torch.randn(3, 64, 5)
    kept, mask, ids_restore = random_masking(x, 0.8)
    assert kept.shape == (3, 12, 5)  # int(64 * 0.2)
    assert mask.sum(dim=1).tolist() == [52.0, 52.0, 52.0]
    for row in range(3):
        visible = x[row, mask[row] == 0]
        assert torch.equal(kept[row][kept[row, :, 0].argsort()], visible[visible[:, 0].argsort()])
    hidden = torch.zeros(3, 52, 5)
    # Put the hidden patches back from the original to check ids_restore is the inverse shuffle.
    full = torch.cat([kept, hidden], dim=1).gather(1, ids_restore[..., None].expand(-1, -1, 5))
    assert torch.equal(full[mask == 0], x[mask == 0])
    assert torch.equal(full[mask == 1], torch.zeros(3 * 52, 5))


def test_random_masking_rejects_ratios_that_keep_nothing():
    assert random_masking(torch.randn(1, 4, 2), 0.25)[0].shape == (1, 3, 2)
    with pytest.raises(UsageError, match="keeps no patch"):
        random_masking(torch.randn(1, 4, 2), 0.8)  # int(4 * 0.2) = 0


def test_forward_masked_encodes_only_the_visible_patches():
    backbone, _ = tiny_pair()
    features = torch.randn(2, 1, 128, 128)  # 8 x 8 patches
    out = backbone.forward_masked(features, 0.75)
    assert out.latent.shape == (2, 1 + 16, backbone.embed_dim)
    assert out.grid == (8, 8)
    assert out.mask.sum(dim=1).tolist() == [48.0, 48.0]
    patches = backbone.patchify(features)
    assert patches.shape == (2, 64, 256)
    # Patch k = time row k // 8, frequency column k % 8, values time-major inside the patch.
    assert torch.equal(patches[1, 8 * 3 + 5], features[1, 0, 48:64, 80:96].reshape(-1))


def test_decoder_puts_mask_tokens_at_hidden_positions():
    backbone, method = tiny_pair()
    method.decoder_blocks = nn.ModuleList()
    method.decoder_norm = nn.Identity()
    method.decoder_pred = nn.Identity()
    torch.manual_seed(1)
    out = backbone.forward_masked(torch.randn(2, 1, 64, 128), 0.8)
    with torch.no_grad():
        x = method.decode(out.latent, out.ids_restore, out.grid)
        x = x - audiomae_sincos(method.mask_token.shape[-1], out.grid, backbone.pos_layout)[1:]
        embedded = method.decoder_embed(out.latent)
    for row in range(2):
        for patch in range(out.mask.shape[1]):
            if out.mask[row, patch]:
                expected = method.mask_token[0, 0]
            else:
                expected = embedded[row, 1 + out.ids_restore[row, patch]]
            assert torch.allclose(x[row, patch], expected, atol=1e-6)


def test_masked_patch_loss_hand_computed():
    pred = torch.tensor([[[1.0, 2.0], [0.0, 0.0], [3.0, 3.0]]])
    target = torch.tensor([[[0.0, 0.0], [5.0, 5.0], [1.0, 2.0]]])
    mask = torch.tensor([[1.0, 0.0, 1.0]])  # patch 1 visible: its error of 25 must not count
    # Patch 0: (1 + 4) / 2 = 2.5; patch 2: (4 + 1) / 2 = 2.5.
    assert masked_patch_loss(pred, target, mask, norm_pix_loss=False).item() == pytest.approx(2.5)
    # norm_pix_loss: patch [1, 2] -> mean 1.5, unbiased var 0.5 -> [-0.7071, 0.7071] (eps 1e-6).
    scale = math.sqrt(0.5 + 1e-6)
    normed_2 = [(1 - 1.5) / scale, (2 - 1.5) / scale]
    patch_2 = ((3 - normed_2[0]) ** 2 + (3 - normed_2[1]) ** 2) / 2
    patch_0 = (1 + 4) / 2  # target [0, 0]: mean 0, var 0 -> stays 0
    expected = (patch_0 + patch_2) / 2
    assert masked_patch_loss(pred, target, mask, True).item() == pytest.approx(expected, rel=1e-5)


def test_loss_gradient_reaches_only_hidden_patch_predictions():
    torch.manual_seed(2)
    pred = torch.randn(2, 10, 4, requires_grad=True)
    mask = (torch.rand(2, 10) > 0.5).float()
    masked_patch_loss(pred, torch.randn(2, 10, 4), mask, True).backward()
    assert torch.all(pred.grad[mask == 0] == 0)
    assert torch.all(pred.grad[mask == 1].abs().sum(-1) > 0)


def test_training_lowers_the_masked_patch_loss():
    torch.manual_seed(0)
    backbone, method = tiny_pair()
    features = tone_features(backbone)
    size = features.shape[0]
    batch = Batch(
        wave=torch.zeros(size, 1),
        label=torch.zeros(size, dtype=torch.long),
        device=torch.zeros(size, dtype=torch.long),
        index=torch.arange(size),
        features=features,
    )

    def loss_on_fixed_masks() -> float:
        torch.manual_seed(123)
        with torch.no_grad():
            return method.training_step(batch, backbone).loss.item()

    before = loss_on_fixed_masks()
    optimizer = torch.optim.Adam([*backbone.parameters(), *method.parameters()], lr=2e-3)
    for _ in range(20):
        loss = method.training_step(batch, backbone).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss_on_fixed_masks() < 0.7 * before


def test_decoder_size_follows_the_backbone_and_keeps_audiomae_key_names():
    backbone, method = tiny_pair()
    assert method.decoder_embed.out_features == backbone.mae_decoder[0]
    assert len(method.decoder_blocks) == backbone.mae_decoder[1]
    keys = set(method.state_dict())
    assert {
        "mask_token",
        "decoder_embed.weight",
        "decoder_norm.weight",
        "decoder_pred.weight",
    } <= keys
    assert method.decoder_pred.out_features == 16 * 16
    _, custom = tiny_pair(decoder_dim=32, decoder_depth=1, decoder_heads=4)
    assert custom.decoder_embed.out_features == 32 and len(custom.decoder_blocks) == 1


class PlainBackbone(Backbone):
    """A backbone without the masked-encoder contract."""

    name = "plain"
    description = "no forward_masked"
    sample_rate = 16000

    @dataclass
    class Config:
        dim: int = 8

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.embed_dim = config.dim
        self.blocks = nn.ModuleList([nn.Linear(8, 8)])

    def forward(self, features: Tensor) -> Encoded:
        x = self.blocks[0](features.mean(dim=(1, 2)))
        return Encoded(x, x[:, None])


CONTRACT_MESSAGE = (
    r"implements harness\.api\.MaskedBackbone \(forward_masked, patchify, patch_size, "
    r"mae_decoder, pos_layout\); backbone '{}' does not"
)


def test_backbone_without_the_contract_is_a_usage_error():
    method = MaskedAutoencoder(MaskedAutoencoder.Config())
    with pytest.raises(UsageError, match=CONTRACT_MESSAGE.format("plain")):
        method.setup(PlainBackbone(PlainBackbone.Config()), TASK)


class HalfMaskedBackbone(PlainBackbone):
    """Declares the masked-encoder fields but neither ``forward_masked`` nor ``patchify``."""

    name = "half"
    patch_size = 16
    mae_decoder = (32, 1, 4)
    pos_layout = "time-major"


def test_backbone_with_part_of_the_contract_is_refused():
    method = MaskedAutoencoder(MaskedAutoencoder.Config())
    with pytest.raises(UsageError, match=CONTRACT_MESSAGE.format("half")):
        method.setup(HalfMaskedBackbone(HalfMaskedBackbone.Config()), TASK)
    assert not method.state_dict(), "a refused setup builds no decoder"


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="mask_ratio"):
        MaskedAutoencoder.Config(mask_ratio=1.0)
    backbone = AudioMAE(AudioMAE.Config(size="tiny"))
    method = MaskedAutoencoder(MaskedAutoencoder.Config(decoder_dim=30, decoder_heads=4))
    with pytest.raises(UsageError, match="decoder_dim 30"):
        method.setup(backbone, TASK)


# -- end to end ---------------------------------------------------------------


def pretrain_args(tmp_path: Path, *extra: str) -> list[str]:
    data = tmp_path / "tones"
    data.mkdir(exist_ok=True)
    return [
        "--plugin",
        str(TOY_PLUGIN),
        "run",
        "--backbone",
        "audiomae",
        "--dataset",
        "toy-tones",
        "--aug",
        "none",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--set",
        f"dataset.root={data}",
        "--set",
        "backbone.size=tiny",
        "--out",
        str(tmp_path / "runs"),
        *extra,
    ]


@pytest.mark.slow
def test_cli_pretrains_an_encoder_that_a_later_run_loads(tmp_path):
    pretrain = run_cli(*pretrain_args(tmp_path, "--method", "mae", "--protocol", "none"))
    assert pretrain.returncode == 0, pretrain.stderr
    (run_dir,) = (tmp_path / "runs").glob("*/backbone.pt")
    method_state = torch.load(run_dir.parent / "method.pt", weights_only=True)
    assert "decoder_pred.weight" in method_state

    encoder = AudioMAE(AudioMAE.Config(size="tiny"))
    load_backbone_checkpoint(encoder, run_dir)  # strict: every key fits
    saved = torch.load(run_dir, weights_only=True)
    assert all(torch.equal(encoder.state_dict()[k], v) for k, v in saved.items())

    tuned = run_cli(
        *pretrain_args(tmp_path, "--method", "mae", "--protocol", "none"),
        "--set",
        f"backbone.checkpoint={run_dir}",
        "--set",
        "run.seed=1",
    )
    assert tuned.returncode == 0, tuned.stderr
    logs = [log.read_text() for log in (tmp_path / "runs").glob("*/log.txt")]
    assert sum(f"backbone tensors from {run_dir}" in log for log in logs) == 1
    missing = run_cli(
        *pretrain_args(tmp_path, "--method", "mae", "--protocol", "none"),
        "--set",
        f"backbone.checkpoint={tmp_path / 'nope.pt'}",
    )
    assert missing.returncode == 2
    assert "nope.pt" in missing.stderr


def test_cli_mae_with_a_classifier_protocol_is_refused(tmp_path):
    result = run_cli(*pretrain_args(tmp_path, "--method", "mae", "--protocol", "device-logloss"))
    assert result.returncode == 2
    assert "needs a classifier" in result.stderr


@pytest.mark.parametrize("preset", ["small", "paper"])
def test_the_mae_presets_pick_a_decoder_and_leave_the_run_s_epochs_alone(preset: str) -> None:
    from harness.api import RunSettings

    backbone, method = tiny_pair(preset=preset)
    # No stages of its own: the core trains one phase of run.epochs (an explicit --epochs N).
    assert method.stages(backbone, RunSettings(epochs=3)) == []


def test_paper_preset_builds_the_official_local_attention_decoder():
    from harness.api import Task

    backbone = AudioMAE(AudioMAE.Config(size="base"))
    method = MaskedAutoencoder(MaskedAutoencoder.Config(preset="paper"))
    method.setup(backbone, Task(["a"], [], 16000, -2))
    assert method.decoder_mode == 1 and len(method.decoder_blocks) == 16
    block = {
        k.split(".", 2)[2]: tuple(v.shape)
        for k, v in method.state_dict().items()
        if k.startswith("decoder_blocks.1.")
    }
    assert block == {  # the official decoder_mode=1 layout at base (512 dims, 16 heads)
        "attn.tau": (16,),
        "attn.qkv.weight": (1536, 512),
        "attn.qkv.bias": (1536,),
        "attn.proj.weight": (512, 512),
        "attn.proj.bias": (512,),
        "attn.meta_mlp.fc1.weight": (384, 2),
        "attn.meta_mlp.fc1.bias": (384,),
        "attn.meta_mlp.fc2.weight": (16, 384),
        "attn.meta_mlp.fc2.bias": (16,),
        "norm1.weight": (512,),
        "norm1.bias": (512,),
        "mlp.fc1.weight": (2048, 512),
        "mlp.fc1.bias": (2048,),
        "mlp.fc2.weight": (512, 2048),
        "mlp.fc2.bias": (512,),
        "norm2.weight": (512,),
        "norm2.bias": (512,),
    }
    shifts = [tuple(b.shift_size) for b in method.decoder_blocks]
    assert shifts[:2] == [(0, 0), (2, 0)] and all(
        b.window_size == (4, 4) for b in method.decoder_blocks
    )
    light = MaskedAutoencoder(MaskedAutoencoder.Config())
    light.setup(backbone, Task(["a"], [], 16000, -2))
    assert light.decoder_mode == 0 and len(light.decoder_blocks) == 8


def test_local_decoder_attends_within_windows_and_reconstructs_every_patch():
    from harness.api import Task

    backbone = AudioMAE(AudioMAE.Config(size="tiny"))
    method = MaskedAutoencoder(MaskedAutoencoder.Config(decoder_mode=1, decoder_depth=1))
    method.setup(backbone, Task(["a"], [], 16000, -2))
    block = method.decoder_blocks[0].eval()  # unshifted
    x = torch.randn(1, 8, 8, 64)
    y = x.clone()
    y[0, 0, 0] += 1.0  # a patch in the first (4, 4) window
    with torch.no_grad():
        a, b = block(x), block(y)
    changed = (a - b).abs().amax(dim=-1)[0] > 1e-6
    assert changed[:4, :4].any() and not changed[4:].any() and not changed[:, 4:].any()
    with torch.no_grad():
        pred, target, _mask = method.reconstruct(torch.randn(2, 1, 128, 128), backbone)
    assert pred.shape == target.shape == (2, 64, 256)


def test_local_decoder_block_equals_the_official_equations():
    """One shifted block against its equations written out: roll by (-2, 0), (4, 4) windows,
    cosine attention / tau + meta-MLP bias, the -100 border mask, roll back, post-norms."""
    from harness.nn.swin import SwinDecoderBlock

    torch.manual_seed(0)
    block = SwinDecoderBlock(32, 4, (4, 4), (2, 0)).eval()
    with torch.no_grad():
        for p in block.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    x = torch.randn(2, 8, 8, 32)
    with torch.no_grad():
        out = block(x)
        attn = block.attn
        y = torch.roll(x, shifts=(-2, 0), dims=(1, 2))
        labels = torch.zeros(8, 8)
        labels[4:6], labels[6:] = 1, 2  # rows [0, -4), [-4, -2), [-2, end); columns one group
        result = torch.zeros_like(x)
        for b in range(2):
            for r0 in (0, 4):
                for c0 in (0, 4):
                    tokens = y[b, r0 : r0 + 4, c0 : c0 + 4].reshape(16, 32)
                    lab = labels[r0 : r0 + 4, c0 : c0 + 4].reshape(16)
                    q, k, v = attn.qkv(tokens).view(16, 3, 4, 8).permute(1, 2, 0, 3)
                    cos = (q / q.norm(dim=-1, keepdim=True)) @ (k / k.norm(dim=-1, keepdim=True)).mT
                    logits = cos / attn.tau.clamp(min=0.01)[:, None, None]
                    logits = logits + attn.position_bias((4, 4))[0]
                    logits = logits + (lab[None, :] != lab[:, None]).float() * -100.0
                    o = (logits.softmax(-1) @ v).transpose(0, 1).reshape(16, 32)
                    result[b, r0 : r0 + 4, c0 : c0 + 4] = attn.proj(o).view(4, 4, 32)
        result = torch.roll(result, shifts=(2, 0), dims=(1, 2))
        h = x + block.norm1(result)
        expected = h + block.norm2(block.mlp(h))
    assert (out - expected).abs().max() < 1e-5
