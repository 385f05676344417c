"""Shared evaluation helpers: the cache keys' exact recipes, the cache entry's files, and
which clips EvalContext.labeled_embeddings embeds."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from harness.api import Clip, DataSplits, EvalContext
from harness.data.embeddings import (
    Embedder,
    backbone_fingerprint,
    cached_embed,
    clips_fingerprint,
    embedding_cache_dir,
)
from harness.util.cache import DONE_MARKER
from harness.util.errors import UsageError


@dataclass
class PathConfig:
    weights: Path = Path("/models/a.pt")
    size: int = 2


class Holder(torch.nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        self.config = config
        self.linear = torch.nn.Linear(2, 1)
        self.register_buffer("empty", torch.zeros(0))
        with torch.no_grad():
            self.linear.weight.copy_(torch.tensor([[0.25, -1.0]]))
            self.linear.bias.fill_(3.0)


def recipe(module: torch.nn.Module, config_text: str) -> str:
    """The documented key: class, configuration, then name:dtype:shape and bytes of every
    tensor of the state dict in name order."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{Holder.__module__}.{Holder.__qualname__}".encode())
    digest.update(config_text.encode())
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def test_backbone_fingerprint_is_the_documented_recipe():
    dataclass_config = Holder(PathConfig())
    expected = recipe(dataclass_config, '{"size": 2, "weights": "/models/a.pt"}')
    assert backbone_fingerprint(dataclass_config) == expected
    other_path = Holder(PathConfig(weights=Path("/models/b.pt")))
    assert backbone_fingerprint(other_path) != expected
    plain = Holder({"size": 2})
    assert backbone_fingerprint(plain) == recipe(plain, "{'size': 2}")
    a_class = Holder(PathConfig)  # a dataclass type, not an instance: its repr
    assert backbone_fingerprint(a_class) == recipe(a_class, repr(PathConfig))


def test_clip_and_cache_keys_are_32_hex_digits(tmp_path):
    wav = tmp_path / "a.wav"
    wav.write_bytes(b"RIFF")
    key = clips_fingerprint([Clip(wav, 0)])
    assert len(key) == 32 and int(key, 16) >= 0
    ctx = Embedder(
        DataSplits(["c"], [], [Clip(wav, 0)], clip_seconds=1.0),
        SimpleNamespace(sample_rate=16000),
        embed=lambda split: torch.zeros(1, 1),
    )
    assert len(embedding_cache_dir(ctx, "eval", "h").name) == 32


def labeled_ctx(train_labels, eval_labels):
    calls: list[str] = []
    rows = {"train": torch.arange(len(train_labels)), "eval": 10 + torch.arange(len(eval_labels))}

    def embed(split, cache=True):
        calls.append((split, cache))
        return rows[split].float().unsqueeze(1).repeat(1, 2)

    splits = DataSplits(
        ["a", "b", "c"],
        train=[Clip(Path(f"t{i}"), lab) for i, lab in enumerate(train_labels)],
        eval=[Clip(Path(f"e{i}"), lab) for i, lab in enumerate(eval_labels)],
        clip_seconds=1.0,
    )
    ctx = EvalContext(
        backbone=None, method=None, task=None, splits=splits, torch_device=torch.device("cpu"),
        batch_size=2, seed=0, audio=None, predict=None, embed=embed, train=None, infer=None,
    )  # fmt: skip
    return ctx, calls


def test_labeled_embeddings_leave_out_unlabeled_clips_and_unlabeled_splits():
    ctx, calls = labeled_ctx([0, -1, 2], [1, 1])
    emb, labels = ctx.labeled_embeddings("train", "linear")
    assert emb[:, 0].tolist() == [0.0, 2.0] and labels.tolist() == [0, 2]
    assert labels.dtype == torch.long and emb.dtype == torch.float32
    assert calls == [("train", True)]
    emb, labels = ctx.labeled_embeddings("all", "linear", cache=False)
    assert emb[:, 0].tolist() == [0.0, 2.0, 10.0, 11.0] and labels.tolist() == [0, 2, 1, 1]
    assert calls[1:] == [("train", False), ("eval", False)]
    ctx, calls = labeled_ctx([-1, -1], [0])
    emb, labels = ctx.labeled_embeddings("all", "linear")
    assert emb[:, 0].tolist() == [10.0] and calls == [("eval", True)]  # train is not embedded
    with pytest.raises(UsageError, match="^fewshot: the 'train' split has no labeled clips$"):
        ctx.labeled_embeddings("train", "fewshot")


def test_a_cache_entry_holds_the_embeddings_and_a_readable_info_file(tmp_path):
    wav = tmp_path / "a.wav"
    wav.write_bytes(b"RIFF")
    clips = [Clip(wav, 0), Clip(wav, 1)]
    ctx = Embedder(
        DataSplits(["a", "b"], [], clips, clip_seconds=1.0),
        SimpleNamespace(sample_rate=16000, name=""),  # no name: its class's name
        embed=lambda split: torch.arange(6.0).reshape(2, 3),
    )
    assert torch.equal(cached_embed(ctx, "eval", "h"), torch.arange(6.0).reshape(2, 3))
    folder = embedding_cache_dir(ctx, "eval", "h")
    assert sorted(p.name for p in folder.iterdir()) == [DONE_MARKER, "embeddings.pt", "info.json"]
    info = {"split": "eval", "clips": 2, "dim": 3, "backbone": "SimpleNamespace"}
    assert (folder / "info.json").read_text() == json.dumps(info, indent=2) + "\n"
