"""N-way K-shot few-shot classification by the nearest class centroid (prototypical).

Following uaMix-MAE (Section 4, after Ericsson et al., CVPR 2021): the encoder
is frozen, every clip is embedded once, and each episode draws N classes, K
support and Q query clips per class; a query gets the class whose support mean
(centroid) is nearest. The score is the mean accuracy over the episodes (600
by default) with a 95% confidence interval of ``1.96 * std / sqrt(episodes)``
(population std over episodes), both in percent.

All episodes are sampled at once (random keys + ``topk``) and evaluated as
batched tensor operations: a gather of the support and query embeddings,
centroids by a mean, scores by a batched matrix product.

Embeddings are cached on disk by the core (:meth:`EvalContext.embed`), keyed by a hash of
the backbone's weights and configuration and of the clip list, so a rerun with the same
encoder and data skips the encoder.
"""

from __future__ import annotations

import hashlib
import itertools
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from harness import hookimpl
from harness.api import (
    PERCENT,
    Column,
    DataError,
    DataSplits,
    EvalContext,
    Method,
    Protocol,
    ProtocolResult,
    UsageError,
    at_least,
    domain_map,
)

Distance = Literal["euclidean", "cosine"]
CHUNK_BYTES = 2**21
"""Gathered query embeddings per batched step: small enough to stay in the CPU cache
between the gather and the matrix product (results do not depend on it)."""
MAX_NAMED = 10


# -- trainable parameters -----------------------------------------------------


def trainable_parameters(*modules: torch.nn.Module) -> int:
    """#TP of seed 003's Table 2: parameters the run's last stage trained (``requires_grad``),
    backbone and method heads together, each shared tensor once."""
    seen = {
        id(p): p.numel()
        for m in modules
        if isinstance(m, torch.nn.Module)
        for p in m.parameters()
        if p.requires_grad
    }
    return sum(seen.values())


# -- classes ------------------------------------------------------------------


