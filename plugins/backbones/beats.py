"""BEATs: the audio encoder of Chen et al., "BEATs: Audio Pre-Training with Acoustic Tokenizers".

Paper: https://arxiv.org/abs/2212.09058. Reference: microsoft/unilm ``beats/BEATs.py`` and
``beats/backbone.py`` (fairseq-based); a port lives in ``speechbrain.lobes.models.beats``.

Architecture, bottom to top (``base`` is the published BEATs iter3 encoder):

* Front-end: waveform at 16 kHz times 2**15 (int16 range), kaldi fbank (128 bins, 25 ms frames,
  10 ms shift), normalized as ``(fbank - 15.41663) / (2 * 6.55582)``; features ``[B, 1, T, 128]``.
  The fbank is computed for the whole batch at once and equals ``torchaudio.compliance.kaldi.fbank``
  (which BEATs calls clip by clip) to float rounding.
* 16x16 conv patch embedding (no bias) to 512 channels, LayerNorm, linear projection to the model
  width; tokens ordered time-major (``t * 8 + f``), as ``reshape`` of the conv output gives.
* Convolutional positional embedding over the token sequence: weight-normalized (over the kernel
  axis) grouped Conv1d, kernel 128, 16 groups, the last output dropped, GELU; added, then LayerNorm.
* Post-LN transformer blocks with deep-norm residual scaling ``alpha = (2 N) ** 0.25``; attention
  gets a bucketed relative position bias (320 buckets, max distance 800) computed once and shared by
  every layer, scaled per query and head by the gated relative position unit (``grep_linear``,
  ``grep_a``); FFN with GELU.

Clip embedding: BEATs has no class token, so the embedding is the mean of the final tokens over
time and frequency patches. For a linear classifier this equals averaging per-token logits, which
is how BEATs' own fine-tuned predictor pools.

Sizes: ``base`` as published; ``small`` (12 x 384, 6 heads) and ``tiny`` (2 x 64, 2 heads, patches
to 128 channels) keep every published component and only shrink widths and depth.

Checkpoints (``--set backbone.checkpoint=PATH``, loaded by :mod:`harness.registry.checkpoints`): the
published format ``{'cfg': {...}, 'model': state_dict}``. :meth:`Beats.check_checkpoint` compares
its ``cfg`` with the chosen size; a difference in an architecture key is a one-line error naming
the keys and the size that matches (``cfg`` never changes the architecture). Training-only keys
(dropouts, layerdrop, ``layer_wise_gradient_decay_ratio``) are not checked: this encoder trains
without dropout or layerdrop, and the harness applies its own layer-wise learning-rate decay.
:meth:`Beats.adapt_state_dict` maps the published key layout onto this module's and sets aside
fine-tuned ``predictor.*`` and tokenizer ``quantize*`` keys. :meth:`Beats.published_checkpoint`
writes the model back in the published format.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness import hookimpl
from harness.api import Backbone, DataError, Encoded, Pretrained, UsageError, at_least, domain_map
from harness.nn.fbank import KaldiFbank as Fbank
from harness.nn.state_dicts import swap_prefix

__all__ = ["SIZES", "Beats", "BeatsArch", "BeatsFbank", "relative_position_bucket"]

FBANK_MEAN = 15.41663
FBANK_STD = 6.55582
SAMPLE_RATE = 16000
NUM_MEL_BINS = 128


@dataclass(frozen=True)
class BeatsArch:
    """Architecture of one size; field names are the keys of the published ``cfg``."""

    encoder_layers: int
    encoder_embed_dim: int
    encoder_ffn_embed_dim: int
    encoder_attention_heads: int
    embed_dim: int = 512
    input_patch_size: int = 16
    conv_bias: bool = False
    conv_pos: int = 128
    conv_pos_groups: int = 16
    num_buckets: int = 320
    max_distance: int = 800
    activation_fn: str = "gelu"
    layer_norm_first: bool = False
    deep_norm: bool = True
    relative_position_embedding: bool = True
    gru_rel_pos: bool = True

    @property
    def deep_norm_alpha(self) -> float:
        return (2 * self.encoder_layers) ** 0.25

    @property
    def deep_norm_beta(self) -> float:
        return (8 * self.encoder_layers) ** -0.25

    def num_params(self) -> int:
        """Parameter count of the encoder of this architecture."""
        e, d, f = self.embed_dim, self.encoder_embed_dim, self.encoder_ffn_embed_dim
        heads, k = self.encoder_attention_heads, self.conv_pos
        stem = e * self.input_patch_size**2 + (e if self.conv_bias else 0) + 2 * e
        stem += (e * d + d) if e != d else 0
        stem += d * (d // self.conv_pos_groups) * k + k + d + 2 * d + self.num_buckets * heads
        attention = 4 * (d * d + d) + (d // heads) * 8 + 8 + heads
        block = attention + 2 * d + (d * f + f) + (f * d + d) + 2 * d
        return stem + self.encoder_layers * block


SIZES: dict[str, BeatsArch] = {
    "tiny": BeatsArch(
        encoder_layers=2,
        encoder_embed_dim=64,
        encoder_ffn_embed_dim=256,
        encoder_attention_heads=2,
        embed_dim=128,
    ),
    "small": BeatsArch(
        encoder_layers=12,
        encoder_embed_dim=384,
        encoder_ffn_embed_dim=1536,
        encoder_attention_heads=6,
    ),
    "base": BeatsArch(
        encoder_layers=12,
        encoder_embed_dim=768,
        encoder_ffn_embed_dim=3072,
        encoder_attention_heads=12,
    ),
}

# Keys of the published cfg that change nothing in evaluation; written on export, never checked.
TRAINING_ONLY_CFG: dict[str, Any] = {
    "dropout": 0.0,
    "attention_dropout": 0.0,
    "activation_dropout": 0.0,
    "encoder_layerdrop": 0.0,
    "dropout_input": 0.0,
    "layer_wise_gradient_decay_ratio": 1.0,
    "finetuned_model": False,
    "predictor_dropout": 0.0,
    "predictor_class": 527,
}
RESIZABLE_CFG = ("max_distance",)
"""``cfg`` keys the model follows instead of checking (no tensor depends on them)."""
SET_ASIDE_PREFIXES = ("predictor.", "quantize.", "quantize_layer.", "tokenizer.")
PUBLISHED_MARKER = "encoder.layers."


# -- front-end ----------------------------------------------------------------


class BeatsFbank(nn.Module):
    """BEATs' preprocessing: waveforms ``[B, T]`` at 16 kHz to fbank ``[B, 1, T', 128]``.

    The fbank is torchaudio's ``compliance.kaldi.fbank`` with BEATs' arguments (and kaldi's
    defaults: povey window, no dither, snipped edges), computed for the whole batch at once by
    :class:`harness.nn.fbank.KaldiFbank` instead of clip by clip.
    """

    window_size = 400  # 25 ms

    def __init__(self) -> None:
        super().__init__()
        self.kaldi = Fbank(SAMPLE_RATE, NUM_MEL_BINS, window="povey", wave_scale=2.0**15)

    def forward(self, wave: Tensor) -> Tensor:
        if wave.ndim != 2 or wave.shape[-1] < self.window_size:
            raise DataError(
                f"beats front-end needs waveforms [B, T] with T >= {self.window_size} samples, "
                f"got shape {tuple(wave.shape)}"
            )
        return ((self.kaldi(wave) - FBANK_MEAN) / (2 * FBANK_STD)).unsqueeze(1)


# -- encoder modules ----------------------------------------------------------


def relative_position_bucket(
    relative_position: Tensor, num_buckets: int, max_distance: int
) -> Tensor:
    """Bidirectional T5-style buckets of ``key - query`` offsets, as BEATs computes them.

    Half the buckets hold positive offsets. In each half, offsets below a quarter of
    ``num_buckets`` get a bucket each; larger ones share log-spaced buckets up to
    ``max_distance``, beyond which all fall in the last bucket of the half.
    """
    half = num_buckets // 2
    max_exact = half // 2
    side = (relative_position > 0).long() * half
    distance = relative_position.abs()
    log_ratio = torch.log(distance.float().clamp(min=1) / max_exact) / math.log(
        max_distance / max_exact
    )
    far = (max_exact + (log_ratio * (half - max_exact)).long()).clamp(max=half - 1)
    return side + torch.where(distance < max_exact, distance, far)


class RelativePositionBias(nn.Module):
    """Learned bias per head and offset bucket, computed once and shared by all layers."""

    def __init__(self, num_buckets: int, max_distance: int, num_heads: int) -> None:
        super().__init__()
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.weight = nn.Parameter(torch.empty(num_buckets, num_heads))

    def forward(self, length: int) -> Tensor:
        """Bias ``[H, N, N]`` for a sequence of ``length`` tokens."""
        positions = torch.arange(length, device=self.weight.device)
        buckets = relative_position_bucket(
            positions[None, :] - positions[:, None], self.num_buckets, self.max_distance
        )
        return F.embedding(buckets, self.weight).permute(2, 0, 1)


class ConvPositionalEmbedding(nn.Module):
    """Weight-normalized grouped Conv1d over tokens (norm per kernel tap), trimmed, then GELU."""

    def __init__(self, dim: int, kernel_size: int, groups: int) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.groups = groups
        self.weight_v = nn.Parameter(torch.empty(dim, dim // groups, kernel_size))
        self.weight_g = nn.Parameter(torch.empty(1, 1, kernel_size))
        self.bias = nn.Parameter(torch.zeros(dim))

    @property
    def weight(self) -> Tensor:
        norm = torch.linalg.vector_norm(self.weight_v, dim=(0, 1), keepdim=True)
        return self.weight_v * (self.weight_g / norm)

    def forward(self, x: Tensor) -> Tensor:
        """Tokens ``[B, N, D]`` to their positional embedding ``[B, N, D]``."""
        y = F.conv1d(
            x.transpose(1, 2),
            self.weight,
            self.bias,
            padding=self.kernel_size // 2,
            groups=self.groups,
        )
        if self.kernel_size % 2 == 0:
            y = y[:, :, :-1]
        return F.gelu(y).transpose(1, 2)


class GatedRelPosAttention(nn.Module):
    """Multi-head self-attention whose relative position bias is gated per query and head."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.grep_linear = nn.Linear(self.head_dim, 8)
        self.grep_a = nn.Parameter(torch.ones(1, num_heads, 1, 1))

    def heads(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(
        self, x: Tensor, position_bias: Tensor, key_padding: Tensor | None = None
    ) -> Tensor:
        """``x`` ``[B, N, D]``, ``position_bias`` ``[H, N, N]``, ``key_padding`` ``[B, N]``
        (True: padded, never attended)."""
        b, n, d = x.shape
        q = self.heads(self.q_proj(x))
        k = self.heads(self.k_proj(x))
        v = self.heads(self.v_proj(x))
        gates = self.grep_linear(q).view(b, self.num_heads, n, 2, 4).sum(-1).sigmoid()
        gate_a, gate_b = gates.chunk(2, dim=-1)
        gate = gate_a * (gate_b * self.grep_a - 1.0) + 2.0
        bias = gate * position_bias
        if key_padding is not None:
            bias = bias.masked_fill(key_padding[:, None, None, :], float("-inf"))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, d))


