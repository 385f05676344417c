"""Full fine-tuning with layer-wise learning-rate decay (uaMix-MAE Table 4, after AudioMAE).

A copy of the trained backbone (every parameter trainable) gets a fresh
classification head and is fine-tuned on the labeled train split with AdamW,
layer-wise learning-rate decay (``lr * layer_decay ** depth from the top``, via
:meth:`harness.api.Backbone.param_groups`), linear warm-up and cosine decay. The run's own
backbone is left untouched. The training runs through the core's engine
(:meth:`EvalContext.fit`), so it uses the run's device, precision and processes and appears
in ``metrics.jsonl`` as ``stage_name = "finetune"``.

Single-label data: cross-entropy, scored by the accuracy (%) on the eval split. Multi-label
data (AudioSet): binary cross-entropy on the multi-hot targets, scored by mAP, mAUC and
d-prime on the eval split (``_multilabel.py``), with the train split's class frequencies as
the prior baseline (``prior_map``). Training-time mixup (of features and targets) and
SpecAugment frequency and time masks apply when their options are above 0.

On a data set with published cross-validation folds (ESC-50; :attr:`DataSplits.fold_key`),
``folds = "all"`` (the default) runs the whole cross-validation in one run: for each fold a
fresh copy of the run's backbone (same weights, same head initialisation) is fine-tuned on the
other folds and scored on that fold; the metrics are the means over the folds, with each
fold's score (``acc/fold1``) and the across-fold std (``acc/std``). ``folds = "3"`` runs fold
3 alone. Each finished fold's result is kept in the run's in-progress folder
(:attr:`EvalContext.kept`): a run killed during fold 3 and resumed fine-tunes folds 3-5 only.

``recipe`` picks AudioMAE's published fine-tuning values for a Table 4 data set
(``audioset-20k``, ``esc50``, ``scv2``, ``voxceleb1``; docs/defaults.md lists them with
their sources) or for the unbalanced AudioSet-2M (``audioset-2m``: 200k clips per epoch
drawn by label weight, the core's ``label-weighted`` sampler); ``small`` (the default)
keeps CPU runs short. An option set explicitly overrides its recipe value; the resolved
values are recorded with the run.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
from dataclasses import dataclass, fields
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
import torchaudio
from torch import Tensor, nn

from harness import hookimpl
from harness.api import (
    PERCENT,
    Backbone,
    Batch,
    Column,
    DataSplits,
    Domain,
    EvalContext,
    Method,
    ProtocolResult,
    Sampling,
    SplitAudio,
    StepOutput,
    TrainingJob,
    UsageError,
    at_least,
    between,
    domain_map,
    non_negative,
)
from harness_plugins.protocols._common import LabeledProtocol, accuracy_column, one_row_table
from harness_plugins.protocols._multilabel import multi_label_scores, prior_scores

Recipe = Literal["small", "audioset-20k", "audioset-2m", "esc50", "scv2", "voxceleb1"]

RECIPES: dict[str, dict[str, float]] = {
    # The harness's CPU-sized values (the defaults before recipes existed).
    "small": dict(
        epochs=3, batch_size=16, lr=5e-4, layer_decay=0.75, weight_decay=0.05,
        warmup_fraction=0.1, mixup=0.0, freqm=0, timem=0,
    ),
    # AudioMAE ft_as.sh + main_finetune_as.py: 60 epochs, 8 clips x 4 GPUs, blr 1e-3
    # (lr = blr * 32 / 256), warmup 4 epochs, mixup 0.5, freqm 48, timem 192, BCE.
    "audioset-20k": dict(
        epochs=60, batch_size=32, lr=1e-3 * 32 / 256, layer_decay=0.75, weight_decay=5e-4,
        warmup_fraction=4 / 60, mixup=0.5, freqm=48, timem=192,
    ),
    # AudioMAE submit_ft_mask_bal.sh (train_all.json): 100 epochs, 4 clips x 64 GPUs (8 nodes),
    # blr 1e-3 (lr = blr * 256 / 256), warmup 10 epochs; mixup, masks, decays as above; the
    # label-weighted sampler of RECIPE_SAMPLING.
    "audioset-2m": dict(
        epochs=100, batch_size=256, lr=1e-3 * 256 / 256, layer_decay=0.75, weight_decay=5e-4,
        warmup_fraction=10 / 100, mixup=0.5, freqm=48, timem=192,
    ),
    # Unverified against a published script (docs/defaults.md): the AudioMAE paper's values.
    "esc50": dict(
        epochs=60, batch_size=32, lr=1e-3 * 32 / 256, layer_decay=0.75, weight_decay=5e-4,
        warmup_fraction=4 / 60, mixup=0.0, freqm=48, timem=96,
    ),
    "scv2": dict(
        epochs=60, batch_size=32, lr=1e-3 * 32 / 256, layer_decay=0.75, weight_decay=5e-4,
        warmup_fraction=4 / 60, mixup=0.5, freqm=48, timem=48,
    ),
    "voxceleb1": dict(
        epochs=60, batch_size=32, lr=1e-3 * 32 / 256, layer_decay=0.75, weight_decay=5e-4,
        warmup_fraction=4 / 60, mixup=0.0, freqm=48, timem=192,
    ),
}  # fmt: skip

RECIPE_SAMPLING: dict[str, Sampling] = {
    # AudioMAE main_finetune_as.py with --weight_sampler True --epoch_len 200000
    # --replacement False: WeightedRandomSampler over gen_weight.py's per-clip label weights.
    "audioset-2m": Sampling("label-weighted", samples_per_epoch=200_000, replacement=False),
}
"""Recipes that draw each epoch by label weight instead of every clip once."""


def recipe_sampling(recipe: str, train: SplitAudio) -> Sampling:
    """The recipe's sampling for ``train``: its epoch length at most the labeled clips
    there are (a draw without replacement cannot give more; AudioSet-2M has 2M)."""
    sampling = RECIPE_SAMPLING.get(recipe, Sampling())
    if sampling.kind == "uniform" or train.targets is None:
        return sampling
    labeled = int((train.targets.sum(dim=1) > 0).sum())
    return dataclasses.replace(sampling, samples_per_epoch=min(sampling.samples_per_epoch, labeled))


def optimizer_groups(
    model: Backbone, head: nn.Module, lr: float, layer_decay: float, weight_decay: float
) -> list[dict]:
    """The backbone's layer-wise groups plus the head at the full learning rate."""
    groups = model.param_groups(lr, layer_decay, weight_decay)
    groups.append(
        {
            "params": list(head.parameters()),
            "lr": lr,
            "weight_decay": weight_decay,
            "layer": model.num_layers + 1,
        }
    )
    return groups


