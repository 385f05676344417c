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

from harness import hookimpl
from harness_plugins.methods._masked_autoencoder import MaskedAutoencoder

__all__ = ["MaskedAutoencoder"]


@hookimpl
def register_methods(register) -> None:
    register(MaskedAutoencoder)