class BeatsBlock(nn.Module):
    """Post-LN transformer layer with deep-norm residual scaling."""

    def __init__(self, arch: BeatsArch) -> None:
        super().__init__()
        dim = arch.encoder_embed_dim
        self.alpha = arch.deep_norm_alpha
        self.self_attn = GatedRelPosAttention(dim, arch.encoder_attention_heads)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, arch.encoder_ffn_embed_dim)
        self.fc2 = nn.Linear(arch.encoder_ffn_embed_dim, dim)
        self.final_layer_norm = nn.LayerNorm(dim)

    def forward(
        self, x: Tensor, position_bias: Tensor, key_padding: Tensor | None = None
    ) -> Tensor:
        attended = self.self_attn(x, position_bias, key_padding)
        x = self.self_attn_layer_norm(x * self.alpha + attended)
        return self.final_layer_norm(x * self.alpha + self.fc2(F.gelu(self.fc1(x))))


# -- the backbone -------------------------------------------------------------


# -- published checkpoints (--set backbone.pretrained=NAME; harness.registry.pretrained) -----------

# microsoft/unilm beats/README.md links (a read-only container SAS valid to 2033); no sha256
# is published, so the first download's hash is recorded and checked on every later use.
_BEATS_SAS = (
    "?sv=2020-08-04&st=2023-03-01T07%3A51%3A05Z&se=2033-03-02T07%3A51%3A00Z&sr=c&sp=rl"
    "&sig=QJXmSJG9DbMKf48UDIU1MfzIro8HQOf3sqlNXiflY1I%3D"
)
_BEATS_SHARE = "https://valle.blob.core.windows.net/share/BEATs"
_BEATS_PAGE = "https://github.com/microsoft/unilm/tree/master/beats"
PRETRAINED = {
    "beats-iter3": Pretrained(
        f"{_BEATS_SHARE}/BEATs_iter3.pt{_BEATS_SAS}",
        layout="beats",
        config={"size": "base"},
        page=_BEATS_PAGE,
        description="BEATs iter3, self-supervised on AudioSet-2M",
    ),
    "beats-iter3-plus-as2m": Pretrained(
        f"{_BEATS_SHARE}/BEATs_iter3_plus_AS2M.pt{_BEATS_SAS}",
        layout="beats",
        config={"size": "base"},
        page=_BEATS_PAGE,
        description="BEATs iter3+, self-supervised on AudioSet-2M",
    ),
}


