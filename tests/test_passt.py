"""PaSST: equivalence with hear21passt, the mel front-end, patchout, positions, checkpoints."""

from __future__ import annotations

import math

import pytest
import torch
import torchaudio.compliance.kaldi as kaldi
from torch import nn

from harness.nn.mel import PasstMel
from harness.registry.checkpoints import load_backbone_checkpoint
from harness.registry.config import build_dataclass
from harness.registry.plugins import load_plugins
from harness.util.errors import DataError, UsageError
from harness_plugins.backbones.passt import SIZES, PaSST, PasstHead

reference = pytest.importorskip("hear21passt.models.passt")
reference_mel = pytest.importorskip("hear21passt.models.preprocess")
reference.first_RUN = False  # silence the reference's shape printing


def reference_model(size: str, classes: int = 527, frames: int = 998, **patchout) -> nn.Module:
    """hear21passt's PaSST with the published passt_s_swa_p16_128_ap476 layout, at ``size``."""
    arch = SIZES[size]
    return reference.PaSST(
        img_size=(128, frames),
        patch_size=16,
        stride=10,
        in_chans=1,
        num_classes=classes,
        embed_dim=arch.embed_dim,
        depth=arch.depth,
        num_heads=arch.num_heads,
        distilled=True,
        **patchout,
    )


def randomize_norms(model: nn.Module) -> None:
    """Non-trivial LayerNorm weights and biases, so a swapped norm cannot go unnoticed."""
    with torch.no_grad():
        for param in model.parameters():
            if param.ndim == 1:
                param.add_(torch.randn_like(param) * 0.1)


def published_pair(size: str, tmp_path, classes: int = 527, frames: int = 998, **patchout):
    """The reference with random weights, and ours loaded from its saved state dict."""
    torch.manual_seed(0)
    ref = reference_model(size, classes, frames, **patchout)
    randomize_norms(ref)
    path = tmp_path / "passt-published.pt"
    torch.save(ref.state_dict(), path)
    ours = PaSST(PaSST.Config(size=size, input_tdim=frames, **patchout))
    report = load_backbone_checkpoint(ours, path, num_classes=classes)
    assert report.head == "kept"
    return ref, ours, ours.build_head(classes)


def mel_input(batch: int, frames: int, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 1, 128, frames, generator=gen)


# -- equivalence with hear21passt ------------------------------------------------


def test_base_matches_hear21passt_in_eval(tmp_path) -> None:
    ref, ours, head = published_pair("base", tmp_path)
    ref.eval(), ours.eval(), head.eval()
    x = mel_input(2, 300)  # 3 s: the time table is cropped from its start
    with torch.no_grad():
        ref_logits, ref_embedding = ref(x)
        encoded = ours(x)
        logits = head(encoded)
    assert encoded.embedding.shape == (2, 768)
    assert encoded.tokens.shape == (2, 2 + 12 * 29, 768)
    assert (encoded.embedding - ref_embedding).abs().max().item() < 1e-4
    assert (logits - ref_logits).abs().max().item() < 1e-4


def test_tiny_matches_hear21passt_in_training_draw_for_draw_and_in_eval(tmp_path) -> None:
    patchout = {"s_patchout_t": 20, "s_patchout_f": 4, "u_patchout": 50}
    ref, ours, head = published_pair("tiny", tmp_path, classes=10, **patchout)
    ref.train(), ours.train()
    x = mel_input(3, 998)
    torch.manual_seed(7)
    ref_logits, ref_embedding = ref(x)
    torch.manual_seed(7)
    encoded = ours(x)
    assert encoded.tokens.shape == (3, 2 + (12 - 4) * (99 - 20) - 50, 96)
    assert (encoded.embedding - ref_embedding).abs().max().item() < 1e-5
    assert (head(encoded) - ref_logits).abs().max().item() < 1e-5
    ref.eval(), ours.eval()
    with torch.no_grad():
        ref_logits, ref_embedding = ref(x)
        encoded = ours(x)
    assert encoded.tokens.shape == (3, 2 + 12 * 99, 96)
    assert (encoded.embedding - ref_embedding).abs().max().item() < 1e-5
    assert (head(encoded) - ref_logits).abs().max().item() < 1e-5


