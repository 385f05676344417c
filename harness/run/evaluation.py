"""The protocols' step in a run: predictions and embeddings through the engine's one
inference call, validation, and the :class:`harness.api.EvalContext` the protocols get."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from harness.api import Batch, EvalContext
from harness.data.embeddings import Embedder
from harness.engine.trainer import Engine, FitHooks
from harness.run.components import RunParts
from harness.util.errors import UsageError
from harness.util.files import write_text_atomic

KEPT_KEY = re.compile(r"[A-Za-z0-9._-]+")


class Evaluation:
    """Evaluates the run's trained backbone and method: validation and the protocols.

    ``partial_dir()`` is the run's in-progress folder (None before it is known), where
    :meth:`kept` keeps protocols' finished parts under ``prefix`` (``ema-`` for the moving
    average's evaluation)."""

    def __init__(
        self,
        parts: RunParts,
        engine: Engine,
        partial_dir: Callable[[], Path | None] = lambda: None,
        prefix: str = "",
    ) -> None:
        self.parts, self.engine = parts, engine
        self._embeddings: dict[str, Tensor] = {}
        self.partial_dir, self.prefix = partial_dir, prefix

    def kept(self, key: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """``compute()``, or its result kept by an earlier, killed try of this run (JSON in
        ``OUT/.partial/<run id>/protocols/``, written atomically by the main process)."""
        folder = self.partial_dir()
        if folder is None:
            return compute()
        if not KEPT_KEY.fullmatch(key):
            raise UsageError(f"kept result key {key!r}: letters, digits, '.', '_', '-' only")
        path = folder / "protocols" / f"{self.prefix}{key}.json"
        if path.is_file():
            try:
                return json.loads(path.read_text())
            except (OSError, ValueError):
                pass  # a damaged file: computed again
        result = compute()
        if self.parts.ranks.is_main:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(path, json.dumps(result, allow_nan=False))
        return result

    def forward_split(self, split: str, what: str, forward: Callable[[Batch], Tensor]) -> Tensor:
        """``forward`` of every clip of ``split`` (the models in evaluation mode)."""
        parts = self.parts
        parts.backbone.eval()
        parts.method.eval()
        batch_size = parts.cfg.run.eval_batch_size
        loader = parts.loader(split, batch_size, train=False)
        return self.engine.infer(
            forward,
            loader,
            batch_size,
            parts.frontend,
            desc=f"{what} {split}",
            rows=len(loader.audio),
        )

    def predict(self, split: str) -> Tensor:
        """Class probabilities ``[N, C]`` of the split's clips, on the CPU."""
        backbone, method = self.parts.backbone, self.parts.method
        return self.forward_split(
            split,
            "predicting",
            lambda batch: torch.softmax(method.logits(backbone(batch.features)).float(), dim=-1),
        )

    def embeddings(self, split: str) -> Tensor:
        """Clip embeddings ``[N, D]`` of the split, on the CPU (kept in memory)."""
        if split not in self._embeddings:
            backbone = self.parts.backbone
            self._embeddings[split] = self.forward_split(
                split, "embedding", lambda batch: backbone(batch.features).embedding.float()
            )
        return self._embeddings[split]

    def validate(self) -> dict[str, float]:
        """Loss (NLL) and accuracy (%) on the validation split; training RNGs untouched."""
        device = self.parts.device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            probs = self.predict("valid")
        labels = self.parts.audio("valid").labels
        keep = labels >= 0
        probs, labels = probs[keep], labels[keep]
        picked = probs[torch.arange(len(labels)), labels].clamp_min(1e-12)
        return {
            "valid_loss": float(-picked.log().mean()),
            "valid_acc": float((probs.argmax(1) == labels).float().mean() * 100),
        }

    def infer(
        self, forward: Callable[[Batch], Tensor], data: Any, frontend: nn.Module | None = None
    ) -> Tensor:
        """The engine's inference call at the run's evaluation batch size (protocols)."""
        return self.engine.infer(forward, data, self.parts.cfg.run.eval_batch_size, frontend)

    def context(self) -> EvalContext:
        """What the protocols get: the trained model, the data, the trainer and inference."""
        parts = self.parts
        return EvalContext(
            backbone=parts.backbone,
            method=parts.method,
            task=parts.task,
            splits=parts.splits,
            torch_device=parts.device,
            batch_size=parts.cfg.run.eval_batch_size,
            seed=parts.cfg.run.seed,
            audio=parts.audio,
            predict=self.predict,
            embed=Embedder(
                parts.splits, parts.backbone, self.embeddings, split_keys=parts.file_free_splits()
            ).cached,
            train=lambda spec: self.engine.fit(spec, FitHooks(log=parts.log)),
            infer=self.infer,
            kept=self.kept,
        )

    def evaluate(self) -> tuple[dict[str, float], dict[str, str]]:
        """Every protocol's metrics (prefixed with its name) and table."""
        ctx = self.context()
        metrics: dict[str, float] = {}
        tables: dict[str, str] = {}
        for protocol in self.parts.protocols:
            result = protocol.evaluate(ctx)
            metrics.update({f"{protocol.name}/{k}": float(v) for k, v in result.metrics.items()})
            tables[protocol.name] = result.table
        return metrics, tables
