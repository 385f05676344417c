"""MAE: masked-patch reconstruction, to pretrain an encoder on unlabeled audio.

The decoder and objective of AudioMAE (Huang et al., "Masked Autoencoders that Listen",
NeurIPS 2022; facebookresearch/AudioMAE ``models_mae.py``, global-attention decoder): the encoder
sees a random 20 % of the fbank patches; a light transformer decoder gets the encoded visible
patches plus a shared mask token at each hidden position (fixed 2-D sin-cos positions) and
predicts every patch's 16x16 values; the loss is the mean squared error over the hidden patches
only, against per-patch normalised targets (``norm_pix_loss``, AudioMAE's default).

Works with any backbone that offers the masked-encoder contract
:class:`harness.api.MaskedBackbone` (``forward_masked``, ``patchify``, ``patch_size``,
``mae_decoder``, ``pos_layout``; AudioMAE does). Pretrain, then reuse the encoder::

    harness run --backbone audiomae --method mae --protocol none
    harness run --backbone audiomae --set backbone.checkpoint=runs/<id>/backbone.pt ...

Decoder: ``preset="small"`` (default) is the light global-attention decoder (official
``decoder_mode=0``); ``preset="paper"`` (or ``decoder_mode=1``) is the decoder of the AudioMAE paper
and of its official AudioSet recipe: twice as many blocks (16 at base), timm's Swin-V2 blocks with
local window attention (4, 4) over the patch grid, every second block shifted by (2, 0), and
scaled-cosine attention, in the layout of the official ``timm_patch/swin_transformer.py`` (timm's
current Swin-V2 block differs: ``logit_scale`` for ``tau``, half-window shifts on both axes). Key
names are the official ones (``decoder_blocks.N.attn.qkv``, ``attn.tau``, ``attn.meta_mlp.fc1``,
``norm1``, ``mlp.fc1``, ``norm2``).

The method keeps AudioMAE's decoder key names (``decoder_embed``, ``mask_token``,
``decoder_blocks.N``, ``decoder_norm``, ``decoder_pred``) in ``method.pt``. The published AudioSet
checkpoint was pretrained with the shifted-window local decoder (``--decoder_mode 1``), which
``preset="paper"`` builds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from harness import hookimpl
from harness.api import (
    Backbone,
    Batch,
    Domain,
    MaskedBackbone,
    Method,
    StepOutput,
    Task,
    UsageError,
    between,
    domain_map,
    non_negative,
)
from harness.nn.layers import Mlp, audiomae_sincos, init_mae_weights, vit_block

__all__ = ["MaskedAutoencoder", "masked_patch_loss"]

CONTRACT = ("forward_masked", "patchify", "patch_size", "mae_decoder", "pos_layout")
"""The members of :class:`harness.api.MaskedBackbone`, named in the error message."""


def masked_patch_loss(pred: Tensor, target: Tensor, mask: Tensor, norm_pix_loss: bool) -> Tensor:
    """Mean over hidden patches of the per-patch mean squared error.

    ``pred`` and ``target`` are ``[B, N, P]``, ``mask`` ``[B, N]`` with 1 for hidden patches.
    With ``norm_pix_loss`` each target patch is standardised by its own mean and (unbiased)
    variance plus 1e-6, as MAE does.
    """
    if norm_pix_loss:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1e-6).sqrt()
    per_patch = (pred - target).pow(2).mean(dim=-1)
    return (per_patch * mask).sum() / mask.sum()


class MaskedAutoencoder(Method):
    """AudioMAE's decoder and masked-patch reconstruction loss."""

    name = "mae"
    description = "Masked-autoencoder pretraining (AudioMAE): reconstruct hidden fbank patches."
    supervised = False

    @dataclass
    class Config:
        mask_ratio: float = 0.8
        """Share of patches hidden from the encoder (AudioMAE: 0.8)."""
        norm_pix_loss: bool = True
        """Standardise each target patch (AudioMAE's pretraining default)."""
        decoder_dim: int = 0
        """0: the backbone's default for its size (base: 512)."""
        decoder_depth: int = 0
        """0: the backbone's default (base: 8)."""
        decoder_heads: int = 0
        """0: the backbone's default (base: 16)."""
        preset: Literal["small", "paper"] = "small"
        """``paper``: AudioMAE's AudioSet recipe, the local-attention decoder (``decoder_mode``
        1); ``small``: the light global-attention decoder (``decoder_mode`` 0)."""
        decoder_mode: int | None = None
        """0: global attention (official ``decoder_mode=0``); 1: 16 Swin-V2 blocks with local
        window attention (4, 4), every second block shifted by (2, 0), scaled-cosine attention
        (official ``decoder_mode=1``, the paper's); None: from ``preset``."""

        domains = domain_map(
            mask_ratio=Domain(gt=0, lt=1, help="Share of patches hidden from the encoder."),
            decoder_dim=non_negative("Decoder width (0: the paper's default)."),
            decoder_depth=non_negative("Decoder blocks (0: the paper's default)."),
            decoder_heads=non_negative("Decoder attention heads (0: the paper's default)."),
            decoder_mode=between(0, 1, "Decoder: 0 global attention, 1 local (Swin) attention."),
        )

        def __post_init__(self) -> None:
            if not 0.0 < self.mask_ratio < 1.0:
                raise ValueError(f"mask_ratio must be in (0, 1), got {self.mask_ratio}")
            if self.decoder_mode not in (None, 0, 1):
                raise ValueError(f"decoder_mode must be 0 or 1, got {self.decoder_mode}")
            for name in ("decoder_dim", "decoder_depth", "decoder_heads"):
                value = getattr(self, name)
                if value < 0:
                    raise ValueError(f"{name} must be 0 (default) or positive, got {value}")

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self._pos_cache: dict[tuple[tuple[int, int], torch.device], Tensor] = {}
        self.pos_layout = "time-major"

    def setup(self, backbone: Backbone, task: Task) -> None:
        if not isinstance(backbone, MaskedBackbone):
            raise UsageError(
                f"method 'mae' needs a masked-autoencoder backbone (e.g. audiomae) that "
                f"implements harness.api.MaskedBackbone ({', '.join(CONTRACT)}); "
                f"backbone '{backbone.name}' does not"
            )
        self.pos_layout = backbone.pos_layout
        default_dim, default_depth, default_heads = backbone.mae_decoder
        mode = self.decoder_mode
        dim = self.config.decoder_dim or default_dim
        # the official local decoder has twice the global one's blocks (base: 16 vs 8)
        depth = self.config.decoder_depth or default_depth * (2 if mode == 1 else 1)
        heads = self.config.decoder_heads or default_heads
        if dim % heads or dim % 4:
            raise UsageError(
                f"method.decoder_dim {dim} must be divisible by 4 and by decoder_heads {heads}"
            )
        patch_values = backbone.patch_size**2
        self.decoder_embed = nn.Linear(backbone.embed_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        if mode == 1:
            self.decoder_blocks = nn.ModuleList(swin_blocks(dim, heads, depth))
        else:
            self.decoder_blocks = nn.ModuleList(vit_block(dim, heads) for _ in range(depth))
        self.decoder_norm = nn.LayerNorm(dim, eps=1e-6)
        self.decoder_pred = nn.Linear(dim, patch_values)
        nn.init.normal_(self.mask_token, std=0.02)
        self.apply(init_mae_weights)

    @property
    def decoder_mode(self) -> int:
        if self.config.decoder_mode is not None:
            return self.config.decoder_mode
        return 1 if self.config.preset == "paper" else 0

    def decoder_pos_embed(self, grid: tuple[int, int], device: torch.device) -> Tensor:
        """The fixed sin-cos table ``[1, 1 + rows * cols, dim]`` (cached per grid)."""
        key = (grid, device)
        if key not in self._pos_cache:
            table = audiomae_sincos(self.mask_token.shape[-1], grid, self.pos_layout)
            self._pos_cache[key] = table[None].to(device)
        return self._pos_cache[key]

    def decode(self, latent: Tensor, ids_restore: Tensor, grid: tuple[int, int]) -> Tensor:
        """Predicted patch values ``[B, N, patch_size**2]`` for every patch, in patch order."""
        x = self.decoder_embed(latent)
        batch, visible, dim = x.shape
        hidden = ids_restore.shape[1] + 1 - visible
        patches = torch.cat([x[:, 1:], self.mask_token.expand(batch, hidden, -1)], dim=1)
        patches = patches.gather(1, ids_restore[..., None].expand(-1, -1, dim))
        x = torch.cat([x[:, :1], patches], dim=1) + self.decoder_pos_embed(grid, x.device)
        if self.decoder_mode == 1:  # windows over the patch grid; the class token is dropped
            x = x[:, 1:].reshape(batch, grid[0], grid[1], dim)
            for block in self.decoder_blocks:
                x = block(x)
            return self.decoder_pred(self.decoder_norm(x.reshape(batch, -1, dim)))
        for block in self.decoder_blocks:
            x = block(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]

    def reconstruct(self, features: Tensor, backbone: Backbone) -> tuple[Tensor, Tensor, Tensor]:
        """``(prediction, target patches, mask)`` for one batch of features."""
        encoded = backbone.forward_masked(features, self.config.mask_ratio)
        pred = self.decode(encoded.latent, encoded.ids_restore, encoded.grid)
        return pred, backbone.patchify(features), encoded.mask

    def training_step(self, batch: Batch, backbone: Backbone) -> StepOutput:
        pred, target, mask = self.reconstruct(batch.features, backbone)
        loss = masked_patch_loss(pred, target, mask, self.config.norm_pix_loss)
        return StepOutput(loss, {"mae": loss.detach()})


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


@hookimpl
def register_methods(register) -> None:
    register(MaskedAutoencoder)