def test_published_key_layout() -> None:
    ref = reference_model("tiny", frames=1000)
    ours = PaSST(PaSST.Config(size="tiny"))
    keys = set(ours.state_dict()) | set(PasstHead(96, 527).state_dict())
    assert keys == set(ref.state_dict())
    for key, value in ref.state_dict().items():
        if key in ours.state_dict():
            assert ours.state_dict()[key].shape == value.shape, key


# -- front-end ---------------------------------------------------------------------


def waveform(batch: int, samples: int, seed: int = 2) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, samples, generator=gen) * 0.1


def test_mel_matches_hear21passt_in_eval() -> None:
    ref = reference_mel.AugmentMelSTFT(freqm=0, timem=0, fmin_aug_range=1, fmax_aug_range=1000)
    ours = PasstMel(fmin_aug_range=1, fmax_aug_range=1000)
    wave = waveform(3, 32000 + 4567)
    with torch.no_grad():
        expected = ref.eval()(wave)
        got = ours.eval()(wave)
    assert got.shape == (3, 1, 128, 1 + (wave.shape[1] - 1) // 320)
    assert (got[:, 0] - expected).abs().max().item() < 1e-4


def test_mel_frequency_jitter_matches_hear21passt_in_training() -> None:
    ref = reference_mel.AugmentMelSTFT(freqm=0, timem=0, fmin_aug_range=10, fmax_aug_range=2000)
    ours = PasstMel(fmin_aug_range=10, fmax_aug_range=2000)
    wave = waveform(2, 32000)
    with torch.no_grad():
        torch.manual_seed(3)
        expected = ref.train()(wave)
        torch.manual_seed(3)
        got = ours.train()(wave)
        fixed = ours.eval()(wave)
    assert (got[:, 0] - expected).abs().max().item() < 1e-4
    assert (got - fixed).abs().max().item() > 1e-3


@pytest.mark.parametrize(
    ("fmin", "fmax"), [(0.0, 15500.0), (7.0, 15123.0), (0.0, 16000.0), (50, 8000)]
)
def test_mel_banks_are_kaldis(fmin: float, fmax: float) -> None:
    banks, _ = kaldi.get_mel_banks(128, 1024, 32000.0, fmin, fmax, 100.0, -500.0, 1.0)
    expected = nn.functional.pad(banks, (0, 1))
    got = PasstMel().mel_basis(fmin, fmax)
    assert got.shape == (128, 513)
    assert (got - expected).abs().max().item() < 1e-4  # weights in [0, 1]; float32 rounding


def test_mel_follows_train_and_eval() -> None:
    mel = PaSST(PaSST.Config(fmax_aug_range=1000)).frontend()
    wave = waveform(2, 16000)
    with torch.no_grad():
        mel.eval()
        assert torch.equal(mel(wave), mel(wave))
        mel.train()
        draws = [mel(wave) for _ in range(4)]
    assert any(not torch.equal(draws[0], other) for other in draws[1:])


def test_mel_of_silence_is_the_normalised_floor() -> None:
    with torch.no_grad():
        out = PasstMel().eval()(torch.zeros(1, 32000))
    assert out.shape == (1, 1, 128, 100)
    expected = (math.log(1e-5) + 4.5) / 5  # -1.40259
    assert torch.allclose(out, torch.full_like(out, expected), atol=1e-6)


def test_mel_edges_default_to_the_published_values() -> None:
    mel = PasstMel(fmax_aug_range=1000)
    assert (mel.fmin, mel.fmax) == (0.0, 15500)
    jitter = PasstMel(fmin_aug_range=10, fmax_aug_range=2000)
    assert jitter.fmax == 15000


# -- patchout and positions ----------------------------------------------------------


def test_patchout_only_in_training() -> None:
    config = PaSST.Config(s_patchout_f=6, s_patchout_t=2, u_patchout=5)
    model = PaSST(config)
    x = mel_input(2, 100)  # 1 s: 9 time patches
    with torch.no_grad():
        model.train()
        trained = model(x).tokens
        model.eval()
        evaluated = model(x).tokens
    assert trained.shape == (2, 2 + (12 - 6) * (9 - 2) - 5, 96)
    assert evaluated.shape == (2, 2 + 12 * 9, 96)


def test_time_positions_random_offset_in_training_start_in_eval() -> None:
    model = PaSST(PaSST.Config(size="tiny"))
    with torch.no_grad():
        model.freq_new_pos_embed.zero_()
        model.time_new_pos_embed.copy_(torch.arange(100.0).expand(1, 96, 1, 100))
    grid = torch.zeros(1, 96, 12, 9)
    model.eval()
    assert model.add_positions(grid)[0, 0, 0].tolist() == list(range(9))
    model.train()
    offsets = set()
    for seed in range(20):
        torch.manual_seed(seed)
        expected_offset = torch.randint(1 + 100 - 9, (1,)).item()
        torch.manual_seed(seed)
        row = model.add_positions(grid)[0, 0, 0].tolist()
        assert row == list(range(expected_offset, expected_offset + 9))
        offsets.add(expected_offset)
    assert len(offsets) > 1


def test_longer_input_than_time_table_is_cut_with_a_warning() -> None:
    model = PaSST(PaSST.Config(size="tiny", input_tdim=200)).eval()
    with pytest.warns(UserWarning, match="time table covers 20"), torch.no_grad():
        tokens = model(mel_input(1, 300)).tokens
    assert tokens.shape == (1, 2 + 12 * 20, 96)


def test_wrong_feature_shape_is_a_one_line_error() -> None:
    with pytest.raises(
        UsageError, match=r"expects log-mel features \[B, 1, 128, T\], got \[2, 1, 64, 100\]"
    ):
        PaSST(PaSST.Config())(torch.zeros(2, 1, 64, 100))


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("s_patchout_f", "12", "s_patchout_f must be below 12"),
        ("u_patchout", "-1", "u_patchout must be >= 0"),
        ("fmax_aug_range", "0", "must be >= 1"),
        ("size", "huge", "not one of tiny, small, base"),
    ],
)
def test_bad_config_is_a_usage_error(key: str, value: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        build_dataclass(PaSST.Config, {key: value}, "backbone")


# -- checkpoints ---------------------------------------------------------------------


def outputs(model: PaSST, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x).tokens


@pytest.mark.parametrize("wrap", ["raw", "model", "state_dict-module"])
def test_checkpoint_round_trip(tmp_path, wrap: str) -> None:
    torch.manual_seed(1)
    source = PaSST(PaSST.Config())
    randomize_norms(source)
    state = source.state_dict()
    if wrap == "model":
        state = {"model": state, "epoch": 3}
    elif wrap == "state_dict-module":
        state = {"state_dict": {f"module.{k}": v for k, v in state.items()}}
    path = tmp_path / "tiny.pt"
    torch.save(state, path)
    target = PaSST(PaSST.Config())
    report = load_backbone_checkpoint(target, path, num_classes=10)
    assert report.loaded == len(source.state_dict())
    assert report.head == "none"
    x = mel_input(2, 100)
    assert torch.equal(outputs(target, x), outputs(source, x))


def test_checkpoint_mismatch_names_missing_unexpected_and_shapes(tmp_path) -> None:
    state = PaSST(PaSST.Config()).state_dict()
    del state["norm.weight"]
    state["extra.weight"] = torch.zeros(3)
    state["time_new_pos_embed"] = torch.zeros(1, 96, 1, 50)
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    with pytest.raises(DataError) as err:
        load_backbone_checkpoint(PaSST(PaSST.Config()), path)
    message = str(err.value)
    assert "\n" not in message
    assert str(path) in message and "backbone 'passt'" in message
    assert "missing keys (1): norm.weight" in message
    assert "unexpected keys (1): extra.weight" in message
    assert (
        "shape mismatch (1): time_new_pos_embed checkpoint [1, 96, 1, 50] vs model [1, 96, 1, 100]"
        in message
    )


def test_checkpoint_of_a_deeper_model_summarises_blocks(tmp_path) -> None:
    from harness.nn.layers import vit_block

    deeper = PaSST(PaSST.Config(size="tiny"))  # tiny's width with 12 blocks: no passt size
    deeper.blocks.extend(vit_block(96, 3) for _ in range(9))
    path = tmp_path / "deeper.pt"
    torch.save(deeper.state_dict(), path)
    with pytest.raises(DataError) as err:
        load_backbone_checkpoint(PaSST(PaSST.Config(size="tiny")), path)
    message = str(err.value)
    assert "\n" not in message
    assert "unexpected keys (108): blocks.{3..11}.* (108 tensors)" in message


def test_checkpoint_of_another_size_names_it(tmp_path) -> None:
    path = tmp_path / "small.pt"
    torch.save(PaSST(PaSST.Config(size="small")).state_dict(), path)
    with pytest.raises(DataError, match="384 dims and 12 blocks.*set backbone.size=small"):
        load_backbone_checkpoint(PaSST(PaSST.Config(size="tiny")), path)


def test_checkpoint_head_kept_or_replaced_by_class_count(tmp_path) -> None:
    torch.manual_seed(2)
    ref = reference_model("tiny", classes=527, frames=1000)
    path = tmp_path / "published.pt"
    torch.save(ref.state_dict(), path)

    same = PaSST(PaSST.Config())
    report = load_backbone_checkpoint(same, path, num_classes=527)
    assert report.head == "kept"
    head = same.build_head(527)
    assert torch.equal(head.head[1].weight, ref.head[1].weight)
    assert torch.equal(head.head_dist.weight, ref.head_dist.weight)

    other = PaSST(PaSST.Config())
    report = load_backbone_checkpoint(other, path, num_classes=10)
    assert report.head == "replaced"
    assert any(
        "head replaced" in note and "[527, 96]" in note and "10 classes" in note
        for note in report.notes
    )
    assert other.build_head(10).head[1].weight.shape == (10, 96)


def test_checkpoint_head_with_foreign_keys_is_an_error(tmp_path) -> None:
    state = PaSST(PaSST.Config()).state_dict() | {"head.weight": torch.zeros(10, 96)}
    path = tmp_path / "foreign-head.pt"
    torch.save(state, path)
    with pytest.raises(DataError, match=r"head unexpected keys \(1\): head.weight"):
        load_backbone_checkpoint(PaSST(PaSST.Config()), path, num_classes=10)


def test_checkpoint_file_problems_are_one_line_errors(tmp_path) -> None:
    model = PaSST(PaSST.Config())
    with pytest.raises(DataError, match="checkpoint not found: .*absent.pt"):
        load_backbone_checkpoint(model, tmp_path / "absent.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="cannot read checkpoint .*garbage.pt"):
        load_backbone_checkpoint(model, garbage)
    empty = tmp_path / "empty.pt"
    torch.save({"epoch": 3, "optimizer": {"lr": 0.1}}, empty)
    with pytest.raises(DataError, match="holds no state dict"):
        load_backbone_checkpoint(model, empty)


def test_old_linear_patch_embedding_is_converted(tmp_path) -> None:
    source = PaSST(PaSST.Config())
    state = source.state_dict()
    state["patch_embed.proj.weight"] = state["patch_embed.proj.weight"].reshape(96, 256)
    path = tmp_path / "old.pt"
    torch.save(state, path)
    target = PaSST(PaSST.Config())
    load_backbone_checkpoint(target, path)
    assert torch.equal(target.patch_embed.proj.weight, source.patch_embed.proj.weight)


def test_imagenet_deit_checkpoint_is_adapted_as_the_reference_does() -> None:
    model = PaSST(PaSST.Config())
    state = {k: v for k, v in model.state_dict().items() if "pos_embed" not in k}
    rgb = torch.randn(96, 3, 16, 16)
    grid = torch.randn(1, 96, 14, 14)
    state |= {
        "patch_embed.proj.weight": rgb,
        "pos_embed": torch.cat([torch.randn(1, 2, 96), grid.flatten(2).transpose(1, 2)], dim=1),
        "head.weight": torch.zeros(1000, 96),
        "head_dist.weight": torch.zeros(1000, 96),
    }
    adapted = model.adapt_state_dict(state)
    assert set(adapted) == set(model.state_dict())
    assert torch.allclose(adapted["patch_embed.proj.weight"], rgb.sum(1, keepdim=True))
    resized = torch.nn.functional.interpolate(
        grid, size=(12, 100), mode="bicubic", align_corners=False
    )
    assert torch.allclose(adapted["freq_new_pos_embed"], resized.mean(3, keepdim=True))
    assert torch.allclose(adapted["time_new_pos_embed"], resized.mean(2, keepdim=True))
    assert torch.equal(adapted["new_pos_embed"], state["pos_embed"][:, :2])


# -- registry and description ----------------------------------------------------------


def test_registered_with_sizes_in_the_listing() -> None:
    entry = load_plugins()["backbone"].get("passt")
    assert entry.cls is PaSST
    lines = PaSST.describe_extra()
    assert any(
        "size base: 12 layers x 768 dims, 12 heads, 85.34M parameters" in line for line in lines
    )
    assert any("embedding [B, 96]" in line for line in lines)
    assert lines[0].startswith("input: mono 32 kHz waveform")


def test_base_is_passt_s() -> None:
    with torch.device("meta"):
        model = PaSST(PaSST.Config(size="base"))
    assert model.num_layers == 12 and model.embed_dim == 768
    assert model.blocks[0].attn.num_heads == 12
    assert model.time_new_pos_embed.shape == (1, 768, 1, 99)
    assert model.freq_new_pos_embed.shape == (1, 768, 12, 1)
    assert model.patch_embed.proj.stride == (10, 10) and model.patch_embed.proj.kernel_size == (
        16,
        16,
    )


# -- the 1 s training path against the reference, draws controlled ----------------------


class Draws:
    """Stands in for ``torch.randint`` / ``torch.randperm``: scripted draws, every call logged.

    ``randint`` gives the time offset; ``randperm(n)`` the next scripted permutation of ``n``
    (the patchout draws, shared by both implementations in call order).
    """

    def __init__(self, offset: int, perms: dict[int, list[list[int]]]) -> None:
        self.offset = offset
        self.perms = {n: list(p) for n, p in perms.items()}
        self.calls: list[tuple[str, int]] = []

    def randint(self, high, size=None, **kwargs):
        self.calls.append(("randint", int(high)))
        assert 0 <= self.offset < high
        return torch.tensor([self.offset])

    def randperm(self, n, **kwargs):
        self.calls.append(("randperm", int(n)))
        return torch.tensor(self.perms[n].pop(0))


@pytest.mark.filterwarnings("ignore:Input image size")
@pytest.mark.parametrize("offset", [0, 37, 90])
def test_one_second_training_forward_matches_the_reference_with_draws_controlled(
    tmp_path, monkeypatch, offset: int
) -> None:
    """1 s (100 frames, 12 x 9 patches) in training mode: the time table is cut at a random
    offset (the PaSST training code's ``toffset = randint(1 + 99 - 9)``; hear21passt always cuts
    at 0, so the reference gets its table pre-cut at the same offset), then frequency and
    unstructured patchout with the same permutations, as in the device paper (6 of 12 rows)."""
    patchout = {"s_patchout_t": 2, "s_patchout_f": 6, "u_patchout": 5}
    ref, ours, head = published_pair("tiny", tmp_path, classes=10, **patchout)
    ref.train(), ours.train()
    x = mel_input(2, 100)
    gen = torch.Generator().manual_seed(offset)
    perms = {
        9: [torch.randperm(9, generator=gen).tolist()],
        12: [torch.randperm(12, generator=gen).tolist()],
        (12 - 6) * (9 - 2): [torch.randperm(42, generator=gen).tolist()],
    }
    ours_draws, ref_draws = Draws(offset, perms), Draws(offset, perms)
    with monkeypatch.context() as patch:
        patch.setattr(torch, "randint", ours_draws.randint)
        patch.setattr(torch, "randperm", ours_draws.randperm)
        encoded = ours(x)
    with torch.no_grad():
        ref.time_new_pos_embed = nn.Parameter(ref.time_new_pos_embed[..., offset : offset + 9])
    with monkeypatch.context() as patch:
        patch.setattr(torch, "randint", ref_draws.randint)
        patch.setattr(torch, "randperm", ref_draws.randperm)
        ref_logits, ref_embedding = ref(x)
    assert ours_draws.calls == [("randint", 1 + 99 - 9), ("randperm", 9), ("randperm", 12),
                                ("randperm", 42)]  # fmt: skip
    assert ref_draws.calls == [("randperm", 9), ("randperm", 12), ("randperm", 42)]
    assert encoded.tokens.shape == (2, 2 + 42 - 5, 96)
    assert (encoded.embedding - ref_embedding).abs().max().item() < 1e-4
    assert (head(encoded) - ref_logits).abs().max().item() < 1e-4


def test_one_second_training_forward_depends_on_the_offset(tmp_path, monkeypatch) -> None:
    """The offset matters: another offset gives another output (the test above can fail)."""
    _, ours, _ = published_pair("tiny", tmp_path, classes=10)
    ours.train()
    x = mel_input(1, 100)
    outputs = []
    for offset in (0, 90):
        draws = Draws(offset, {12: [list(range(12))]})
        with monkeypatch.context() as patch:
            patch.setattr(torch, "randint", draws.randint)
            patch.setattr(torch, "randperm", draws.randperm)
            outputs.append(ours(x).embedding)
    assert (outputs[0] - outputs[1]).abs().max().item() > 1e-3
