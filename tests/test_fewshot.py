"""The few-shot protocol on embeddings with known answers, against a per-episode loop."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.neighbors import NearestCentroid
from torch import nn

from harness.api import Backbone, Clip, DataSplits, EvalContext, Task
from harness.data import embeddings as evaluation
from harness.engine.trainer import standalone_services
from harness.registry.config import build_dataclass
from harness.registry.plugins import Plugins, new_plugin_manager
from harness.util.errors import DataError, UsageError
from harness_plugins.protocols import fewshot
from harness_plugins.protocols.fewshot import (
    Fewshot,
    class_members,
    confidence_interval,
    eligible_classes,
    episode_accuracies,
    episode_seed,
    sample_episodes,
)


class TinyBackbone(Backbone):
    name = "tiny"
    description = "two linear blocks"
    sample_rate = 16000

    def __init__(self, config=None) -> None:
        super().__init__(config)
        self.embed_dim = 4
        self.blocks = nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 4)])


def not_used(split: str):
    raise AssertionError(f"the protocol must not read audio or predictions ({split})")


class FakeRun:
    """An EvalContext whose ``embed`` returns given tensors and counts its calls."""

    def __init__(
        self,
        embeddings: dict[str, torch.Tensor],
        labels: dict[str, list[int]],
        classes: list[str],
        seed: int = 0,
        root: Path | None = None,
        paths: dict[str, list[Path]] | None = None,
        backbone: Backbone | None = None,
    ) -> None:
        self.embeddings = embeddings
        self.calls: list[str] = []
        clips = {}
        for split in ("train", "eval"):
            split_labels = labels.get(split, [])
            split_paths = (paths or {}).get(split) or [
                Path(f"/nonexistent/{split}/{i}.wav") for i in range(len(split_labels))
            ]
            clips[split] = [
                Clip(path=p, label=int(y)) for p, y in zip(split_paths, split_labels, strict=True)
            ]
        splits = DataSplits(classes, clips["train"], clips["eval"], clip_seconds=1.0, root=root)
        backbone = backbone or TinyBackbone()
        self.ctx = EvalContext(
            backbone=backbone,
            method=None,
            task=Task(classes, [], 16000),
            splits=splits,
            torch_device=torch.device("cpu"),
            batch_size=8,
            seed=seed,
            audio=not_used,
            predict=not_used,
            embed=evaluation.Embedder(splits, backbone, self.embed).cached,
            **standalone_services(torch.device("cpu"), 8),
        )

    def embed(self, split: str) -> torch.Tensor:
        self.calls.append(split)
        return self.embeddings[split]


def protocol(**options) -> Fewshot:
    options.setdefault("cache", False)
    return Fewshot(Fewshot.Config(**options))


def clustered(classes: int, per_class: int, dim: int = 32, spread: float = 0.01, seed: int = 0):
    """Embeddings of tight, far-apart clusters (one per class) and their labels."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat_interleave(per_class)
    centers = 10 * torch.eye(max(classes, dim))[:classes, :dim]
    return centers[labels] + spread * torch.randn(len(labels), dim, generator=gen), labels


