"""MAE: masked-patch reconstruction, to pretrain an encoder on unlabeled audio.

The decoder and objective of AudioMAE (Huang et al., "Masked Autoencoders that Listen",
NeurIPS 2022; facebookresearch/AudioMAE ``models_mae.py``, global-attention decoder): the encoder
sees a random 20 % of the fbank patches; a light transformer decoder gets the encoded visible
patches plus a shared mask token at each hidden position (fixed 2-D sin-cos positions) and
predicts every patch's 16x16 values; the loss is the mean squared error over the hidden patches
only, against per-patch normalised targets (``norm_pix_loss``, AudioMAE's default).

Works with any backbone that offers the masked-encoder contract documented in
:mod:`harness_plugins.backbones.audiomae` (``forward_masked``, ``patchify``, ``patch_size``,
``mae_decoder``). Pretrain, then reuse the encoder::

    harness run --backbone audiomae --method mae --protocol none
    harness run --backbone audiomae --set backbone.checkpoint=runs/<id>/backbone.pt ...

The method keeps AudioMAE's decoder key names (``decoder_embed``, ``mask_token``,
``decoder_blocks.N``, ``decoder_norm``, ``decoder_pred``) in ``method.pt``. The published AudioSet
checkpoint was pretrained with the shifted-window local decoder (``--decoder_mode 1``); its decoder
weights do not fit this global-attention decoder, and the encoder does not need them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from harness import hookimpl
from harness.api import Backbone, Batch, Method, StepOutput, Task
from harness.config import Domain, domain_map, non_negative
from harness.errors import UsageError
from harness_plugins.backbones.audiomae import Block, init_vit_weights, sincos_pos_embed_2d

__all__ = ["MaskedAutoencoder", "masked_patch_loss"]

CONTRACT = ("forward_masked", "patchify", "patch_size", "mae_decoder")


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

        domains = domain_map(
            mask_ratio=Domain(gt=0, lt=1, help="Share of patches hidden from the encoder."),
            decoder_dim=non_negative("Decoder width (0: the paper's default)."),
            decoder_depth=non_negative("Decoder blocks (0: the paper's default)."),
            decoder_heads=non_negative("Decoder attention heads (0: the paper's default)."),
        )

        def __post_init__(self) -> None:
            if not 0.0 < self.mask_ratio < 1.0:
                raise ValueError(f"mask_ratio must be in (0, 1), got {self.mask_ratio}")
            for name in ("decoder_dim", "decoder_depth", "decoder_heads"):
                value = getattr(self, name)
                if value < 0:
                    raise ValueError(f"{name} must be 0 (default) or positive, got {value}")

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self._pos_cache: dict[tuple[tuple[int, int], torch.device], Tensor] = {}

    def setup(self, backbone: Backbone, task: Task) -> None:
        missing = [attr for attr in CONTRACT if not hasattr(backbone, attr)]
        if missing:
            raise UsageError(
                f"method 'mae' needs a masked-autoencoder backbone (e.g. audiomae) with "
                f"{', '.join(CONTRACT)}; backbone '{backbone.name}' lacks {', '.join(missing)}"
            )
        default_dim, default_depth, default_heads = backbone.mae_decoder
        dim = self.config.decoder_dim or default_dim
        depth = self.config.decoder_depth or default_depth
        heads = self.config.decoder_heads or default_heads
        if dim % heads or dim % 4:
            raise UsageError(
                f"method.decoder_dim {dim} must be divisible by 4 and by decoder_heads {heads}"
            )
        patch_values = backbone.patch_size**2
        self.decoder_embed = nn.Linear(backbone.embed_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.decoder_blocks = nn.ModuleList(Block(dim, heads) for _ in range(depth))
        self.decoder_norm = nn.LayerNorm(dim, eps=1e-6)
        self.decoder_pred = nn.Linear(dim, patch_values)
        nn.init.normal_(self.mask_token, std=0.02)
        self.apply(init_vit_weights)

    def decoder_pos_embed(self, grid: tuple[int, int], device: torch.device) -> Tensor:
        """The fixed sin-cos table ``[1, 1 + rows * cols, dim]`` (cached per grid)."""
        key = (grid, device)
        if key not in self._pos_cache:
            table = sincos_pos_embed_2d(self.mask_token.shape[-1], grid)
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
        return StepOutput(loss, {"mae": loss.item()})


@hookimpl
def register_methods(register) -> None:
    register(MaskedAutoencoder)