class Beats(Backbone):
    """The BEATs encoder on BEATs' kaldi-fbank front-end."""

    name = "beats"
    description = (
        "BEATs encoder (Chen et al. 2022): conv patches, conv positional embedding, gated "
        "relative position bias, deep-norm post-LN; loads the published {'cfg', 'model'} format"
    )
    pretrained = PRETRAINED
    sample_rate = SAMPLE_RATE
    time_axis = -2
    stem_prefixes = (
        "patch_embedding.",
        "layer_norm.",
        "post_extract_proj.",
        "pos_conv.",
        "embed_norm.",
        "rel_pos_bias.",
    )
    sizes: ClassVar[dict[str, BeatsArch]] = SIZES

    @dataclass
    class Config:
        size: Literal["tiny", "small", "base"] = "tiny"
        """``base`` is the published encoder (12 layers, 768 dims, 12 heads)."""
        checkpoint: str = ""
        """A published BEATs checkpoint ``{'cfg', 'model'}`` or a harness-saved backbone."""
        max_distance: int = 800
        """Relative-position distance of the last bucket (published iter3: 800; unilm's class
        default: 1280); a loaded checkpoint's ``cfg`` sets it."""

        domains = domain_map(max_distance=at_least(1, "Distance of the last relative bucket."))

        def __post_init__(self) -> None:
            if self.max_distance < 2:
                raise ValueError(f"max_distance must be at least 2, got {self.max_distance}")

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        arch = replace(SIZES[config.size], max_distance=config.max_distance)
        self.arch = arch
        self.embed_dim = arch.encoder_embed_dim
        patch = arch.input_patch_size
        self.patch_embedding = nn.Conv2d(
            1, arch.embed_dim, kernel_size=patch, stride=patch, bias=arch.conv_bias
        )
        self.layer_norm = nn.LayerNorm(arch.embed_dim)
        self.post_extract_proj = (
            nn.Linear(arch.embed_dim, self.embed_dim)
            if arch.embed_dim != self.embed_dim
            else nn.Identity()
        )
        self.pos_conv = ConvPositionalEmbedding(self.embed_dim, arch.conv_pos, arch.conv_pos_groups)
        self.embed_norm = nn.LayerNorm(self.embed_dim)
        self.rel_pos_bias = RelativePositionBias(
            arch.num_buckets, arch.max_distance, arch.encoder_attention_heads
        )
        self.blocks = nn.ModuleList(BeatsBlock(arch) for _ in range(arch.encoder_layers))
        self.reset_parameters()

    def checkpoint_source(self) -> str:
        return self.config.checkpoint

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """BEATs' initialization: BERT-style normal(0.02), then deep-norm Xavier gains."""
        arch = self.arch
        std = math.sqrt(4 / (arch.conv_pos * self.embed_dim))
        nn.init.normal_(self.pos_conv.weight_v, mean=0.0, std=std)
        self.pos_conv.weight_g.copy_(
            torch.linalg.vector_norm(self.pos_conv.weight_v, dim=(0, 1), keepdim=True)
        )
        nn.init.zeros_(self.pos_conv.bias)
        nn.init.normal_(self.rel_pos_bias.weight, std=0.02)
        for block in self.blocks:
            for module in block.modules():
                if isinstance(module, nn.Linear):
                    nn.init.normal_(module.weight, std=0.02)
                    nn.init.zeros_(module.bias)
            attn = block.self_attn
            beta = arch.deep_norm_beta
            for linear, gain in (
                (attn.q_proj, 1.0),
                (attn.k_proj, 1.0),
                (attn.v_proj, beta),
                (attn.out_proj, beta),
                (block.fc1, beta),
                (block.fc2, beta),
            ):
                nn.init.xavier_normal_(linear.weight, gain=gain)

    @classmethod
    def describe_extra(cls) -> list[str]:
        """One line per size for ``harness list backbones``."""
        lines = [
            "input: mono 16 kHz waveform -> kaldi fbank [B, 1, T, 128] (time first, "
            "T = 1 + (samples - 400) // 160), 16x16 patches: T // 16 x 8 tokens"
        ]
        for name, arch in SIZES.items():
            lines.append(
                f"size {name}: {arch.encoder_layers} layers x {arch.encoder_embed_dim} dims, "
                f"{arch.encoder_attention_heads} heads, FFN {arch.encoder_ffn_embed_dim}, "
                f"patches to {arch.embed_dim}, {arch.num_params() / 1e6:.2f}M parameters, "
                f"embedding [B, {arch.encoder_embed_dim}] (mean of tokens)"
            )
        return lines

    def frontend(self) -> nn.Module:
        return BeatsFbank()

    def forward(self, features: Tensor, padding_mask: Tensor | None = None) -> Encoded:
        """Normalized fbank ``[B, 1, T, 128]`` to tokens ``[B, T // 16 * 8, D]`` and their mean.

        ``padding_mask`` ``[B, T']`` (True: padding) over waveform samples or fbank frames, as
        BEATs' ``extract_features`` takes it: reduced to tokens by :func:`forward_padding_mask`,
        padded tokens are zeroed before the positional convolution, never attended, and left
        out of the embedding's mean.
        """
        patch = self.arch.input_patch_size
        if features.ndim != 4 or features.shape[-2] < patch or features.shape[-1] != NUM_MEL_BINS:
            raise DataError(
                f"beats needs features [B, 1, T >= {patch}, {NUM_MEL_BINS}] "
                f"(at least 0.17 s of audio), got shape {tuple(features.shape)}"
            )
        x = self.patch_embedding(features).flatten(2).transpose(1, 2)
        x = self.post_extract_proj(self.layer_norm(x))
        mask = None
        if padding_mask is not None:
            if padding_mask.shape[1] != features.shape[2]:
                padding_mask = forward_padding_mask(features.shape[2], padding_mask)
            mask = forward_padding_mask(x.shape[1], padding_mask)
            x = x.masked_fill(mask[..., None], 0.0)
        x = self.embed_norm(x + self.pos_conv(x))
        position_bias = self.rel_pos_bias(x.shape[1])
        for block in self.blocks:
            x = block(x, position_bias, mask)
        if mask is None:
            return Encoded(embedding=x.mean(dim=1), tokens=x)
        keep = (~mask).to(x.dtype)[..., None]
        return Encoded(embedding=(x * keep).sum(1) / keep.sum(1).clamp_min(1.0), tokens=x)

    # -- checkpoints ------------------------------------------------------------

    def published_cfg(self) -> dict[str, Any]:
        """The ``cfg`` of the published checkpoint format for this size."""
        return {**asdict(self.arch), **TRAINING_ONLY_CFG}

    def published_checkpoint(self) -> dict[str, Any]:
        """This model as ``{'cfg', 'model'}`` in the key layout of the published BEATs files."""
        return {"cfg": self.published_cfg(), "model": to_published_keys(self.state_dict())}

    def check_checkpoint(self, checkpoint: Any) -> None:
        """Check the ``cfg`` of a loaded published checkpoint (anything else passes)."""
        if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get("cfg"), Mapping):
            self.check_cfg(checkpoint["cfg"])

    def adapt_state_dict(self, state_dict: Mapping[str, Any]) -> dict[str, Tensor]:
        """Unwrap ``{'cfg', 'model'}`` (checking ``cfg``), set aside predictor and tokenizer keys,
        and map the published key layout onto this module's; harness-saved dicts pass through."""
        if isinstance(state_dict.get("model"), Mapping):
            self.check_checkpoint(state_dict)
            state_dict = state_dict["model"]
        kept = {k: v for k, v in state_dict.items() if not k.startswith(SET_ASIDE_PREFIXES)}
        if any(k.startswith(PUBLISHED_MARKER) for k in kept):
            return from_published_keys(kept)
        return kept

    def follow_max_distance(self, cfg: Mapping[str, Any]) -> None:
        """Build the relative-position buckets with the checkpoint's ``max_distance``."""
        distance = cfg.get("max_distance")
        if isinstance(distance, int) and distance != self.arch.max_distance:
            if distance < 2:
                raise UsageError(f"beats checkpoint cfg has max_distance={distance}, need >= 2")
            self.arch = replace(self.arch, max_distance=distance)
            self.rel_pos_bias.max_distance = distance

    def check_cfg(self, cfg: Mapping[str, Any]) -> None:
        """Raise a :class:`UsageError` when an architecture key of ``cfg`` differs from ours.

        ``max_distance`` changes no tensor shape: the model takes the checkpoint's value.
        """
        ours = asdict(self.arch)
        differing = [k for k in ours if k in cfg and cfg[k] != ours[k] and k not in RESIZABLE_CFG]
        if not differing:
            self.follow_max_distance(cfg)
            return
        details = ", ".join(
            f"{k}={cfg[k]!r} (size '{self.config.size}': {ours[k]!r})" for k in differing
        )
        matching = [
            name
            for name, arch in SIZES.items()
            if all(
                cfg[k] == v for k, v in asdict(arch).items() if k in cfg and k not in RESIZABLE_CFG
            )
        ]
        hint = (
            f"; use --set backbone.size={matching[0]}"
            if matching
            else "; no beats size has this architecture"
        )
        raise UsageError(f"beats checkpoint cfg does not match: {details}{hint}")


