"""SpecAugment masking: torchaudio equivalence, mask bounds, per-example masks, layouts."""

from __future__ import annotations

import pytest
import torch
import torchaudio.functional as AF
import torchaudio.transforms as T

from harness.api import Batch, Task
from harness.registry.config import build_dataclass
from harness.registry.plugins import load_plugins
from harness.util.errors import UsageError
from harness_plugins.augmentations.specaugment import SpecAugment, mask_along_axis

SENTINEL = -7.0


def make(time_axis: int = -1, **config) -> SpecAugment:
    aug = SpecAugment(SpecAugment.Config(**config))
    aug.setup(Task(classes=["x"], devices=[], sample_rate=32000, time_axis=time_axis))
    return aug


def dummy_batch(n: int) -> Batch:
    zeros = torch.zeros(n, dtype=torch.long)
    return Batch(wave=torch.zeros(n, 10), label=zeros, device=zeros, index=zeros)


def runs(flags: torch.Tensor) -> list[tuple[int, int]]:
    """Contiguous ``(start, stop)`` runs of True in a 1-D bool tensor."""
    out, start = [], None
    for i, flag in enumerate([*flags.tolist(), False]):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            out.append((start, i))
            start = None
    return out


def test_registered_as_feature_augmentation():
    entry = load_plugins()["augmentation"].get("specaugment")
    assert entry.cls is SpecAugment
    assert SpecAugment.stage == "features"
    cfg = SpecAugment.Config()
    assert (cfg.freq_mask, cfg.time_mask, cfg.mask_value) == (48, 24, 0.0)


def test_equals_torchaudio_iid_masking_mel_layout():
    x = torch.randn(8, 1, 128, 100)
    torch.manual_seed(3)
    expected = T.TimeMasking(24, iid_masks=True)(T.FrequencyMasking(48, iid_masks=True)(x))
    torch.manual_seed(3)
    got = make()(x, dummy_batch(8))
    assert torch.equal(got, expected)
    assert not torch.equal(got, x)


def test_equals_torchaudio_iid_masking_fbank_layout():
    x = torch.randn(8, 1, 100, 128)  # [B, 1, T, F]
    torch.manual_seed(4)
    expected = AF.mask_along_axis_iid(x, 48, 0.0, axis=3)
    expected = AF.mask_along_axis_iid(expected, 24, 0.0, axis=2)
    torch.manual_seed(4)
    got = make(time_axis=-2)(x, dummy_batch(8))
    assert torch.equal(got, expected)


@pytest.mark.parametrize("time_axis", [-1, -2])
def test_masks_are_bands_within_bounds(time_axis: int):
    torch.manual_seed(0)
    n, freq, frames = 400, 128, 100
    shape = (n, 1, freq, frames) if time_axis == -1 else (n, 1, frames, freq)
    x = torch.rand(shape) + 1.0  # strictly positive, so only masks equal the sentinel
    out = make(time_axis, mask_value=SENTINEL)(x, dummy_batch(n))
    if time_axis == -2:
        out = out.transpose(-1, -2)  # now [n, 1, F, T] in both cases
    masked = out[:, 0] == SENTINEL
    untouched = ~masked
    assert torch.equal(
        out[:, 0][untouched], (x if time_axis == -1 else x.transpose(-1, -2))[:, 0][untouched]
    )
    freq_widths, time_widths, starts = [], [], set()
    for cells in masked:
        rows, cols = cells.all(dim=1), cells.all(dim=0)
        # every masked cell lies in a fully masked frequency row or time column
        assert torch.equal(cells, rows[:, None] | cols[None, :])
        row_runs, col_runs = runs(rows), runs(cols)
        assert len(row_runs) <= 1 and len(col_runs) <= 1
        freq_widths += [b - a for a, b in row_runs] or [0]
        time_widths += [b - a for a, b in col_runs] or [0]
        starts |= {a for a, _ in row_runs}
        assert all(a >= 0 and b <= freq for a, b in row_runs)
        assert all(a >= 0 and b <= frames for a, b in col_runs)
    # widths are floor(u * max): 0 .. max - 1, spread over the whole range
    assert max(freq_widths) <= 47 and max(time_widths) <= 23
    assert max(freq_widths) >= 44 and max(time_widths) >= 21
    assert min(freq_widths) <= 2 and min(time_widths) <= 1
    assert min(starts) <= 2 and max(starts) >= 100


def test_masks_differ_per_example():
    torch.manual_seed(1)
    x = torch.ones(16, 1, 128, 100)
    masked = make(mask_value=SENTINEL)(x, dummy_batch(16)) == SENTINEL
    distinct = {tuple(m.flatten().nonzero().flatten().tolist()) for m in masked}
    assert len(distinct) == 16


def test_several_masks_per_axis():
    torch.manual_seed(2)
    x = torch.ones(300, 1, 128, 100)
    aug = make(freq_mask=10, time_mask=5, freq_masks=3, time_masks=2, mask_value=SENTINEL)
    masked = aug(x, dummy_batch(300))[:, 0] == SENTINEL
    rows = masked.all(dim=2).sum(dim=1)
    cols = masked.all(dim=1).sum(dim=1)
    assert int(rows.max()) <= 3 * 9 and int(cols.max()) <= 2 * 4
    assert int(rows.max()) > 9  # more than one mask's width: the masks add up
    assert max(len(runs(r)) for r in masked.all(dim=2)) >= 2


def test_zero_width_or_count_is_identity():
    x = torch.randn(4, 1, 128, 100)
    assert torch.equal(make(freq_mask=0, time_mask=0)(x, dummy_batch(4)), x)
    assert torch.equal(make(freq_masks=0, time_masks=0)(x, dummy_batch(4)), x)


def test_mask_wider_than_axis_is_capped():
    torch.manual_seed(5)
    x = torch.ones(50, 1, 8, 6)
    out = mask_along_axis(x, -1, max_width=100, count=1, value=SENTINEL)
    assert out.shape == x.shape
    assert int((out[:, 0] == SENTINEL).all(dim=1).sum(dim=1).max()) <= 5


def test_bad_config_is_a_usage_error():
    with pytest.raises(UsageError, match="freq_mask"):
        build_dataclass(SpecAugment.Config, {"freq_mask": "-1"}, "aug.specaugment")
    with pytest.raises(ValueError, match="at least 3 dimensions"):
        mask_along_axis(torch.zeros(4, 5), -1, 2, 1, 0.0)