def random_embeddings(classes: int, per_class: int, dim: int = 64, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat_interleave(per_class)
    return torch.randn(len(labels), dim, generator=gen), labels


def eval_run(embeddings, labels, classes=None, **kw) -> FakeRun:
    names = classes or [f"class{i}" for i in range(int(labels.max()) + 1)]
    return FakeRun({"eval": embeddings}, {"eval": labels.tolist()}, names, **kw)


# -- known answers ------------------------------------------------------------


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_separable_embeddings_score_100_percent(distance):
    embeddings, labels = clustered(classes=12, per_class=20)
    result = protocol(distance=distance, episodes=200).evaluate(eval_run(embeddings, labels).ctx)
    assert result.metrics["acc"] == 100.0
    assert result.metrics["ci"] == 0.0
    assert result.metrics["classes"] == 12


@pytest.mark.parametrize(
    ("n_way", "distance"), [(5, "euclidean"), (10, "euclidean"), (5, "cosine")]
)
def test_random_embeddings_score_chance(n_way, distance):
    embeddings, labels = random_embeddings(classes=30, per_class=30)
    result = protocol(n_way=n_way, distance=distance).evaluate(eval_run(embeddings, labels).ctx)
    chance = 100 / n_way
    assert result.metrics["ci"] > 0
    assert abs(result.metrics["acc"] - chance) < 3 * result.metrics["ci"]


def test_confidence_interval_hand_example():
    # mean 0.8125; squared deviations sum to 0.171875; population std sqrt(0.04296875)
    accuracies = torch.tensor([1.0, 0.5, 0.75, 1.0])
    assert confidence_interval(accuracies) == pytest.approx(
        1.96 * 0.2072890493972125 / 2, abs=1e-12
    )


def test_reported_accuracy_and_ci_follow_the_formula():
    embeddings, labels = random_embeddings(classes=10, per_class=20, seed=3)
    run = eval_run(embeddings, labels, seed=7)
    result = protocol(episodes=300).evaluate(run.ctx)
    generator = torch.Generator().manual_seed(episode_seed(7, 5, 1, 15))
    episodes = sample_episodes(class_members(labels, range(10)), 5, 1, 15, 300, generator)
    per_episode = episode_accuracies(embeddings, episodes).double().numpy()
    assert result.metrics["acc"] == pytest.approx(100 * per_episode.mean(), abs=1e-9)
    expected_ci = 100 * 1.96 * per_episode.std(ddof=0) / math.sqrt(300)
    assert result.metrics["ci"] == pytest.approx(expected_ci, abs=1e-9)


def test_deterministic_given_seed():
    embeddings, labels = random_embeddings(classes=15, per_class=20)
    first = protocol().evaluate(eval_run(embeddings, labels, seed=1).ctx).metrics
    again = protocol().evaluate(eval_run(embeddings, labels, seed=1).ctx).metrics
    other = protocol().evaluate(eval_run(embeddings, labels, seed=2).ctx).metrics
    assert first == again
    assert first["acc"] != other["acc"]


# -- batched episodes against a per-episode loop ------------------------------


def loop_accuracies(embeddings: np.ndarray, support, query, distance: str) -> np.ndarray:
    """The straightforward implementation: one episode at a time, in float64."""
    out = []
    for sup, qry in zip(support, query, strict=True):
        centroids = np.stack([embeddings[rows].mean(axis=0) for rows in sup])
        n_way, n_query = qry.shape
        points = embeddings[qry.reshape(-1)]
        if distance == "euclidean":
            dist = ((points[:, None, :] - centroids[None]) ** 2).sum(-1)
        else:
            cos = points @ centroids.T
            cos /= np.linalg.norm(points, axis=1)[:, None] * np.linalg.norm(centroids, axis=1)[None]
            dist = 1 - cos
        truth = np.repeat(np.arange(n_way), n_query)
        out.append((dist.argmin(axis=1) == truth).mean())
    return np.array(out)


def uneven_problem(seed: int = 0):
    """8 classes with 6-12 clips each, overlapping clusters in 16 dims."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(6, 13, size=8)
    labels = torch.from_numpy(np.repeat(np.arange(8), counts))
    centers = rng.normal(size=(8, 16))
    embeddings = centers[labels.numpy()] + 1.5 * rng.normal(size=(len(labels), 16))
    return torch.from_numpy(embeddings).float(), labels


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_batched_episodes_equal_a_per_episode_loop(distance):
    embeddings, labels = uneven_problem()
    generator = torch.Generator().manual_seed(0)
    episodes = sample_episodes(class_members(labels, range(8)), 4, 3, 3, 80, generator)
    batched = episode_accuracies(embeddings, episodes, distance).numpy()
    looped = loop_accuracies(
        embeddings.double().numpy(), episodes.support.numpy(), episodes.query.numpy(), distance
    )
    np.testing.assert_allclose(batched, looped, atol=1e-6)
    assert 0.3 < batched.mean() < 0.99  # a case with errors, so agreement means something


def test_euclidean_episodes_agree_with_sklearn_nearest_centroid():
    embeddings, labels = uneven_problem(seed=1)
    generator = torch.Generator().manual_seed(1)
    episodes = sample_episodes(class_members(labels, range(8)), 5, 2, 3, 30, generator)
    batched = episode_accuracies(embeddings, episodes).numpy()
    x = embeddings.double().numpy()
    for e in range(30):
        support = episodes.support[e].numpy()
        query = episodes.query[e].numpy()
        clf = NearestCentroid().fit(x[support.reshape(-1)], np.repeat(np.arange(5), 2))
        expected = (clf.predict(x[query.reshape(-1)]) == np.repeat(np.arange(5), 3)).mean()
        assert batched[e] == pytest.approx(expected)


def test_sampled_episodes_are_valid_and_uniform():
    labels = torch.from_numpy(np.repeat(np.arange(6), [5, 6, 7, 8, 9, 10]))
    members = class_members(labels, range(6))
    episodes = sample_episodes(members, 3, 2, 2, 3000, torch.Generator().manual_seed(0))
    assert episodes.classes.shape == (3000, 3)
    assert episodes.support.shape == (3000, 3, 2)
    assert episodes.query.shape == (3000, 3, 2)
    for e in range(0, 3000, 37):
        assert len(set(episodes.classes[e].tolist())) == 3
        rows = torch.cat([episodes.support[e], episodes.query[e]], dim=1)
        assert len(set(rows.flatten().tolist())) == 12
        for n, cls in enumerate(episodes.classes[e].tolist()):
            assert set(rows[n].tolist()) <= set(members[cls].tolist())
    class_counts = torch.bincount(episodes.classes.flatten(), minlength=6).double()
    assert torch.all((class_counts - 1500).abs() < 150)  # each class in half of the episodes
    biggest = (episodes.classes == 5).unsqueeze(-1)
    used = torch.cat([episodes.support, episodes.query], dim=2)[biggest.expand(-1, -1, 4)]
    clip_counts = torch.bincount(used - members[5][0], minlength=10).double()
    assert torch.all((clip_counts / clip_counts.sum() - 0.1).abs() < 0.02)


# -- classes ------------------------------------------------------------------


def test_class_with_too_few_clips_is_excluded_with_a_warning():
    embeddings, labels = clustered(classes=7, per_class=20)
    keep = ~((labels == 3) & (torch.arange(len(labels)) % 20 >= 5))  # class 3 keeps 5 clips
    names = ["dog", "rain", "siren", "tiny_class", "wind", "clock", "bird"]
    run = eval_run(embeddings[keep], labels[keep], classes=names)
    with pytest.warns(
        UserWarning, match=r"excluded 1 classes with fewer than 16 clips.*tiny_class"
    ):
        result = protocol().evaluate(run.ctx)
    assert result.metrics["classes"] == 6
    assert result.metrics["acc"] == 100.0


def test_too_few_classes_left_is_a_usage_error():
    embeddings, labels = clustered(classes=6, per_class=20)
    keep = (labels < 4) | (torch.arange(len(labels)) % 20 < 3)  # classes e and f have 3 clips
    with (
        pytest.warns(UserWarning, match="e, f"),
        pytest.raises(UsageError, match="5-way 1-shot needs 5 classes"),
    ):
        protocol().evaluate(eval_run(embeddings[keep], labels[keep], classes=list("abcdef")).ctx)
    with pytest.raises(UsageError, match="10-way"):
        protocol(n_way=10).evaluate(eval_run(*clustered(classes=6, per_class=20)).ctx)


def test_classes_file_restricts_the_classes(tmp_path):
    embeddings, labels = clustered(classes=10, per_class=20)
    names = [f"c{i}" for i in range(10)]
    keep = (labels < 5) | (torch.arange(len(labels)) % 20 < 3)  # classes 5-9 have 3 clips
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "test.txt").write_text("# test classes\nc0\nc1\nc2\n\nc3\nc4\n")
    run = eval_run(embeddings[keep], labels[keep], classes=names, root=tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the small classes are not candidates, so no warning
        result = protocol(classes_file=Path("splits/test.txt")).evaluate(run.ctx)
    assert result.metrics["classes"] == 5


def test_classes_file_with_unknown_class_is_a_data_error(tmp_path):
    embeddings, labels = clustered(classes=6, per_class=20)
    path = tmp_path / "val.txt"
    path.write_text("class0\nclass1\nnot_a_class\n")
    with pytest.raises(DataError, match=r"val.txt names unknown classes: not_a_class"):
        protocol(classes_file=path).evaluate(eval_run(embeddings, labels).ctx)
    with pytest.raises(DataError, match="not found"):
        protocol(classes_file=tmp_path / "missing.txt").evaluate(eval_run(embeddings, labels).ctx)


# -- splits, sweeps, config ---------------------------------------------------


def test_split_all_joins_train_and_eval_and_skips_unlabeled_pools():
    embeddings, labels = clustered(classes=6, per_class=20)
    first, second = torch.arange(len(labels)) % 2 == 0, torch.arange(len(labels)) % 2 == 1
    run = FakeRun(
        {"train": embeddings[first], "eval": embeddings[second]},
        {"train": labels[first].tolist(), "eval": labels[second].tolist()},
        [f"c{i}" for i in range(6)],
    )
    result = protocol(split="all").evaluate(run.ctx)  # 10 + 10 clips per class >= 16
    assert result.metrics["classes"] == 6 and result.metrics["acc"] == 100.0
    assert sorted(run.calls) == ["eval", "train"]
    pool = FakeRun(
        {"train": torch.zeros(4, 32), "eval": embeddings},
        {"train": [-1] * 4, "eval": labels.tolist()},
        [f"c{i}" for i in range(6)],
    )
    protocol(split="all").evaluate(pool.ctx)
    assert pool.calls == ["eval"]


def test_unlabeled_split_is_a_usage_error():
    run = FakeRun({"train": torch.zeros(4, 8)}, {"train": [-1] * 4, "eval": []}, [])
    with pytest.raises(UsageError, match="'train' split has no labeled clips"):
        protocol(split="train").evaluate(run.ctx)


def test_sweep_reports_every_n_and_k():
    embeddings, labels = random_embeddings(classes=20, per_class=30)
    p = protocol(sweep_n=[5, 10], sweep_k=[1, 5], episodes=50)
    result = p.evaluate(eval_run(embeddings, labels).ctx)
    for n, k in [(5, 1), (5, 5), (10, 1), (10, 5)]:
        assert f"acc_{n}way{k}shot" in result.metrics
        assert f"ci_{n}way{k}shot" in result.metrics
        assert f"| {n} | {k} |" in result.table
    assert result.metrics["acc"] == result.metrics["acc_5way1shot"]
    # the 5-way 1-shot episodes do not change when a sweep is added
    single = protocol(episodes=50).evaluate(eval_run(embeddings, labels).ctx)
    assert single.metrics["acc"] == result.metrics["acc"]


def test_config_strings_from_the_command_line():
    cfg = build_dataclass(
        Fewshot.Config, {"sweep_n": "5,10,15", "sweep_k": "1,5,10"}, "protocol.fewshot"
    )
    assert cfg.sweep_n == [5, 10, 15] and cfg.sweep_k == [1, 5, 10]
    grid = Fewshot(cfg).grid()
    assert grid[0] == (5, 1) and len(grid) == 9
    with pytest.raises(UsageError, match="at least 2"):
        build_dataclass(Fewshot.Config, {"n_way": "1"}, "protocol.fewshot")
    with pytest.raises(UsageError, match="not one of"):
        build_dataclass(Fewshot.Config, {"distance": "manhattan"}, "protocol.fewshot")


def test_registered_as_a_protocol():
    pm = new_plugin_manager()
    pm.register(fewshot, name="fewshot")
    entry = Plugins(pm)["protocol"].get("fewshot")
    assert entry.cls is Fewshot
    assert [c.key for c in Fewshot.columns] == ["acc", "ci", "tp_m"]


# -- on-disk embedding cache --------------------------------------------------


def cached_run(tmp_path: Path, backbone: Backbone) -> FakeRun:
    embeddings, labels = clustered(classes=6, per_class=20)
    paths = []
    for i in range(len(labels)):
        path = tmp_path / "audio" / f"{i}.wav"
        path.parent.mkdir(exist_ok=True)
        if not path.exists():
            path.write_bytes(b"x")
        paths.append(path)
    return FakeRun(
        {"eval": embeddings},
        {"eval": labels.tolist()},
        [f"c{i}" for i in range(6)],
        paths={"eval": paths},
        backbone=backbone,
    )


def test_embedding_cache_skips_the_encoder_when_weights_and_clips_are_unchanged(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    backbone = TinyBackbone()
    first = cached_run(tmp_path, backbone)
    metrics = protocol(cache=True).evaluate(first.ctx).metrics
    assert first.calls == ["eval"]
    done = list((tmp_path / "cache" / "embeddings").glob("*/.done"))
    assert len(done) == 1

    rerun = cached_run(tmp_path, backbone)
    assert protocol(cache=True).evaluate(rerun.ctx).metrics == metrics
    assert rerun.calls == []

    with torch.no_grad():
        backbone.blocks[1].weight[0, 0] += 1.0
    tuned = cached_run(tmp_path, backbone)
    protocol(cache=True).evaluate(tuned.ctx)
    assert tuned.calls == ["eval"]

    (tmp_path / "audio" / "0.wav").write_bytes(b"another recording")
    edited = cached_run(tmp_path, backbone)
    protocol(cache=True).evaluate(edited.ctx)
    assert edited.calls == ["eval"]


def test_unfinished_cache_folder_is_recomputed(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    backbone = TinyBackbone()
    run = cached_run(tmp_path, backbone)
    embedder = evaluation.Embedder(run.ctx.splits, backbone, run.ctx.embed)
    folder = evaluation.embedding_cache_dir(
        embedder, "eval", evaluation.backbone_fingerprint(backbone)
    )
    folder.mkdir(parents=True)
    torch.save(torch.zeros(3, 3), folder / "embeddings.pt")  # no done marker: an interrupted write
    protocol(cache=True).evaluate(run.ctx)
    assert run.calls == ["eval"]
    assert torch.load(folder / "embeddings.pt", weights_only=True).shape == (120, 32)


# -- end to end through the command line --------------------------------------

TEST_PLUGIN = """
import torch
from torch import nn
from harness import hookimpl
from harness.api import Backbone, Encoded, Method, StepOutput


class LogSpectrum(nn.Module):
    def forward(self, wave):
        window = torch.hann_window(256, device=wave.device)
        spec = torch.stft(wave, 256, hop_length=128, window=window, return_complex=True).abs()
        return torch.log1p(spec).unsqueeze(1)


class SpectrumBackbone(Backbone):
    name = "spectrum-test"
    description = "time-averaged log spectrum through one linear block"
    sample_rate = 16000
    stem_prefixes = ("stem",)

    def __init__(self, config):
        super().__init__(config)
        self.embed_dim = 16
        self.stem = nn.Linear(129, 16)
        self.blocks = nn.ModuleList([nn.Linear(16, 16)])

    def frontend(self):
        return LogSpectrum()

    def forward(self, features):
        x = self.stem(features.squeeze(1).mean(-1))
        x = x + self.blocks[0](x)
        return Encoded(x, x.unsqueeze(1))


class UnitNorm(Method):
    name = "unit-norm-test"
    description = "pulls embedding norms to one (no labels)"
    supervised = False

    def training_step(self, batch, backbone):
        z = backbone(batch.features).embedding
        return StepOutput(((z.norm(dim=1) - 1) ** 2).mean())


@hookimpl
def register_backbones(register):
    register(SpectrumBackbone)


@hookimpl
def register_methods(register):
    register(UnitNorm)
"""


def run_embedded(tmp_path: Path, *settings: str) -> int:
    from harness.cli.main import main

    plugin = tmp_path / "test_plugin.py"
    plugin.write_text(TEST_PLUGIN)
    small = ["classes=8", "clips_per_class=20", "pool_clips=16", "pool_classes=2", "seconds=0.25"]
    argv = ["--plugin", str(plugin), "run", "--backbone", "spectrum-test"]
    argv += ["--method", "unit-norm-test", "--dataset", "fewshot-embedded", "--protocol", "fewshot"]
    argv += ["--epochs", "1", "--batch-size", "8", "--out", str(tmp_path / "runs")]
    for item in [*(f"dataset.{s}" for s in small), "protocol.fewshot.episodes=50", *settings]:
        argv += ["--set", item]
    try:
        main(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


def stored_runs(tmp_path: Path) -> int:
    import sqlite3

    path = tmp_path / "runs" / "results.sqlite"
    if not path.exists():
        return 0
    with sqlite3.connect(path) as db:
        return db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]


def run_folders(tmp_path: Path) -> list[Path]:
    runs = tmp_path / "runs"
    return (
        [p for p in runs.iterdir() if p.is_dir() and p.name != ".partial"] if runs.exists() else []
    )


def test_cli_run_on_the_embedded_benchmark(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HARNESS_PROGRESS", "0")
    code = run_embedded(tmp_path, "protocol.fewshot.sweep_n=2,5", "protocol.fewshot.sweep_k=1,3")
    out = capsys.readouterr().out
    assert code == 0
    assert "| 5 | 1 |" in out and "| 2 | 3 |" in out
    assert stored_runs(tmp_path) == 1
    metrics = json.loads((run_folders(tmp_path)[0] / "metrics.json").read_text())
    assert 0 < metrics["fewshot/acc"] <= 100 and "fewshot/acc_2way3shot" in metrics


def test_cli_too_few_classes_exits_2_and_stores_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HARNESS_PROGRESS", "0")
    assert run_embedded(tmp_path, "protocol.fewshot.n_way=10") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("harness: error: fewshot: 10-way 1-shot needs 10 classes")
    assert stored_runs(tmp_path) == 0 and run_folders(tmp_path) == []


def test_cli_malformed_esc50_exits_2_and_stores_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HARNESS_PROGRESS", "0")
    (tmp_path / "esc" / "meta").mkdir(parents=True)
    (tmp_path / "esc" / "meta" / "esc50.csv").write_text("filename,fold,target\n1-1-A-0.wav,1,0\n")
    from harness.cli.main import main

    plugin = tmp_path / "test_plugin.py"
    plugin.write_text(TEST_PLUGIN)
    argv = [
        "--plugin",
        str(plugin),
        "run",
        "--backbone",
        "spectrum-test",
        "--method",
        "unit-norm-test",
    ]
    argv += [
        "--dataset",
        "esc50",
        "--set",
        f"dataset.root={tmp_path / 'esc'}",
        "--protocol",
        "fewshot",
    ]
    argv += ["--out", str(tmp_path / "runs")]
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    csv_path = tmp_path / "esc" / "meta" / "esc50.csv"
    assert err == [f"harness: error: {csv_path}: missing field 'category' in the header"]
    assert stored_runs(tmp_path) == 0 and run_folders(tmp_path) == []


def test_trainable_parameters_count_what_requires_grad_once() -> None:
    from torch import nn

    from harness_plugins.protocols.fewshot import trainable_parameters

    shared = nn.Linear(3, 2)  # 8 parameters
    frozen = nn.Linear(4, 4)  # 20, frozen
    frozen.requires_grad_(False)
    backbone, head = nn.Sequential(shared, frozen), nn.Sequential(shared, nn.Linear(2, 1))  # +3
    assert trainable_parameters(backbone, head, None) == 8 + 3


def test_eligible_classes_keep_exactly_k_plus_q_and_count_absent_classes_as_empty():
    labels = torch.tensor([0, 0, 0, 2, 2, 1])  # class 0: 3 clips, 2: 2, 1: 1, 4: none
    assert eligible_classes(labels, [0, 1, 2, 4], needed=2) == ([0, 2], [1, 4])
    assert eligible_classes(labels, [0, 2], needed=3) == ([0], [2])
    assert eligible_classes(labels, [], needed=1) == ([], [])


def test_check_counts_both_splits_under_split_all_and_class_zero(tmp_path):
    """Two classes (0 and 1) with 2 + 2 labeled clips split over train and eval: a 2-way
    1-shot, 1-query episode needs 2 per class, so only the union (``split = all``) fills it."""
    from harness.api import Clip, DataSplits

    def clips(part: str) -> list[Clip]:
        return [Clip(f"{part}{i}.wav", label) for i, label in enumerate([0, 1, -1])]

    splits = DataSplits(["zero", "one"], clips("train"), clips("eval"), 1.0, [], tmp_path)
    settings = {"n_way": 2, "k_shot": 1, "queries": 1}
    Fewshot(Fewshot.Config(split="all", **settings)).check(splits, None)
    with pytest.raises(UsageError, match="2-way 1-shot"):
        Fewshot(Fewshot.Config(split="eval", **settings)).check(splits, None)
    with pytest.raises(UsageError, match="no labeled clips"):
        empty = DataSplits(["zero"], [], [Clip("u.wav", -1)], 1.0, [], tmp_path)
        Fewshot(Fewshot.Config(split="eval", **settings)).check(empty, None)
