"""``harness run --help`` and the errors found before a model is built (unknown component
names, unknown published checkpoints) answer without importing torch (issue 24, item 9)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = """
import sys
from pathlib import Path
from harness.cli.main import main
try:
    main({argv!r})
except SystemExit as exit:
    code = exit.code
else:
    code = 0
print("TORCH" if "torch" in sys.modules else "NO-TORCH", code)
"""


def run_probe(argv: list[str], cwd) -> tuple[str, str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(argv=argv)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )
    return done.stdout.strip().splitlines()[-1], done.stderr


def test_run_help_imports_no_torch_and_lists_protocol_flags(tmp_path):
    last, _ = run_probe(["run", "--help"], tmp_path)
    assert last == "NO-TORCH 0"
    done = subprocess.run(
        [sys.executable, "-m", "harness", "run", "--help"], capture_output=True, text=True
    )
    assert "--sweep-n" in done.stdout and "--sweep-k" in done.stdout  # from the manifest


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--backbone", "pasts"], "unknown backbone 'pasts'. Did you mean: passt"),
        (["--method", "icll"], "unknown method 'icll'. Did you mean: icl"),
        (["--aug", "multidri"], "unknown augmentation 'multidri'. Did you mean: multidir"),
        (["--dataset", "tau2"], "unknown dataset 'tau2'. Did you mean: tau22"),
        (["--protocol", "fewshoot"], "unknown protocol 'fewshoot'. Did you mean: fewshot"),
        (["--set", "run.loggers=tensorbord"], "unknown logger 'tensorbord'. Did you mean"),
        (
            ["--set", "backbone.pretrained=passt-s-ap476"],
            "unknown pretrained passt checkpoint 'passt-s-ap476'. Did you mean: passt-s-ap476-swa",
        ),
    ],
)
def test_unknown_names_answer_before_torch_with_a_suggestion(tmp_path, argv, message):
    last, stderr = run_probe(["run", *argv, "--out", str(tmp_path / "runs")], tmp_path)
    assert last == "NO-TORCH 2"
    assert message in stderr
    assert not (tmp_path / "runs").exists()


def datasets_with_roots() -> list[tuple[str, str]]:
    """``(data set, root field)`` of every installed data set that reads folders."""
    manifest = json.loads((Path(__file__).parents[1] / "plugins" / "manifest.json").read_text())
    return [
        (info["name"], field)
        for plugin in manifest["plugins"].values()
        for info in plugin["components"].get("dataset", [])
        for field in info.get("root_fields", [])
    ]


def test_every_data_set_that_reads_folders_declares_them():
    names = {name for name, _ in datasets_with_roots()}
    assert {"tau22", "esc50", "folder", "nsynth", "speech-commands", "voxceleb1"} <= names
    assert ("folder", "eval_root") in datasets_with_roots()


@pytest.mark.parametrize(("dataset", "field"), datasets_with_roots())
def test_a_missing_dataset_root_answers_before_torch(tmp_path, dataset, field):
    missing = tmp_path / "nonexistent"
    argv = ["run", "--set", f"dataset.name={dataset}", "--set", f"dataset.{field}={missing}"]
    last, stderr = run_probe([*argv, "--out", str(tmp_path / "runs")], tmp_path)
    assert last == "NO-TORCH 2"
    assert stderr.strip() == f"harness: error: dataset.{field} does not exist: {missing}"
    assert not (tmp_path / "runs").exists()


def test_an_existing_root_passes_the_check(tmp_path):
    """The check refuses only missing folders: an existing one reaches the data set."""
    from harness.registry.config import check_dataset_roots
    from harness.registry.plugins import load_plugins

    check_dataset_roots({"dataset": {"name": "tau22", "root": str(tmp_path)}}, load_plugins())
