"""The ``mae`` method's model, shared by ``mae.py`` (which registers it) and ``nnclr.py`` (its MAE
warm-up): AudioMAE's decoder on a :class:`harness.api.MaskedBackbone` and the masked-patch
reconstruction loss. See ``mae.py`` for the method's description."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

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
from harness.nn.layers import audiomae_sincos, init_mae_weights, vit_block
from harness.nn.swin import swin_blocks

__all__ = ["CONTRACT", "MaskedAutoencoder", "masked_patch_loss"]

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