class Classifier(nn.Module):
    """The fine-tuned backbone and its head; one training step is cross-entropy on a batch
    (binary cross-entropy on the multi-hot targets of multi-label data), after mixup and
    SpecAugment masks when they are configured."""

    def __init__(
        self,
        backbone: Backbone,
        head: nn.Module,
        num_classes: int = 0,
        mixup: float = 0.0,
        freqm: int = 0,
        timem: int = 0,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.num_classes = num_classes
        """Classes of the head (needed for mixup of single-label targets)."""
        self.mixup = mixup
        self.masks = spec_masks(freqm, timem, backbone.time_axis)

    def forward(self, batch: Batch) -> StepOutput:
        features = batch.features
        if self.masks is not None:
            features = self.masks(features)
        if batch.target is None and self.mixup == 0:
            return StepOutput(F.cross_entropy(self.logits(features), batch.label))
        if batch.target is not None:
            target = batch.target
        else:
            target = F.one_hot(batch.label, self.num_classes)
        target = target.to(features.dtype)
        if self.mixup > 0:
            features, target = mix(features, target, self.mixup)
        logits = self.logits(features)
        if batch.target is None:
            return StepOutput(torch.sum(-target * F.log_softmax(logits, -1), -1).mean())
        return StepOutput(F.binary_cross_entropy_with_logits(logits, target))

    def logits(self, features: Tensor) -> Tensor:
        return self.head(self.backbone(features))


def mix(features: Tensor, target: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
    """Mixup within a batch (each clip with the batch reversed, as timm's ``Mixup``):
    ``lam ~ Beta(alpha, alpha)`` for the features and the (multi-hot or one-hot) targets."""
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    return (
        lam * features + (1 - lam) * features.flip(0),
        lam * target + (1 - lam) * target.flip(0),
    )


def spec_masks(freqm: int, timem: int, time_axis: int) -> nn.Module | None:
    """SpecAugment frequency and time masks (torchaudio, a mask per clip) for features with
    time on ``time_axis`` (-1: ``[B, 1, F, T]``, -2: ``[B, 1, T, F]``); None when both are 0."""
    if freqm == 0 and timem == 0:
        return None
    masks = []
    if freqm:
        masks.append(torchaudio.transforms.FrequencyMasking(freqm, iid_masks=True))
    if timem:
        masks.append(torchaudio.transforms.TimeMasking(timem, iid_masks=True))
    return TimeLast(nn.Sequential(*masks)) if time_axis == -2 else nn.Sequential(*masks)


class TimeLast(nn.Module):
    """Runs ``inner`` on ``[B, 1, F, T]`` features given as ``[B, 1, T, F]``."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, features: Tensor) -> Tensor:
        return self.inner(features.transpose(-1, -2)).transpose(-1, -2)


class Finetune(LabeledProtocol):
    name = "finetune"
    description = (
        "Full fine-tuning of a copy of the backbone with a fresh head and layer-wise "
        "learning-rate decay; accuracy (%) on the eval split."
    )
    columns: ClassVar[list[Column]] = [
        Column("tp_m", "#TP", unit="M"),
        accuracy_column("fine-tuning"),
        Column("map", "mAP", "fine-tuning", higher_is_better=True, unit=PERCENT),
        Column("mauc", "mAUC", "fine-tuning", higher_is_better=True, unit=PERCENT),
        Column("dprime", "d-prime", "fine-tuning", higher_is_better=True),
        Column("prior_map", "mAP", "prior baseline", higher_is_better=True, unit=PERCENT),
    ]
    label_kind = "either"

    @dataclass
    class Config:
        recipe: Recipe = "small"
        """AudioMAE's fine-tuning values for a Table 4 data set, or ``small`` for a CPU; the
        options below left unset (None) take the recipe's value."""
        epochs: int | None = None
        batch_size: int | None = None
        lr: float | None = None
        """Learning rate of the head and the top block; lower blocks get decayed rates."""
        layer_decay: float | None = None
        weight_decay: float | None = None
        warmup_fraction: float | None = None
        """Share of the steps with a linearly rising learning rate."""
        mixup: float | None = None
        """Beta(alpha, alpha) of mixup of features and targets within a batch (0: off)."""
        freqm: int | None = None
        """SpecAugment: widest frequency mask in bins (0: off)."""
        timem: int | None = None
        """SpecAugment: widest time mask in frames (0: off)."""
        select: Literal["last", "best"] = "last"
        """The model scored: after the last epoch, or after the epoch with the best score
        (mAP, or accuracy for single-label data) on ``valid_fraction`` of the train clips,
        held out from training."""
        valid_fraction: float = 0.1
        """With ``select = best``: the share of train clips held out for selection."""
        folds: str = "all"
        """On a data set with published cross-validation folds (ESC-50's five): ``all``
        fine-tunes a fresh copy of the backbone per fold on the other folds and scores it on
        that fold (the mean over folds, each fold's score and the across-fold std); a fold's
        name as a string (e.g. ``"1"``) runs that fold alone. Data sets without folds: their
        train and eval splits."""

        domains = domain_map(
            epochs=at_least(1, "Fine-tuning epochs."),
            batch_size=at_least(1, "Fine-tuning batch size."),
            lr=Domain(gt=0, le=10, help="Peak learning rate."),
            layer_decay=Domain(gt=0, le=1, help="Layer-wise learning-rate decay."),
            weight_decay=non_negative("Weight decay."),
            warmup_fraction=between(0, 1, "Share of the steps with linear warmup.", open_high=True),
            mixup=non_negative("Mixup alpha (0: off)."),
            freqm=non_negative("Widest SpecAugment frequency mask in bins (0: off)."),
            timem=non_negative("Widest SpecAugment time mask in frames (0: off)."),
            valid_fraction=between(0, 1, "Share of train clips held out (select=best).", True),
        )

        def __post_init__(self) -> None:
            if self.recipe not in RECIPES:
                raise ValueError(f"unknown recipe {self.recipe!r} (recipes: {', '.join(RECIPES)})")
            for option in fields(self):
                if option.name != "recipe" and getattr(self, option.name) is None:
                    setattr(self, option.name, RECIPES[self.recipe][option.name])
            if self.epochs < 1 or self.batch_size < 1:
                raise ValueError("epochs and batch_size must be at least 1")
            if self.lr <= 0:
                raise ValueError(f"lr must be positive, got {self.lr}")
            if not 0 < self.layer_decay <= 1:
                raise ValueError(f"layer_decay must be in (0, 1], got {self.layer_decay}")
            if not 0 <= self.warmup_fraction < 1:
                raise ValueError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
            if self.mixup < 0 or self.freqm < 0 or self.timem < 0:
                raise ValueError("mixup, freqm and timem must not be negative")
            if not 0 < self.valid_fraction < 1:
                raise ValueError(f"valid_fraction must be in (0, 1), got {self.valid_fraction}")
            self.folds = str(self.folds).strip()
            if not self.folds:
                raise ValueError("folds must be 'all' or a fold's name, got an empty string")

    def check(self, splits: DataSplits, method: Method) -> None:
        """Single-label data: labeled train and eval clips of two classes; multi-label data:
        clips with a label set in both splits; a fold named in ``folds`` exists."""
        fold_names(splits, self.config.folds, self.name)
        if not splits.multi_label:
            super().check(splits, method)
            return
        for split in ("train", "eval"):
            if not any(clip.labels for clip in splits.split(split)):
                raise UsageError(f"{self.name}: the '{split}' split has no labeled clips")

    def evaluate(self, ctx: EvalContext) -> ProtocolResult:
        if ctx.splits.multi_label:
            train, evaluation = ctx.audio("train"), ctx.audio("eval")
        else:
            train = ctx.labeled_audio("train", self.name)
            evaluation = ctx.labeled_audio("eval", self.name)
        if len(ctx.splits.classes) < 2:
            raise UsageError(f"{self.name}: the data set has fewer than two classes")
        folds = fold_names(ctx.splits, self.config.folds, self.name)
        if not folds:
            metrics, row = self.finetune(ctx, train, evaluation)
            return ProtocolResult(metrics, one_row_table(row))
        every_clip = train.join(evaluation)
        key = ctx.splits.fold_key
        clip_folds = [clip.meta.get(key, "") for clip in every_clip.clips]
        per_fold: dict[str, dict[str, float]] = {}
        rows = []
        for fold in folds:
            held = torch.tensor([name == fold for name in clip_folds])
            rows_in, rows_out = (~held).nonzero()[:, 0], held.nonzero()[:, 0]
            if len(rows_in) == 0 or len(rows_out) == 0:
                raise UsageError(f"{self.name}: fold {fold} leaves no clips to train or to score")
            train, scored = subset(every_clip, rows_in), subset(every_clip, rows_out)
            kept = ctx.kept(  # a resumed run does not fine-tune a finished fold again
                f"{self.name}-fold{fold}",
                functools.partial(self.fold_result, ctx, train, scored, f"fold{fold}"),
            )
            per_fold[fold] = kept["metrics"]
            rows.append({"fold": fold, **kept["row"]})
        return ProtocolResult(fold_metrics(per_fold), markdown_table(rows))

    def fold_result(
        self, ctx: EvalContext, train: SplitAudio, evaluation: SplitAudio, stage: str
    ) -> dict[str, dict]:
        """One fold's metrics and table row, as :attr:`EvalContext.kept` keeps them."""
        metrics, row = self.finetune(ctx, train, evaluation, stage)
        return {"metrics": metrics, "row": row}

    def finetune(
        self, ctx: EvalContext, train: SplitAudio, evaluation: SplitAudio, stage: str = ""
    ) -> tuple[dict[str, float], dict[str, str]]:
        """Fine-tune a fresh copy of the run's backbone on ``train`` and score it on
        ``evaluation``: the metrics and the result table's row. Every call starts from the
        same weights (the run's backbone, a head drawn from the run's seed)."""
        multi_label = ctx.splits.multi_label
        num_classes = len(ctx.splits.classes)
        cfg = self.config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(ctx.seed)
            model = copy.deepcopy(ctx.backbone)  # the run's own backbone stays as it is
            model.requires_grad_(True)
            head = model.build_head(num_classes)
            classifier = Classifier(model, head, num_classes, cfg.mixup, cfg.freqm, cfg.timem)
        frontend = model.frontend()
        selection = None
        if cfg.select == "best":
            train, held_out = hold_out(train, cfg.valid_fraction, ctx.seed, self.name)
            selection = BestEpoch(ctx, classifier, frontend, held_out, multi_label)
        sampling = recipe_sampling(cfg.recipe, train)
        result = ctx.fit(
            TrainingJob(
                name=f"{self.name}-{stage}" if stage else self.name,
                model=classifier,
                data=train,
                epochs=cfg.epochs,
                batch_size=cfg.batch_size,
                lr=cfg.lr,
                optimizer="adamw",
                weight_decay=cfg.weight_decay,
                param_groups=optimizer_groups(
                    model, classifier.head, cfg.lr, cfg.layer_decay, cfg.weight_decay
                ),
                schedule="cosine",
                warmup_fraction=cfg.warmup_fraction,
                frontend=frontend,
                seed=ctx.seed,
                validate=selection,
                sampling=sampling,
            )
        )
        final_loss = result.epoch_losses[-1]
        if selection is not None:
            selection.restore()
        row = {
            "recipe": cfg.recipe,
            "epochs": f"{cfg.epochs}",
            "train clips": f"{len(train)}",
            "eval clips": f"{len(evaluation)}",
            "final train loss": f"{final_loss:.4f}",
        }
        if sampling.kind != "uniform":
            row["sampler"] = describe_sampling(sampling)
        if multi_label:
            metrics = multi_label_metrics(ctx, classifier, frontend, train, evaluation)
            row["eval mAP (%)"] = f"{metrics['map']:.2f}"
            row["prior mAP (%)"] = f"{metrics['prior_map']:.2f}"
            row["mAUC (%)"] = f"{metrics.get('mauc', math.nan):.2f}"
            undefined = math.inf if "mauc" in metrics else math.nan
            row["d-prime"] = f"{metrics.get('dprime', undefined):.3f}"
        else:
            metrics = {"acc": 100 * accuracy(ctx, classifier, frontend, evaluation)}
            row["eval acc (%)"] = f"{metrics['acc']:.2f}"
        metrics["train_loss"] = final_loss
        if selection is not None:
            metrics["best_epoch"] = float(selection.best_epoch)
            row["selected epoch"] = f"{selection.best_epoch}"
        metrics["tp_m"] = sum(p.numel() for p in classifier.parameters() if p.requires_grad) / 1e6
        return metrics, row


def fold_names(splits: DataSplits, folds: str, who: str) -> list[str]:
    """The published folds to cross-validate over (``folds``: ``all`` or one fold's name), in
    their natural order; empty for a data set without folds (``folds = all``)."""
    if not splits.fold_key:
        if folds != "all":
            raise UsageError(f"{who}: folds={folds!r}, but the data set publishes no folds")
        return []
    names = {clip.meta.get(splits.fold_key, "") for clip in (*splits.train, *splits.eval)}
    if "" in names:
        raise UsageError(f"{who}: a clip has no '{splits.fold_key}' (its cross-validation fold)")
    ordered = sorted(names, key=lambda name: (len(name), name))  # 2 before 10
    if folds == "all":
        if len(ordered) < 2:
            raise UsageError(f"{who}: cross-validation needs two folds, the data has {ordered}")
        return ordered
    if folds not in names:
        raise UsageError(f"{who}: folds={folds!r} is not a fold of the data ({', '.join(ordered)})")
    return [folds]


FOLD_SCORES = ("acc", "map", "mauc", "dprime", "prior_map")
"""The scores reported per fold (``acc/fold1``) and as their std across folds (``acc/std``)."""


def fold_metrics(per_fold: dict[str, dict[str, float]]) -> dict[str, float]:
    """Cross-validation metrics: each metric's mean over the folds (under its own name), each
    fold's score (``acc/fold1``) and the scores' std across folds (``acc/std``, ddof 1, as
    ``numpy.std(..., ddof=1)``; with two folds or more)."""
    keys = set.intersection(*(set(metrics) for metrics in per_fold.values()))
    out: dict[str, float] = {}
    for key in sorted(keys):
        values = torch.tensor([metrics[key] for metrics in per_fold.values()], dtype=torch.float64)
        out[key] = float(values.mean())
        if key in FOLD_SCORES:
            out.update({f"{key}/fold{fold}": m[key] for fold, m in per_fold.items()})
            if len(values) > 1:
                out[f"{key}/std"] = float(values.std(correction=1))
    out["folds"] = float(len(per_fold))
    return out


def markdown_table(rows: list[dict[str, str]]) -> str:
    """A right-aligned Markdown table of ``rows`` (the first row's keys as its header)."""
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    lines += ["| " + " | ".join(row.get(key, "") for key in header) + " |" for row in rows]
    return "\n".join(lines)


def describe_sampling(sampling: Sampling) -> str:
    if sampling.kind == "uniform":
        return "uniform"
    again = "with" if sampling.replacement else "without"
    return f"{sampling.kind}, {sampling.samples_per_epoch} clips/epoch {again} replacement"


def hold_out(
    audio: SplitAudio, fraction: float, seed: int, who: str
) -> tuple[SplitAudio, SplitAudio]:
    """``audio`` split at random (seeded) into the clips trained on and ``fraction`` held out."""
    count = round(fraction * len(audio))
    if count < 1 or count >= len(audio):
        raise UsageError(
            f"{who}: valid_fraction {fraction} of {len(audio)} train clips holds out none or all"
        )
    order = torch.randperm(len(audio), generator=torch.Generator().manual_seed(seed))
    return subset(audio, order[count:].sort().values), subset(audio, order[:count].sort().values)


def subset(audio: SplitAudio, rows: Tensor) -> SplitAudio:
    """The clips ``rows`` of ``audio`` (waveforms, labels, devices and targets)."""
    return dataclasses.replace(
        audio,
        clips=[audio.clips[i] for i in rows.tolist()],
        wave=audio.wave[rows],
        labels=audio.labels[rows],
        devices=audio.devices[rows],
        targets=None if audio.targets is None else audio.targets[rows],
    )


class BestEpoch:
    """Model selection for :class:`Finetune`: after every epoch, scores the classifier on the
    held-out clips (mAP or accuracy, %) and keeps a copy of its weights when the score is the
    best so far; :meth:`restore` loads the best weights back."""

    def __init__(
        self,
        ctx: EvalContext,
        classifier: Classifier,
        frontend: nn.Module,
        held_out: SplitAudio,
        multi_label: bool,
    ) -> None:
        self.ctx, self.classifier, self.frontend = ctx, classifier, frontend
        self.held_out, self.multi_label = held_out, multi_label
        self.epoch = 0
        self.best_epoch = 0
        self.best_score = -math.inf
        self.best_state: dict[str, Tensor] = {}

    def __call__(self) -> dict[str, float]:
        self.epoch += 1
        score = self.score()
        if score > self.best_score:
            self.best_score, self.best_epoch = score, self.epoch
            self.best_state = {
                k: v.detach().to("cpu", copy=True) for k, v in self.classifier.state_dict().items()
            }
        return {"valid_map" if self.multi_label else "valid_acc": score}

    def score(self) -> float:
        self.classifier.eval()
        if not self.multi_label:
            return 100 * accuracy(self.ctx, self.classifier, self.frontend, self.held_out)
        logits = self.ctx.infer(
            lambda batch: self.classifier.logits(batch.features), self.held_out, self.frontend
        )
        targets = self.held_out.targets.numpy()
        if not targets.any():
            raise UsageError("finetune: the held-out clips have no label (raise valid_fraction)")
        return 100 * multi_label_scores(torch.sigmoid(logits).numpy(), targets).mean_ap

    def restore(self) -> None:
        """Load the best epoch's weights into the classifier."""
        self.classifier.load_state_dict(self.best_state)


def multi_label_metrics(
    ctx: EvalContext,
    classifier: Classifier,
    frontend: nn.Module,
    train: SplitAudio,
    evaluation: SplitAudio,
) -> dict[str, float]:
    """mAP, mAUC (%) and d-prime of the classifier on ``evaluation``, and the mAP (%) of the
    prior baseline (every clip scored with the train split's class frequencies)."""
    classifier.to(ctx.torch_device).eval()
    logits = ctx.infer(lambda batch: classifier.logits(batch.features), evaluation, frontend)
    targets = evaluation.targets.numpy()
    scores = multi_label_scores(torch.sigmoid(logits).numpy(), targets)
    prior = multi_label_scores(prior_scores(train.targets.numpy(), len(targets)), targets)
    metrics = {
        "map": 100 * scores.mean_ap,
        "mauc": 100 * scores.mean_auc,
        "dprime": scores.d_prime,
        "prior_map": 100 * prior.mean_ap,
        "classes_scored": float(scores.classes_scored),
    }
    # mAUC is undefined without negatives and d-prime infinite at mAUC 100%: left out, not
    # stored as NaN or inf (the result table shows them)
    return {key: value for key, value in metrics.items() if math.isfinite(value)}


def accuracy(
    ctx: EvalContext, classifier: Classifier, frontend: nn.Module, audio: SplitAudio
) -> float:
    """Share of ``audio``'s clips the classifier labels right (through the run's inference)."""
    classifier.to(ctx.torch_device).eval()
    logits = ctx.infer(lambda batch: classifier.logits(batch.features), audio, frontend)
    return int((logits.argmax(dim=-1) == audio.labels).sum()) / len(audio)


@hookimpl
def register_protocols(register) -> None:
    register(Finetune)
