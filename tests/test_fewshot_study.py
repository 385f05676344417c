"""The few-shot study end to end: MAE warm-up before NNCLR, protocol checks before training,
the Table 2/3 specs and their sweeps, CI cells in leaderboards, and the few-shot and t-SNE plots."""

from __future__ import annotations

import json
import sqlite3
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.api import Backbone, Clip, DataSplits, Encoded, Stage, Task
from harness.api.settings import RunSettings
from harness.cli.sweep import plan
from harness.registry.config import build_dataclass, resolve
from harness.registry.plugins import load_plugins
from harness.results.leaderboard import LeaderboardSpec, build_tables, grouped_runs
from harness.results.plots import fewshot_curves, select_clips
from harness.results.render import render
from harness.results.store import ResultStore, RunRecord
from harness.run.experiment import Experiment
from harness.util.errors import UsageError
from harness_plugins.backbones.audiomae import AudioMAE
from harness_plugins.methods.nnclr import MAE_STAGE, Nnclr, NnclrTCutMix
from harness_plugins.protocols.fewshot import Fewshot

REPO = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SMALL_SET = {
    "name": "fewshot-embedded",
    "classes": 6,
    "clips_per_class": 4,
    "pool_clips": 24,
    "pool_classes": 3,
    "seconds": 0.5,
}
SMALL_HEAD = {
    "proj_hidden": 32,
    "pred_hidden": 32,
    "out_dim": 8,
    "queue_size": 64,
    "preset": "small",
}

TEST_PLUGIN = """
import torch
from torch import nn
from harness import hookimpl
from harness.api import Backbone, Encoded, Method, StepOutput


class LogSpectrum(nn.Module):
    def forward(self, wave):
        frames = wave.unfold(-1, 256, 128)
        return torch.fft.rfft(frames, dim=-1).abs().add(1e-6).log().transpose(1, 2).unsqueeze(1)


class SpectrumBackbone(Backbone):
    name = "study-spectrum"
    description = "mean log spectrum -> linear (test)"
    sample_rate = 8000

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
    name = "study-unit-norm"
    description = "pulls embedding norms to one (no labels)"
    supervised = False

    def training_step(self, batch, backbone):
        z = backbone(batch.features).embedding
        return StepOutput(((z.norm(dim=1) - 1) ** 2).mean())


class Explode(Method):
    name = "study-explode"
    description = "fails if training ever starts"
    supervised = False

    def training_step(self, batch, backbone):
        raise RuntimeError("training started")


@hookimpl
def register_backbones(register):
    register(SpectrumBackbone)


@hookimpl
def register_methods(register):
    register(UnitNorm)
    register(Explode)
"""