def read_class_file(path: Path, root: Path | None, classes: list[str]) -> list[str]:
    """Class names, one per line, from ``path`` (relative paths may be under the data set root)."""
    if not path.is_absolute() and not path.exists() and root is not None and (root / path).exists():
        path = root / path
    if not path.is_file():
        raise DataError(f"fewshot: class split file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError) as err:
        raise DataError(f"fewshot: cannot read class split file {path}: {err}") from None
    names = [line.strip() for line in text.splitlines()]
    names = [n for n in names if n and not n.startswith("#")]
    if not names:
        raise DataError(f"fewshot: class split file {path} lists no classes")
    unknown = [n for n in names if n not in set(classes)]
    if unknown:
        raise DataError(
            f"fewshot: class split file {path} names unknown classes: {name_list(unknown)}"
        )
    return names


def name_list(names: Sequence[str]) -> str:
    shown = ", ".join(names[:MAX_NAMED])
    return shown + (f" and {len(names) - MAX_NAMED} more" if len(names) > MAX_NAMED else "")


def eligible_classes(
    labels: Tensor, allowed: Sequence[int], needed: int
) -> tuple[list[int], list[int]]:
    """``(kept, excluded)`` class indices among ``allowed``: kept ones have ``needed`` clips."""
    counts = torch.bincount(labels, minlength=max(allowed, default=-1) + 1)
    kept = [c for c in allowed if counts[c] >= needed]
    excluded = [c for c in allowed if counts[c] < needed]
    return kept, excluded


# -- episodes -----------------------------------------------------------------


@dataclass(frozen=True)
class Episodes:
    """Sampled episodes; every index refers to a row of the embedding matrix."""

    classes: Tensor
    """``[E, N]`` class indices (into the list of candidate classes)."""
    support: Tensor
    """``[E, N, K]`` clip indices; ``support[e, n]`` belong to class ``classes[e, n]``."""
    query: Tensor
    """``[E, N, Q]`` clip indices."""


def class_members(labels: Tensor, classes: Sequence[int]) -> list[Tensor]:
    """The row indices of each class's clips (labels are non-negative class indices)."""
    order = torch.argsort(labels, stable=True)
    counts = torch.bincount(labels, minlength=max(classes, default=-1) + 1)
    groups = torch.split(order, counts.tolist())
    return [groups[c] for c in classes]


def sample_episodes(
    members: Sequence[Tensor],
    n_way: int,
    k_shot: int,
    queries: int,
    episodes: int,
    generator: torch.Generator,
) -> Episodes:
    """Draw all episodes at once: N distinct classes, then K + Q distinct clips per class.

    Both draws take the smallest of uniform random keys (``topk``), which gives a
    uniformly random subset in random order; padded slots get keys above 1.
    """
    per_class = k_shot + queries
    counts = torch.tensor([len(m) for m in members])
    if len(members) < n_way or int(counts.min()) < per_class:
        raise ValueError("not enough classes or clips for the episode shape")
    table = torch.full((len(members), int(counts.max())), -1, dtype=torch.long)
    for row, member in enumerate(members):
        table[row, : len(member)] = member
    class_keys = torch.rand(episodes, len(members), generator=generator)
    chosen = class_keys.topk(n_way, dim=1, largest=False).indices
    clip_keys = torch.rand(episodes, n_way, table.shape[1], generator=generator)
    padded = torch.arange(table.shape[1]) >= counts[chosen].unsqueeze(-1)
    clip_keys.masked_fill_(padded, 2.0)
    slots = clip_keys.topk(per_class, dim=2, largest=False).indices
    clips = table[chosen.unsqueeze(-1), slots]
    return Episodes(chosen, clips[..., :k_shot], clips[..., k_shot:])


def episode_accuracies(
    embeddings: Tensor, episodes: Episodes, distance: Distance = "euclidean"
) -> Tensor:
    """Accuracy ``[E]`` of the nearest-centroid classifier in each episode (batched)."""
    if distance not in ("euclidean", "cosine"):
        raise ValueError(f"unknown distance {distance!r}")
    x = embeddings.float()
    if distance == "euclidean":
        x = x - x.mean(dim=0)  # distances are unchanged; float32 products are better conditioned
    total, n_way, n_query = episodes.query.shape
    truth = torch.arange(n_way).repeat_interleave(n_query)
    accuracies = torch.empty(total, dtype=torch.float64)
    chunk = max(1, CHUNK_BYTES // (n_way * n_query * x.shape[1] * x.element_size()))
    for start in range(0, total, chunk):
        stop = min(start + chunk, total)
        support = episodes.support[start:stop]
        count = stop - start
        centroids = x.index_select(0, support.reshape(-1)).view(*support.shape, -1).mean(dim=2)
        query = x.index_select(0, episodes.query[start:stop].reshape(-1)).view(
            count, n_way * n_query, -1
        )
        if distance == "euclidean":
            # argmin |q - c|^2 = argmax 2 q.c - |c|^2 (|q|^2 is the same for every class)
            bias = -(centroids * centroids).sum(-1).unsqueeze(1)
            scores = torch.baddbmm(bias, query, centroids.transpose(1, 2), alpha=2.0)
        else:
            scores = torch.bmm(
                F.normalize(query, dim=-1), F.normalize(centroids, dim=-1).transpose(1, 2)
            )
        accuracies[start:stop] = (scores.argmax(dim=-1) == truth).double().mean(dim=-1)
    return accuracies


def confidence_interval(accuracies: Tensor) -> float:
    """Half-width of the 95% interval: ``1.96 * std / sqrt(n)`` (population std)."""
    acc = accuracies.double()
    return float(1.96 * acc.std(unbiased=False) / acc.numel() ** 0.5)


def episode_seed(seed: int, n_way: int, k_shot: int, queries: int) -> int:
    """A seed per episode shape, so adding a sweep does not change the other results."""
    text = f"fewshot:{seed}:{n_way}:{k_shot}:{queries}".encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") >> 1


# -- the protocol -------------------------------------------------------------


@dataclass
class FewshotScore:
    n_way: int
    k_shot: int
    accuracy: float
    ci: float
    classes: int


class Fewshot(Protocol):
    name = "fewshot"
    description = (
        "N-way K-shot episodes on frozen embeddings, nearest class centroid; "
        "mean accuracy (%) and 95% CI over episodes."
    )
    columns: ClassVar[list[Column]] = [
        Column("acc", "accuracy", "few-shot", True, error_key="ci", unit=PERCENT),
        Column("ci", "95% CI", "few-shot", unit=PERCENT),
        Column("tp_m", "#TP", unit="M"),
    ]
    primary: ClassVar[str | None] = "acc"
    """Runs are ranked by accuracy whatever the column order (``#TP`` may come first)."""
    default_dataset = "fewshot-embedded"
    cli_flags: ClassVar[dict[str, str]] = {"--sweep-n": "sweep_n", "--sweep-k": "sweep_k"}

    @dataclass
    class Config:
        n_way: int = 5
        k_shot: int = 1
        queries: int = 15
        """Query clips per class and episode."""
        episodes: int = 600
        distance: Distance = "euclidean"
        """``euclidean`` (squared) or ``cosine`` (1 - cosine to the centroid)."""
        split: Literal["eval", "train", "all"] = "eval"
        """Clips to draw episodes from (``all``: train and eval; unlabeled clips are skipped).
        One ESC-50 fold has 8 clips per class, fewer than K + Q: use ``all`` there."""
        classes_file: Path | None = None
        """Only the classes listed in this file (one name per line), e.g. a test class split."""
        sweep_n: list[int] = field(default_factory=list)
        """Also evaluate these N (with every K of ``sweep_k``), e.g. 5,10,15."""
        sweep_k: list[int] = field(default_factory=list)
        """Also evaluate these K (with every N of ``sweep_n``), e.g. 1,5,10."""
        cache: bool = True
        """Keep embeddings on disk, keyed by the backbone's weights and the clips."""

        domains = domain_map(
            n_way=at_least(2, "Classes per episode (N)."),
            k_shot=at_least(1, "Support clips per class (K)."),
            queries=at_least(1, "Query clips per class and episode."),
            episodes=at_least(1, "Episodes averaged."),
            sweep_n=at_least(2, "Also evaluate these N (with every K of sweep_k)."),
            sweep_k=at_least(1, "Also evaluate these K (with every N of sweep_n)."),
        )

        def __post_init__(self) -> None:
            for n in (self.n_way, *self.sweep_n):
                if n < 2:
                    raise ValueError(f"N (n_way, sweep_n) must be at least 2, got {n}")
            for k in (self.k_shot, *self.sweep_k):
                if k < 1:
                    raise ValueError(f"K (k_shot, sweep_k) must be at least 1, got {k}")
            if self.queries < 1 or self.episodes < 1:
                raise ValueError("queries and episodes must be at least 1")

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.warned: set[str] = set()
        """Exclusion warnings already given (by :meth:`check`), not repeated by :meth:`score`."""

    def check(self, splits: DataSplits, method: Method) -> None:
        """Refuse, before training, an episode shape the labeled clips cannot fill."""
        cfg = self.config
        parts = ["train", "eval"] if cfg.split == "all" else [cfg.split]
        labels = torch.tensor(
            [c.label for part in parts for c in splits.split(part) if c.label >= 0],
            dtype=torch.long,
        )
        if labels.numel() == 0:
            raise UsageError(f"{self.name}: the '{cfg.split}' split has no labeled clips")
        allowed = self.allowed_classes(labels, splits.classes, splits.root)
        for n_way, k_shot in self.grid():
            self.eligible(labels, allowed, splits.classes, n_way, k_shot)

    def allowed_classes(self, labels: Tensor, names: list[str], root: Path | None) -> list[int]:
        """Classes present in ``labels``, restricted to ``classes_file`` when one is given."""
        allowed = sorted(set(labels.tolist()))
        if self.config.classes_file is not None:
            wanted = set(read_class_file(Path(self.config.classes_file), root, names))
            allowed = [c for c in allowed if names[c] in wanted]
        return allowed

    def eligible(
        self, labels: Tensor, allowed: list[int], names: list[str], n_way: int, k_shot: int
    ) -> list[int]:
        """Classes with K + Q clips (a warning names the others); an error below N of them."""
        needed = k_shot + self.config.queries
        kept, excluded = eligible_classes(labels, allowed, needed)
        if excluded:
            message = (
                f"fewshot: excluded {len(excluded)} classes with fewer than {needed} clips "
                f"(K={k_shot} + Q={self.config.queries}): "
                f"{name_list([names[c] for c in excluded])}"
            )
            if message not in self.warned:
                self.warned.add(message)
                warnings.warn(message, stacklevel=3)
        if len(kept) < n_way:
            raise UsageError(
                f"fewshot: {n_way}-way {k_shot}-shot needs {n_way} classes with at least "
                f"{needed} clips (K + Q), but only {len(kept)} have that many"
            )
        return kept

    def grid(self) -> list[tuple[int, int]]:
        """``(N, K)`` pairs to evaluate: the main one first, then the sweep."""
        cfg = self.config
        sweep = itertools.product(cfg.sweep_n or [cfg.n_way], cfg.sweep_k or [cfg.k_shot])
        return list(dict.fromkeys([(cfg.n_way, cfg.k_shot), *sweep]))

    def evaluate(self, ctx: EvalContext) -> ProtocolResult:
        cfg = self.config
        embeddings, labels = ctx.labeled_embeddings(cfg.split, self.name, cfg.cache)
        names = ctx.splits.classes
        allowed = self.allowed_classes(labels, names, ctx.splits.root)
        scores = [
            self.score(embeddings, labels, allowed, names, n_way, k_shot, ctx.seed)
            for n_way, k_shot in self.grid()
        ]
        metrics: dict[str, float] = {
            "acc": scores[0].accuracy,
            "ci": scores[0].ci,
            "classes": scores[0].classes,
            "tp_m": trainable_parameters(ctx.backbone, ctx.method) / 1e6,
        }
        for s in scores:
            metrics[f"acc_{s.n_way}way{s.k_shot}shot"] = s.accuracy
            metrics[f"ci_{s.n_way}way{s.k_shot}shot"] = s.ci
        return ProtocolResult(metrics, self.table(scores))

    def score(
        self,
        embeddings: Tensor,
        labels: Tensor,
        allowed: list[int],
        names: list[str],
        n_way: int,
        k_shot: int,
        seed: int,
    ) -> FewshotScore:
        cfg = self.config
        kept = self.eligible(labels, allowed, names, n_way, k_shot)
        generator = torch.Generator().manual_seed(episode_seed(seed, n_way, k_shot, cfg.queries))
        members = class_members(labels, kept)
        episodes = sample_episodes(members, n_way, k_shot, cfg.queries, cfg.episodes, generator)
        accuracies = episode_accuracies(embeddings, episodes, cfg.distance)
        return FewshotScore(
            n_way,
            k_shot,
            100 * float(accuracies.double().mean()),
            100 * confidence_interval(accuracies),
            len(kept),
        )

    def table(self, scores: list[FewshotScore]) -> str:
        cfg = self.config
        lines = ["| N-way | K-shot | accuracy (%) |", "|---:|---:|---:|"]
        lines += [f"| {s.n_way} | {s.k_shot} | {s.accuracy:.2f} ± {s.ci:.2f} |" for s in scores]
        lines.append("")
        lines.append(
            f"{cfg.episodes} episodes, {cfg.queries} queries per class, {cfg.distance} distance, "
            f"split '{cfg.split}', {scores[0].classes} classes; ± is the 95% CI."
        )
        return "\n".join(lines)


@hookimpl
def register_protocols(register) -> None:
    register(Fewshot)
