"""MAE-AST: the encoder of "Masked Autoencoding Audio Spectrogram Transformer".

Paper: A. Baade, P. Peng, D. Harwath, Interspeech 2022 (arXiv:2203.16691). Reference code:
AlanBaade/MAE-AST-Public (``mae_ast/models/mae_ast.py``, fairseq; ``s3prl/mae_ast/expert.py``),
published patch model: 12 encoder and 2 decoder layers of 768 dims (the seed paper's 99M counts
both; the encoder alone is 85.6M).

Front-end (the s3prl expert's ``wav_to_spectrogram``): kaldi fbank of the 16 kHz waveform with
torchaudio's defaults (povey window, 25 ms frames every 10 ms, no dither) and 128 bins, time
first ``[B, 1, T, 128]``, unnormalised.

Encoder, bottom to top: ``batch_norm`` (``BatchNorm2d(1, affine=False)``, running statistics in
evaluation) times 0.5; 16x16 patches cut with ``Unfold`` (time-major tokens ``t * 8 + f``, patch
values ordered time then frequency) and projected by ``post_extract_proj``; the interleaved 1-D
sinusoidal table added (``enc_sine_pos``); ``encoder.layer_norm``; post-LN transformer layers
(fairseq ``TransformerSentenceEncoderLayer``: separate q/k/v projections, ``self_attn_layer_norm``
after the residual, GELU FFN ``fc1``/``fc2``, ``final_layer_norm``). The clip embedding is the mean
of the final tokens, as s3prl's utterance-level pooling.

Checkpoints (``--set backbone.checkpoint=PATH``): the published fairseq file ``{'cfg': {'model':
..., 'task': ...}, 'model': state_dict}``. ``cfg['model']`` is compared with the chosen size (a
one-line error names the size that fits); the decoder, mask embeddings, reconstruction and
classification projections, the unused input ``layer_norm`` and the sinusoid buffers are set
aside. :meth:`MaeAst.published_checkpoint` writes this encoder back in that layout.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness import hookimpl
from harness.api import Backbone, DataError, Encoded, Pretrained, UsageError
from harness.nn.fbank import KaldiFbank
from harness.nn.layers import count_parameters, sincos_pos_embed_1d
from harness.nn.state_dicts import block_count, check_size, swap_prefix

__all__ = ["SIZES", "MaeAst", "MaeAstSize", "from_published_keys", "to_published_keys"]

SAMPLE_RATE = 16000
N_MELS = 128
PATCH = 16
SET_ASIDE_PREFIXES = (
    "decoder.",
    "decoder_mask_emb",
    "encoder_mask_emb",
    "final_proj_",
    "post_enc_proj.",
    "layer_norm.",
    "enc_sine_pos_embed.",
    "dec_sine_pos_embed.",
    "enc_conv_pos_embed.",
    "dec_conv_pos_embed.",
)
KEY_PREFIXES = (("blocks.", "encoder.layers."), ("embed_norm.", "encoder.layer_norm."))
"""(project prefix, published prefix)."""


@dataclass(frozen=True)
class MaeAstSize:
    """Field names are the keys of the published ``cfg['model']``."""

    encoder_layers: int
    encoder_embed_dim: int
    encoder_ffn_embed_dim: int
    encoder_attention_heads: int


SIZES: dict[str, MaeAstSize] = {
    "tiny": MaeAstSize(2, 64, 256, 2),
    "base": MaeAstSize(12, 768, 3072, 12),
}


class PostLNLayer(nn.Module):
    """fairseq's post-LN ``TransformerSentenceEncoderLayer`` (published key names)."""

    def __init__(self, dim: int, ffn: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise UsageError(f"attention dims {dim} not divisible by {heads} heads")
        self.heads = heads
        self.self_attn = nn.Module()
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            setattr(self.self_attn, name, nn.Linear(dim, dim))
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, ffn)
        self.fc2 = nn.Linear(ffn, dim)
        self.final_layer_norm = nn.LayerNorm(dim)

    def attention(self, x: Tensor, padding_mask: Tensor | None) -> Tensor:
        b, n, d = x.shape
        attn = self.self_attn
        q, k, v = (
            proj(x).view(b, n, self.heads, d // self.heads).transpose(1, 2)
            for proj in (attn.q_proj, attn.k_proj, attn.v_proj)
        )
        mask = None if padding_mask is None else ~padding_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return attn.out_proj(out.transpose(1, 2).reshape(b, n, d))

    def forward(self, x: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        x = self.self_attn_layer_norm(x + self.attention(x, padding_mask))
        return self.final_layer_norm(x + self.fc2(F.gelu(self.fc1(x))))


class MaeAstFbank(nn.Module):
    """Waveforms ``[B, S]`` at 16 kHz -> kaldi fbank ``[B, 1, T, 128]`` (torchaudio defaults)."""

    def __init__(self) -> None:
        super().__init__()
        self.kaldi = KaldiFbank(SAMPLE_RATE, N_MELS, window="povey")

    def forward(self, wave: Tensor) -> Tensor:
        return self.kaldi(wave).unsqueeze(1)


# -- published checkpoints (--set backbone.pretrained=NAME; harness.registry.pretrained) -----------

# AlanBaade/MAE-AST-Public README ("Pretrained Model Download"): the two 12-layer models of
# the paper, hosted at UT Austin. Only the patch model is listed (this backbone builds the
# 16x16 patch encoder; the frame model is refused by check_checkpoint). No sha256 is
# published: the first download's hash is recorded and checked on every later use.
PRETRAINED = {
    "mae-ast-patch-12l-chunk75": Pretrained(
        "https://www.cs.utexas.edu/~harwath/model_checkpoints/mae_ast/"
        "chunk_patch_75_12LayerEncoder.pt",
        layout="mae-ast",
        config={"size": "base"},
        page="https://github.com/AlanBaade/MAE-AST-Public#pretrained-model-download",
        description="MAE-AST Patch: 12-layer encoder, 75% chunked masking (the paper's model)",
    ),
}


class MaeAst(Backbone):
    """The MAE-AST patch encoder; see the module docstring."""

    name = "mae-ast"
    description = (
        "MAE-AST patch encoder (Baade et al. 2022): kaldi fbank, batch norm, 16x16 patches, "
        "sinusoidal positions, fairseq post-LN layers; loads the published fairseq format"
    )
    pretrained = PRETRAINED
    sample_rate = SAMPLE_RATE
    time_axis = -2
    stem_prefixes = ("batch_norm.", "post_extract_proj.", "embed_norm.")

    @dataclass
    class Config:
        size: Literal["tiny", "base"] = "tiny"
        """``base`` is the published encoder (12 layers x 768, 12 heads)."""
        checkpoint: str = ""
        """A published MAE-AST fairseq checkpoint or a harness backbone.pt."""

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        spec = SIZES[config.size]
        self.spec = spec
        dim = spec.encoder_embed_dim
        self.embed_dim = dim
        self.batch_norm = nn.BatchNorm2d(1, affine=False)
        self.post_extract_proj = nn.Linear(PATCH * PATCH, dim)
        self.embed_norm = nn.LayerNorm(dim)
        self.blocks = nn.ModuleList(
            PostLNLayer(dim, spec.encoder_ffn_embed_dim, spec.encoder_attention_heads)
            for _ in range(spec.encoder_layers)
        )
        self._positions: dict[tuple[int, torch.device], Tensor] = {}
        self.load_notes: list[str] = []
        self.reset_parameters()

    def checkpoint_source(self) -> str:
        return self.config.checkpoint

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """fairseq's ``init_bert_params``: normal(0, 0.02) linear weights, zero biases."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    @classmethod
    def describe_extra(cls) -> list[str]:
        lines = [
            "input: 16 kHz waveform -> kaldi fbank [B, 1, T, 128] (time first), "
            "16x16 patches: T // 16 x 8 tokens"
        ]
        for name, spec in SIZES.items():
            params = count_parameters(cls, cls.Config(size=name))
            lines.append(
                f"size {name}: {spec.encoder_layers} layers x {spec.encoder_embed_dim} dims, "
                f"{spec.encoder_attention_heads} heads, FFN {spec.encoder_ffn_embed_dim}, "
                f"{params / 1e6:.2f}M parameters, embedding [B, {spec.encoder_embed_dim}]"
            )
        return lines

    def frontend(self) -> nn.Module:
        return MaeAstFbank()

    def positions(self, length: int, device: torch.device) -> Tensor:
        key = (length, device)
        if key not in self._positions:
            self._positions[key] = sincos_pos_embed_1d(length, self.embed_dim).to(device)
        return self._positions[key]

    def patches(self, features: Tensor) -> Tensor:
        """Normalised fbank ``[B, 1, T, 128]`` -> patch values ``[B, N, 256]`` (Unfold order)."""
        x = self.batch_norm(features) * 0.5
        return F.unfold(x, kernel_size=PATCH, stride=PATCH).transpose(1, 2)

    def forward(self, features: Tensor, padding_mask: Tensor | None = None) -> Encoded:
        """``padding_mask`` ``[B, N]`` (True = padded patch) as the reference's
        ``forward_padding_mask`` gives; padded positions get no sinusoid and are not attended."""
        if features.ndim != 4 or features.shape[1] != 1 or features.shape[-1] != N_MELS:
            raise UsageError(
                f"mae-ast expects fbank features [B, 1, T, {N_MELS}], got {list(features.shape)}"
            )
        if features.shape[2] < PATCH:
            raise DataError(f"mae-ast needs at least {PATCH} frames, got {features.shape[2]}")
        x = self.post_extract_proj(self.patches(features))
        table = self.positions(x.shape[1], x.device)[None]
        if padding_mask is not None:
            table = table.masked_fill(padding_mask[..., None], 0.0)
        x = self.embed_norm(x + table)
        for block in self.blocks:
            x = block(x, padding_mask)
        if padding_mask is None:
            return Encoded(embedding=x.mean(dim=1), tokens=x)
        keep = (~padding_mask).float()[..., None]
        return Encoded(embedding=(x * keep).sum(1) / keep.sum(1).clamp_min(1.0), tokens=x)

    # -- checkpoints --------------------------------------------------------------

    def check_checkpoint(self, checkpoint: Any) -> None:
        """Compare a published ``cfg['model']`` with the chosen size."""
        if not isinstance(checkpoint, Mapping) or not isinstance(checkpoint.get("cfg"), Mapping):
            return
        cfg = checkpoint["cfg"].get("model")
        if not isinstance(cfg, Mapping):
            return
        kernel = [cfg.get(f"ast_kernel_{k}") for k in ("size_chan", "size_time")]
        if any(v is not None and v != PATCH for v in kernel):
            raise UsageError(
                f"mae-ast checkpoint uses {kernel} patches; only the 16x16 patch model is built"
            )
        ours = vars(self.spec)
        differing = [k for k in ours if k in cfg and cfg[k] != ours[k]]
        if not differing:
            return
        matching = [
            n for n, s in SIZES.items() if all(cfg[k] == v for k, v in vars(s).items() if k in cfg)
        ]
        details = ", ".join(
            f"{k}={cfg[k]!r} (size '{self.config.size}': {ours[k]!r})" for k in differing
        )
        hint = f"; set backbone.size={matching[0]}" if matching else "; no mae-ast size fits"
        raise UsageError(f"mae-ast checkpoint cfg does not match: {details}{hint}")

    def adapt_state_dict(self, state_dict: Mapping[str, Any]) -> dict[str, Tensor]:
        """Published fairseq layout -> this module's keys; pretraining-only keys set aside."""
        if isinstance(state_dict.get("model"), Mapping):
            self.check_checkpoint(state_dict)
            state_dict = state_dict["model"]
        state = dict(state_dict)
        if any(k.startswith("encoder.") for k in state):
            state = from_published_keys(state)
        aside = sorted(k for k in state if k.startswith(SET_ASIDE_PREFIXES))
        for key in aside:
            del state[key]
        self.load_notes = (
            [f"set aside {len(aside)} pretraining keys (decoder, mask embeddings, projections)"]
            if aside
            else []
        )
        proj = state.get("post_extract_proj.weight")
        if proj is not None:
            sizes = {n: (s.encoder_embed_dim, s.encoder_layers) for n, s in SIZES.items()}
            check_size("mae-ast", self.config.size, (proj.shape[0], block_count(state)), sizes)
        return state

    def published_checkpoint(self) -> dict[str, Any]:
        """This encoder as ``{'cfg', 'model'}`` in the published key layout."""
        cfg = {
            **vars(self.spec),
            "ast_kernel_size_chan": PATCH,
            "ast_kernel_size_time": PATCH,
            "ast_kernel_stride_chan": PATCH,
            "ast_kernel_stride_time": PATCH,
            "layer_norm_first": False,
            "enc_sine_pos": True,
            "activation_fn": "gelu",
        }
        task = {"sample_rate": SAMPLE_RATE, "feature_dim": N_MELS, "feature_type": "fbank"}
        return {"cfg": {"model": cfg, "task": task}, "model": to_published_keys(self.state_dict())}


def to_published_keys(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    out = {}
    for key, value in state.items():
        out[swap_prefix(key, KEY_PREFIXES)] = value
    return out


def from_published_keys(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    out = {}
    for key, value in state.items():
        out[swap_prefix(key, KEY_PREFIXES, reverse=True)] = value
    return out


@hookimpl
def register_backbones(register) -> None:
    register(MaeAst)