def forward_padding_mask(length: int, padding_mask: Tensor) -> Tensor:
    """BEATs' reduction of a padding mask ``[B, M]`` to ``length`` steps: trailing entries that
    do not fill a step are dropped, and a step is padding when all its entries are."""
    extra = padding_mask.shape[1] % length
    if extra:
        padding_mask = padding_mask[:, :-extra]
    return padding_mask.reshape(padding_mask.shape[0], length, -1).all(-1)


def to_published_keys(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Project key layout to the published one (the shared bias is repeated under every layer)."""
    num_layers = 1 + max(int(k.split(".")[1]) for k in state_dict if k.startswith("blocks."))
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if key == "rel_pos_bias.weight":
            for i in range(num_layers):
                out[f"encoder.layers.{i}.self_attn.relative_attention_bias.weight"] = value
            continue
        out[swap_prefix(key, KEY_PREFIXES)] = value
    return out


def from_published_keys(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Published key layout to the project's; the bias is read from layer 0, its owner there."""
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if key.endswith("self_attn.relative_attention_bias.weight"):
            if key.startswith("encoder.layers.0."):
                out["rel_pos_bias.weight"] = value
            continue
        out[swap_prefix(key, KEY_PREFIXES, reverse=True)] = value
    return out


# (project prefix, published prefix)
KEY_PREFIXES = (
    ("blocks.", "encoder.layers."),
    ("pos_conv.", "encoder.pos_conv.0."),
    ("embed_norm.", "encoder.layer_norm."),
)


@hookimpl
def register_backbones(register) -> None:
    register(Beats)
