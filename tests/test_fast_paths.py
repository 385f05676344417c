"""``harness run --help`` and the errors found before a model is built (unknown component
names, unknown published checkpoints) answer without importing torch (issue 24, item 9)."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import sys
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