@pytest.fixture(scope="module")
def plugins():
    return load_plugins()


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """Runs here use one thread (``run.threads=1``: far faster on a busy 2-core machine);
    the process keeps its own setting afterwards."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def small_experiment(plugins, method: dict, epochs: int, backbone: dict | None = None):
    raw = {
        "run": {"epochs": epochs, "batch_size": 8, "threads": 1},
        "backbone": backbone or {"name": "audiomae"},
        "method": method,
        "dataset": SMALL_SET,
        "protocol": {"names": []},
    }
    experiment = Experiment(resolve(raw, plugins))
    experiment.setup()
    return experiment


# -- MAE warm-up before NNCLR -----------------------------------------------------------


def nnclr_on(backbone: Backbone, cls: type = NnclrTCutMix, **options) -> Nnclr:
    method = cls(build_dataclass(cls.Config, SMALL_HEAD | options, "method"))
    method.setup(backbone, Task(["a"], [], 16000, -2))
    return method


def stage_names(method: Nnclr, backbone: Backbone) -> list[str]:
    return [s.name for s in method.stages(backbone, RunSettings(epochs=5))]


def test_warmup_stage_comes_first_only_for_a_random_mae_encoder() -> None:
    random_init = AudioMAE(AudioMAE.Config())
    method = nnclr_on(random_init)
    assert stage_names(method, random_init) == [MAE_STAGE, "head", "top"]
    warmup = method.stages(random_init, RunSettings())[0]
    assert warmup.epochs == 2 and warmup.backbone_blocks is None  # "small" preset
    assert "no backbone.checkpoint" in warmup.note
    assert {k.split(".")[0] for k in method.state_dict()} >= {"mae", "head"}

    loaded = AudioMAE(AudioMAE.Config(checkpoint="pretrained.pt"))
    method = nnclr_on(loaded)
    assert stage_names(method, loaded) == ["head", "top"] and method.mae is None
    assert not any(k.startswith("mae.") for k in method.state_dict())

    for options in ({"mae_warmup_epochs": 0}, {"preset": "paper"}):
        method = nnclr_on(random_init, **options)
        head = method.stages(random_init, RunSettings())[0]
        assert method.mae is None and head.name == "head"
        assert "MAE warm-up off" in head.note


class PlainBackbone(Backbone):
    """A backbone without the masked-encoder contract (no ``forward_masked``)."""

    name = "plain"
    description = "test backbone"
    sample_rate = 16000

    def __init__(self) -> None:
        super().__init__(None)
        self.embed_dim = 8
        self.blocks = torch.nn.ModuleList(torch.nn.Linear(8, 8) for _ in range(2))

    def forward(self, features: torch.Tensor) -> Encoded:
        x = features.mean(dim=(1, 2))[:, :8]
        for block in self.blocks:
            x = x + block(x)
        return Encoded(x, x.unsqueeze(1))


def test_no_warmup_for_a_backbone_without_the_masked_encoder_contract() -> None:
    backbone = PlainBackbone()
    method = nnclr_on(backbone)
    head, _ = method.stages(backbone, RunSettings())
    assert method.mae is None and head.name == "head"
    assert "no masked-encoder contract" in head.note


def test_begin_stage_switches_objective_and_trained_modules() -> None:
    backbone = AudioMAE(AudioMAE.Config())
    method = nnclr_on(backbone)
    warmup, head, _ = method.stages(backbone, RunSettings())
    method.begin_stage(warmup)
    assert method.objective == "mae"
    assert all(p.requires_grad for p in method.mae.parameters())
    assert not any(p.requires_grad for p in method.head.parameters())
    features = torch.randn(4, 1, 64, 128)
    output = method.training_step(type("B", (), {"features": features})(), backbone)
    assert set(output.logs) == {"mae"} and method.queue.filled == 0
    method.begin_stage(head)
    assert method.objective == "nnclr"
    assert not any(p.requires_grad for p in method.mae.parameters())
    assert all(p.requires_grad for p in method.head.parameters())
    with pytest.raises(UsageError, match="MAE stage"):
        nnclr_on(backbone, mae_warmup_epochs=0).begin_stage(warmup)


@pytest.mark.slow
def test_warmup_changes_the_encoder_exactly_as_the_mae_method_does(plugins, tmp_path) -> None:
    mae_run = small_experiment(plugins, {"name": "mae"}, epochs=2)
    mae_run.train()

    tuned = small_experiment(plugins, {"name": "nnclr-tcutmix", **SMALL_HEAD}, epochs=2)
    initial = {k: v.clone() for k, v in tuned.backbone.state_dict().items()}
    after_warmup: dict[str, torch.Tensor] = {}
    begin_stage = tuned.method.begin_stage

    def snapshot(stage: Stage) -> None:
        if stage.name == "head":
            after_warmup.update({k: v.clone() for k, v in tuned.backbone.state_dict().items()})
        begin_stage(stage)

    tuned.method.begin_stage = snapshot
    tuned.train()

    assert any(
        "'mae-warmup'" in line and "no backbone.checkpoint" in line for line in tuned.log_lines
    )
    changed = [k for k in initial if not torch.equal(initial[k], after_warmup[k])]
    assert "blocks.0.attn.qkv.weight" in changed and "patch_embed.proj.weight" in changed
    # The warm-up draws the random numbers a `--method mae` run draws: the same encoder.
    for key, value in mae_run.backbone.state_dict().items():
        assert torch.equal(value, after_warmup[key]), key

    # With that encoder as a checkpoint, no warm-up runs and the stages start from it.
    checkpoint = tmp_path / "mae.pt"
    torch.save(mae_run.backbone.state_dict(), checkpoint)
    loaded = small_experiment(
        plugins,
        {"name": "nnclr-tcutmix", **SMALL_HEAD},
        epochs=2,
        backbone={"name": "audiomae", "checkpoint": str(checkpoint)},
    )
    assert loaded.method.mae is None
    assert stage_names(loaded.method, loaded.backbone) == ["head", "top"]
    for key, value in loaded.backbone.state_dict().items():
        assert torch.equal(value, after_warmup[key]), key


# -- protocol checks before training ------------------------------------------------------


def harness(*argv: str) -> int:
    """Run the command line in this process; its exit code."""
    from harness.cli.main import main

    try:
        main(list(argv))
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


def run_cli(tmp_path: Path, *args: str, settings: tuple[str, ...] = ()) -> int:
    """``harness run`` with the test plugin on a small embedded benchmark under tmp_path."""
    plugin = tmp_path / "study_plugin.py"
    plugin.write_text(TEST_PLUGIN)
    small = ["classes=8", "clips_per_class=20", "pool_clips=16", "pool_classes=2", "seconds=0.25"]
    argv = ["--plugin", str(plugin), *args, "--out", str(tmp_path / "runs")]
    for item in [*(f"dataset.{s}" for s in small), *settings]:
        argv += ["--set", item]
    return harness(*argv)


def nothing_stored(tmp_path: Path) -> bool:
    runs = tmp_path / "runs"
    store = runs / "results.sqlite"
    if store.exists():
        with sqlite3.connect(store) as db:
            if db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]:
                return False
    # .partial: a failed run's resumable training state, not a run
    return not runs.exists() or not any(p.is_dir() and p.name != ".partial" for p in runs.iterdir())


def explode_run(*protocol_args: str) -> tuple[str, ...]:
    args = ("run", "--backbone", "study-spectrum", "--method", "study-explode")
    return (*args, "--dataset", "fewshot-embedded", "--epochs", "1", *protocol_args)


@pytest.mark.parametrize(
    ("protocol", "settings", "message"),
    [
        ("fewshot", ("protocol.fewshot.n_way=10",), "fewshot: 10-way 1-shot needs 10 classes"),
        (
            "fewshot",
            ("protocol.fewshot.sweep_k=1,10",),
            "fewshot: 5-way 10-shot needs 5 classes with at least 25 clips",
        ),
        ("fewshot", ("protocol.fewshot.split=train",), "fewshot: the 'train' split has no labeled"),
        ("linear", (), "linear: the 'train' split has no labeled clips"),
        ("finetune", (), "finetune: the 'train' split has no labeled clips"),
    ],
)
def test_protocols_refuse_their_data_before_training(
    tmp_path, monkeypatch, capsys, protocol, settings, message
) -> None:
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    code = run_cli(tmp_path, *explode_run("--protocol", protocol), settings=settings)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert err[-1].startswith(f"harness: error: {message}")
    assert nothing_stored(tmp_path)


def splits_with_counts(counts: dict[str, int]) -> DataSplits:
    classes = list(counts)
    clips = [
        Clip(Path(f"{name}_{i}.wav"), label)
        for label, name in enumerate(classes)
        for i in range(counts[name])
    ]
    return DataSplits(classes=classes, train=[], eval=clips, clip_seconds=1.0)


def test_fewshot_check_warns_once_naming_the_excluded_classes() -> None:
    protocol = Fewshot(build_dataclass(Fewshot.Config, {"n_way": "2", "queries": "3"}, "p"))
    splits = splits_with_counts({"dog": 5, "cat": 4, "owl": 3, "bee": 2})
    with pytest.warns(UserWarning, match=r"excluded 2 classes with fewer than 4 clips.*owl, bee"):
        protocol.check(splits, None)
    labels = torch.tensor([c.label for c in splits.eval])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # score() does not repeat the warning
        kept = protocol.eligible(labels, [0, 1, 2, 3], splits.classes, 2, 1)
    assert kept == [0, 1]
    strict = Fewshot(build_dataclass(Fewshot.Config, {"n_way": "3", "queries": "3"}, "p"))
    with pytest.raises(UsageError, match="3-way 1-shot needs 3 classes .* only 2"):
        strict.check(splits, None)


def test_supervised_protocol_checks_need_two_labeled_train_classes() -> None:
    from harness_plugins.protocols._common import require_labeled_splits

    one_class = DataSplits(["a", "b"], [Clip(Path("x.wav"), 0)], [Clip(Path("y.wav"), 1)], 1.0)
    with pytest.raises(UsageError, match="fewer than two labeled classes"):
        require_labeled_splits(one_class, "linear")
    unlabeled_eval = DataSplits(
        ["a", "b"], [Clip(Path("x.wav"), 0), Clip(Path("z.wav"), 1)], [Clip(Path("y.wav"), -1)], 1
    )
    with pytest.raises(UsageError, match="the 'eval' split has no labeled clips"):
        require_labeled_splits(unlabeled_eval, "finetune")


# -- leaderboards: specs, sweeps and CI cells -------------------------------------------------


def fewshot_record(
    run_id: str, config: dict, seed: int, acc: float, ci: float, **extra
) -> RunRecord:
    metrics = {"acc": acc, "ci": ci, "classes": 50.0, **extra}
    return RunRecord(
        run_id=run_id,
        created=run_id,
        config_hash=run_id,
        backbone=config["backbone"]["name"],
        method=config["method"]["name"],
        aug="none",
        dataset=config["dataset"]["name"],
        protocols="fewshot",
        seed=seed,
        config=json.loads(json.dumps(config | {"run": {**config.get("run", {}), "seed": seed}})),
        metrics={f"fewshot/{k}": v for k, v in metrics.items()},
        run_dir="",
        harness_version="0",
        git_commit="",
        environment={},
        duration_s=1.0,
    )


@pytest.mark.parametrize(
    ("name", "methods"),
    [
        ("fewshot_mixing", ["nnclr", "nnclr-mixup-ls", "nnclr-tcutmix", "nnclr-tfcutmix"]),
        ("fewshot_backbones", ["nnclr"] * 7 + ["mae", "nnclr-tcutmix"]),
    ],
)
def test_each_spec_row_matches_exactly_one_planned_sweep_config(plugins, name, methods) -> None:
    path = REPO / "leaderboards" / f"{name}.toml"
    spec = LeaderboardSpec.from_file(path)
    runs = plan(path, plugins, [], {})
    assert [r.config.method.name for r in runs] == [m for m in methods for _ in (0, 1, 2)]
    assert [r.config.run.seed for r in runs] == [0, 1, 2] * len(methods)
    for run in runs:
        fewshot = next(p for p in run.config.protocols if p.name == "fewshot")
        assert (fewshot.config.n_way, fewshot.config.k_shot) == (5, 1)
        assert fewshot.config.sweep_n == [5, 10, 15] and fewshot.config.sweep_k == [1, 5, 10]
    records = [
        fewshot_record(f"r{i}", run.config.as_dict(), run.config.run.seed, 40.0 + i, 0.8)
        for i, run in enumerate(runs)
    ]
    groups = grouped_runs(spec, records)
    assert [labels["row"] for labels, _ in groups] == [row.label for row in spec.rows]
    assert [len(group) for _, group in groups] == [3] * len(spec.rows)  # the three seeds
    assert sorted(r.run_id for _, g in groups for r in g) == sorted(r.run_id for r in records)


def test_specs_share_the_uamix_run_and_the_mae_baseline_is_its_warmup(plugins) -> None:
    mixing = plan(REPO / "leaderboards" / "fewshot_mixing.toml", plugins, [], {})
    backbones = plan(REPO / "leaderboards" / "fewshot_backbones.toml", plugins, [], {})
    shared = {r.config.config_hash() for r in mixing} & {r.config.config_hash() for r in backbones}
    assert len(shared) == 3  # one per seed
    [uamix] = [r for r in mixing if r.config.config_hash() in shared and r.config.run.seed == 0]
    assert uamix.config.method.name == "nnclr-tcutmix"
    [mae] = [r for r in backbones if r.config.method.name == "mae" and r.config.run.seed == 0]
    tcutmix = uamix.config.method.config
    assert mae.config.run.epochs == 2  # the "small" preset's MAE warm-up
    assert tcutmix.mae_warmup_epochs is None and tcutmix.preset == "small"
    same = ("lr", "batch_size", "threads", "weight_decay", "warmup_epochs")
    assert [getattr(mae.config.run, k) for k in same] == [
        getattr(uamix.config.run, k) for k in same
    ]


def test_best_and_runs_tables_show_each_runs_own_ci_and_mean_the_std(plugins) -> None:
    config = {"backbone": {"name": "audiomae"}, "method": {"name": "nnclr"}}
    config |= {"dataset": {"name": "fewshot-embedded"}}
    records = [
        fewshot_record("a", config, 0, 50.0, 0.9),
        fewshot_record("b", config, 1, 54.0, 0.7),
    ]
    best, mean = build_tables(LeaderboardSpec(protocol="fewshot", metric="acc"), records, plugins)
    assert [c.key for c in best.columns] == ["acc"]
    assert best.values.at[0, "acc"] == 54.0 and best.errors.at[0, "acc"] == 0.7
    assert mean.values.at[0, "acc"] == 52.0
    assert mean.errors.at[0, "acc"] == pytest.approx(np.std([50.0, 54.0], ddof=1))
    text = render(LeaderboardSpec(protocol="fewshot", metric="acc"), [best], "markdown")
    assert "54.00 ± 0.70" in text
    [runs] = build_tables(
        LeaderboardSpec(protocol="fewshot", metric="acc", agg="runs"), records, plugins
    )
    assert list(runs.errors["acc"]) == [0.9, 0.7]
    csv = render(LeaderboardSpec(protocol="fewshot", metric="acc"), [best], "csv").splitlines()
    assert csv[0].endswith(",acc (%),acc_ci (%)")
    assert csv[1].endswith(",54.0,0.7")


# -- plots ------------------------------------------------------------------------------------


def sweep_metrics(offset: float) -> dict[str, float]:
    out = {}
    for n in (5, 10):
        for k in (1, 5):
            out[f"acc_{n}way{k}shot"] = offset + 100 / n + k
            out[f"ci_{n}way{k}shot"] = 0.1 * n + 0.01 * k
    return out


@pytest.fixture
def fewshot_store(tmp_path) -> tuple[Path, Path]:
    base = {"backbone": {"name": "audiomae"}, "dataset": {"name": "fewshot-embedded"}}
    store = ResultStore(tmp_path / "study.sqlite")
    store.add(
        fewshot_record("a0", base | {"method": {"name": "nnclr"}}, 0, 30, 1, **sweep_metrics(0))
    )
    store.add(
        fewshot_record("a1", base | {"method": {"name": "nnclr"}}, 1, 31, 1, **sweep_metrics(1))
    )
    store.add(
        fewshot_record(
            "t0", base | {"method": {"name": "nnclr-tcutmix"}}, 0, 40, 1, **sweep_metrics(9)
        )
    )
    store.add(fewshot_record("m0", base | {"method": {"name": "mae"}}, 0, 20, 1))  # no sweep
    spec = tmp_path / "spec.toml"
    spec.write_text(
        'protocol = "fewshot"\n'
        '[[rows]]\nlabel = "No Mixing"\nmatch = { method = "nnclr" }\n'
        '[[rows]]\nlabel = "T-CutMix"\nmatch = { method = "nnclr-tcutmix" }\n'
        '[[rows]]\nlabel = "MAE"\nmatch = { method = "mae" }\n'
    )
    return store.path, spec


def test_fewshot_curves_take_each_rows_best_seed_at_fixed_k_or_n(fewshot_store) -> None:
    store, spec_path = fewshot_store
    spec = LeaderboardSpec.from_file(spec_path)
    records = ResultStore(store).records()
    no_mixing, tcutmix = fewshot_curves(spec, records, "n", 1)  # MAE has no sweep: no curve
    assert (tcutmix.label, tcutmix.run_id) == ("T-CutMix", "t0")
    assert (no_mixing.label, no_mixing.run_id, no_mixing.x) == ("No Mixing", "a1", [5, 10])
    assert no_mixing.acc == pytest.approx([1 + 20 + 1, 1 + 10 + 1])
    assert no_mixing.ci == pytest.approx([0.51, 1.01])
    vs_k = fewshot_curves(spec, records, "k", 10)[1]
    assert (vs_k.label, vs_k.x) == ("T-CutMix", [1, 5])
    assert vs_k.acc == pytest.approx([9 + 10 + 1, 9 + 10 + 5])
    assert fewshot_curves(spec, records, "k", 7) == []


def test_plot_fewshot_writes_a_png(tmp_path, fewshot_store, capsys) -> None:
    store, spec = fewshot_store
    output = tmp_path / "figs" / "vs_k.png"
    args = ["plot", "fewshot", "--spec", str(spec), "--store", str(store), "--vs", "k"]
    assert harness(*args, "--output", str(output)) == 0
    assert output.read_bytes().startswith(PNG_MAGIC)
    assert "(2 curves)" in capsys.readouterr().out
    assert harness(*args, "--n", "15", "--output", str(tmp_path / "none.png")) == 2
    assert not (tmp_path / "none.png").exists()
    assert "have accuracies at N = 15" in capsys.readouterr().err


@pytest.mark.slow
def test_plot_tsne_embeds_the_chosen_classes_before_and_after_tuning(
    tmp_path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    train = ("run", "--backbone", "study-spectrum", "--method", "study-unit-norm")
    train += ("--dataset", "fewshot-embedded", "--protocol", "none", "--epochs", "2")
    assert run_cli(tmp_path, *train, settings=("run.lr=0.05", "run.threads=1")) == 0
    [folder] = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    [record] = ResultStore(tmp_path / "runs" / "results.sqlite").records()
    capsys.readouterr()

    plugins = load_plugins([str(tmp_path / "study_plugin.py")])
    from harness.cli.plot import embed_clips, initial_encoder, run_config, run_encoder

    cfg = run_config(folder, plugins)
    splits = cfg.dataset.build().load()
    clips, labels = select_clips(splits, ["chord_00", "harmonic_00", "noise_00"], "eval")
    chosen = ["chord_00", "harmonic_00", "noise_00"]
    names = [splits.classes[c.label] for c in clips]
    assert len(clips) == 60 and set(names) == set(chosen)
    assert [chosen[i] for i in labels] == names
    assert clips == [c for c in splits.eval if splits.classes[c.label] in chosen]
    before = embed_clips(initial_encoder(cfg), clips, splits, 16)
    after = embed_clips(run_encoder(folder, cfg), clips, splits, 16)
    assert before.shape == after.shape == (60, 16) and not torch.allclose(before, after)
    with pytest.raises(UsageError, match="unknown class 'wolf'"):
        select_clips(splits, ["wolf"], "eval")

    checkpoint = tmp_path / "start.pt"
    torch.save(initial_encoder(cfg).backbone.state_dict(), checkpoint)
    classes = "--classes", "chord_00,harmonic_00,noise_00"
    plugin_args = ["--plugin", str(tmp_path / "study_plugin.py"), "plot", "tsne"]
    store_args = ["--store", str(tmp_path / "runs" / "results.sqlite")]
    befores = {
        "start": [],
        "file": ["--before", str(checkpoint)],
        "id": ["--before", record.run_id],
    }
    for name, before_args in befores.items():
        output = tmp_path / f"tsne-{name}.png"
        run_args = ["--run", record.run_id, *store_args, *classes, *before_args]
        assert harness(*plugin_args, *run_args, "--output", str(output)) == 0, name
        assert output.read_bytes().startswith(PNG_MAGIC)
        assert "(60 clips of 3 classes)" in capsys.readouterr().out
    wrong = ["--run", str(folder), "--classes", "wolf", "--output", str(tmp_path / "x.png")]
    assert harness(*plugin_args, *wrong) == 2
    assert "unknown class 'wolf'" in capsys.readouterr().err
