"""The Swin-V2 decoder blocks of AudioMAE's local decoder (official ``decoder_mode=1``): window
attention (4, 4) over the patch grid with scaled-cosine attention and a log-spaced relative
position MLP, every second block shifted by (2, 0); key names follow the official
``timm_patch/swin_transformer.py``."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from harness.nn.layers import Mlp
from harness.util.errors import UsageError

__all__ = ["SwinDecoderBlock", "WindowAttention", "partition", "swin_blocks"]


class WindowAttention(nn.Module):
    """Scaled-cosine window attention with a log-spaced continuous position bias (Swin V2 CR),
    in the official AudioMAE layout: ``qkv``, ``proj``, ``meta_mlp.fc1``/``fc2`` (hidden 384,
    ReLU, dropout 0.1) and the per-head temperature ``tau`` (``cos / max(tau, 0.01)``)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise UsageError(f"decoder dims {dim} not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.meta_mlp = Mlp(2, 384, heads, act_layer=nn.ReLU, drop=0.1)
        self.tau = nn.Parameter(torch.ones(heads))

    def position_bias(self, window: tuple[int, int]) -> Tensor:
        """``[1, H, w * w', w * w']`` from the signed log of the relative coordinates."""
        coords = torch.stack(
            torch.meshgrid(torch.arange(window[0]), torch.arange(window[1]), indexing="ij")
        ).flatten(1)
        relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).reshape(-1, 2)
        relative = relative.float().to(self.tau.device)
        log_coords = torch.sign(relative) * torch.log1p(relative.abs())
        area = window[0] * window[1]
        return self.meta_mlp(log_coords).transpose(1, 0).reshape(1, self.heads, area, area)

    def forward(self, x: Tensor, window: tuple[int, int], mask: Tensor | None) -> Tensor:
        windows, length, dim = x.shape
        qkv = self.qkv(x).view(windows, length, 3, self.heads, dim // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        denom = q.norm(dim=-1, keepdim=True) @ k.norm(dim=-1, keepdim=True).transpose(-2, -1)
        attn = q @ k.transpose(-2, -1) / denom.clamp(min=1e-6)
        attn = attn / self.tau.clamp(min=0.01).reshape(1, self.heads, 1, 1)
        attn = attn + self.position_bias(window)
        if mask is not None:
            count = mask.shape[0]
            attn = attn.view(windows // count, count, self.heads, length, length)
            attn = (attn + mask[None, :, None]).view(-1, self.heads, length, length)
        out = attn.softmax(dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(windows, length, dim))


class SwinDecoderBlock(nn.Module):
    """The official ``decoder_mode=1`` block (AudioMAE's ``timm_patch`` Swin V2 CR block):
    post-norm residual branches ``x + norm1(window_attn(x))``, ``x + norm2(mlp(x))``, cyclic
    shift by ``shift`` with the -100 mask across shifted borders. A window or shift larger than
    the grid is clamped per forward (the official rule), so shorter clips work too."""

    def __init__(self, dim: int, heads: int, window: tuple[int, int], shift: tuple[int, int]):
        super().__init__()
        self.window_size = window
        self.shift_size = shift
        self.attn = WindowAttention(dim, heads)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, 4 * dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self._masks: dict[tuple, Tensor | None] = {}

    def layout(self, grid: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
        window = tuple(min(f, w) for f, w in zip(grid, self.window_size, strict=True))
        shift = tuple(
            0 if f <= w else s for f, w, s in zip(grid, window, self.shift_size, strict=True)
        )
        return window, shift

    def mask(self, grid: tuple[int, int], window, shift, device) -> Tensor | None:
        key = (grid, window, shift, device)
        if key not in self._masks:
            if not any(shift):
                self._masks[key] = None
            else:
                img = torch.zeros(1, grid[0], grid[1], 1)
                count = 0
                for h in (
                    slice(0, -window[0]),
                    slice(-window[0], -shift[0]),
                    slice(-shift[0], None),
                ):
                    # the official slices; with a zero shift the last one is the whole axis
                    for w in (
                        slice(0, -window[1]),
                        slice(-window[1], -shift[1]),
                        slice(-shift[1], None),
                    ):
                        img[:, h, w, :] = count
                        count += 1
                parts = partition(img, window).view(-1, window[0] * window[1])
                diff = parts.unsqueeze(1) - parts.unsqueeze(2)
                self._masks[key] = diff.masked_fill(diff != 0, -100.0).to(device)
        return self._masks[key]

    def forward(self, x: Tensor) -> Tensor:
        """``x`` ``[B, rows, cols, D]`` -> the same shape."""
        batch, rows, cols, dim = x.shape
        if rows % min(rows, self.window_size[0]) or cols % min(cols, self.window_size[1]):
            raise UsageError(f"decoder grid {rows} x {cols} is not a multiple of the window")
        window, shift = self.layout((rows, cols))
        y = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2)) if any(shift) else x
        windows = partition(y, window).view(-1, window[0] * window[1], dim)
        mask = self.mask((rows, cols), window, shift, x.device)
        y = self.attn(windows, window, mask).view(-1, window[0], window[1], dim)
        y = y.view(batch, rows // window[0], cols // window[1], window[0], window[1], dim)
        y = y.permute(0, 1, 3, 2, 4, 5).reshape(batch, rows, cols, dim)
        if any(shift):
            y = torch.roll(y, shifts=shift, dims=(1, 2))
        x = x + self.norm1(y)
        return x + self.norm2(self.mlp(x))


def partition(x: Tensor, window: tuple[int, int]) -> Tensor:
    """``[B, H, W, C]`` -> ``[B * windows, w, w', C]`` (row-major windows)."""
    b, h, w, c = x.shape
    x = x.view(b, h // window[0], window[0], w // window[1], window[1], c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window[0], window[1], c)


def swin_blocks(dim: int, heads: int, depth: int) -> list[nn.Module]:
    """The official ``decoder_mode=1`` stack: window (4, 4), every second block shifted (2, 0)."""
    return [
        SwinDecoderBlock(dim, heads, (4, 4), (0, 0) if index % 2 == 0 else (2, 0))
        for index in range(depth)
    ]
