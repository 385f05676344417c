"""Issue 23 item 1: nothing read back from an output folder runs code, and clip files stay
inside their data set's root."""

from __future__ import annotations

import ast
import json
import os
import pickle
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import submitit

from harness.api import Clip, DataSplits
from harness.cli import executors
from harness.cli.executors import CellJob, read_state, state_path, status_file
from harness.cli.main import main
from harness.cli.sweep import plan
from harness.registry.plugins import load_plugins
from harness.run.preflight import check_clips_inside_root
from harness.util.errors import DataError, HarnessError
from tests.conftest import TOY_PLUGIN
from tests.test_hardening import run_main


class Planted:
    """Unpickling this creates ``marker``: proof that code from the file ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def write_sweep(tmp_path: Path) -> tuple[Path, str]:
    """A one-cell toy sweep file and its cell's config hash."""
    data = tmp_path / "tones"
    data.mkdir(exist_ok=True)
    spec = tmp_path / "s.toml"
    spec.write_text(
        textwrap.dedent(
            f"""
            [sweep]
            seeds = [0]
            [sweep.base]
            backbone = {{ name = "toy" }}
            dataset = {{ name = "toy-tones", root = "{data}" }}
            run = {{ epochs = 1, batch_size = 8 }}
            method = {{ name = "ce" }}
            """
        )
    )
    [cell] = plan(spec, load_plugins([str(TOY_PLUGIN)]), [], {})
    return spec, cell.config.config_hash()


def plant_job(tmp_path: Path, config_hash: str, job_id: str = "4242") -> Path:
    """A state entry for ``config_hash`` whose job folder holds ``job_id``'s files."""
    folder = tmp_path / "runs" / ".sweeps" / "s"
    folder.mkdir(parents=True, exist_ok=True)
    entry = {"executor": "local", "job_id": job_id, "folder": str(folder), "host": "elsewhere"}
    state_file = state_path(tmp_path / "runs" / "results.sqlite")
    state_file.write_text(json.dumps({config_hash: entry}))
    return folder


def status_lines(tmp_path: Path, spec: Path, capsys) -> list[str]:
    argv = ["--plugin", str(TOY_PLUGIN), "sweep", str(spec), "--out", str(tmp_path / "runs")]
    try:
        main([*argv, "--status"])
    except SystemExit as exit_info:
        assert exit_info.code in (0, None), capsys.readouterr().err
    return capsys.readouterr().out.splitlines()


def test_sweep_status_runs_no_code_from_a_planted_result_pickle(tmp_path, capsys):
    spec, config_hash = write_sweep(tmp_path)
    folder = plant_job(tmp_path, config_hash)
    marker = tmp_path / "code-ran"
    (folder / "4242_0_result.pkl").write_bytes(pickle.dumps(("success", Planted(marker))))
    lines = status_lines(tmp_path, spec, capsys)
    assert not marker.exists()
    assert "failed (job ended without a status file; log: " in lines[0]
    assert lines[-1].endswith("1 failed")


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ({"outcome": "success", "run_id": "r1"}, "finished (run r1)"),
        ({"outcome": "error", "error": "DataError: bad wav"}, "failed (DataError: bad wav; log: "),
        ({"outcome": "success"}, "is malformed"),
        ("not json", "(not JSON)"),
    ],
)
def test_sweep_status_is_read_from_the_jobs_json_status(tmp_path, capsys, status, expected):
    spec, config_hash = write_sweep(tmp_path)
    folder = plant_job(tmp_path, config_hash)
    text = status if isinstance(status, str) else json.dumps(status)
    (folder / "4242_0_status.json").write_text(text)
    marker = tmp_path / "code-ran"
    (folder / "4242_0_result.pkl").write_bytes(pickle.dumps(("success", Planted(marker))))
    [line, *_] = status_lines(tmp_path, spec, capsys)
    assert expected in line and not marker.exists()


@pytest.mark.parametrize(
    "entry",
    [
        {"executor": "local", "job_id": "../../etc", "folder": "/tmp"},
        {"executor": "local", "job_id": 5, "folder": "/tmp"},
        {"executor": "ssh", "job_id": "1", "folder": "/tmp"},
        ["not", "a", "table"],
    ],
)
def test_a_tampered_sweep_state_file_is_a_one_line_error(tmp_path, entry):
    path = tmp_path / "results.sweep-jobs.json"
    path.write_text(json.dumps({"abc": entry}))
    with pytest.raises(HarnessError, match="entry 1 is malformed") as info:
        read_state(path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("fails", [False, True])
def test_a_job_writes_its_outcome_as_json(tmp_path, monkeypatch, fails):
    paths = submitit.core.utils.JobPaths(tmp_path, job_id="77", task_id=0)
    monkeypatch.setattr(submitit, "JobEnvironment", lambda: SimpleNamespace(paths=paths))

    def run(self) -> str:
        if fails:
            raise DataError("clip x.wav is empty")
        return "run-77"

    monkeypatch.setattr(CellJob, "run", run)
    job = CellJob(executors.Cell("c", "h", {}, str(tmp_path)))
    if fails:
        with pytest.raises(DataError):
            job()
    else:
        assert job() == "run-77"
    written = json.loads(status_file(paths).read_text())
    expected = (
        {"outcome": "error", "error": "DataError: clip x.wav is empty"}
        if fails
        else {"outcome": "success", "run_id": "run-77"}
    )
    assert written == expected


# --- clip files confined to the data set root ---------------------------------------------

ESC_HEADER = "filename,fold,target,category,esc10,src_file,take"
SECRET = "TOP-SECRET-CONTENT"


def esc50_with(root: Path, hostile_name: str) -> None:
    """An ESC-50 tree whose first row names ``hostile_name`` (other rows are fine)."""
    (root / "meta").mkdir(parents=True)
    (root / "audio").mkdir()
    rows = []
    for target, category in ((0, "dog"), (1, "rooster")):
        for fold in range(1, 6):
            name = f"{fold}-{target}.wav"
            sf.write(root / "audio" / name, np.zeros(800, dtype=np.float32), 16000)
            rows.append(f"{name},{fold},{target},{category},False,1,A")
    rows[0] = rows[0].replace("1-0.wav", hostile_name, 1)
    (root / "meta" / "esc50.csv").write_text("\n".join([ESC_HEADER, *rows]) + "\n")


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
def test_a_clip_outside_the_data_set_root_is_refused_before_it_is_read(tmp_path, capsys, kind):
    secret = tmp_path / "secret.wav"
    secret.write_text(SECRET)
    root = tmp_path / "ESC-50"
    names = {"dotdot": "../../secret.wav", "absolute": str(secret), "symlink": "link.wav"}
    esc50_with(root, names[kind])
    if kind == "symlink":
        os.symlink(secret, root / "audio" / "link.wav")
    out = tmp_path / "runs"
    argv = [
        "--plugin", str(TOY_PLUGIN), "run", "--backbone", "toy", "--dataset", "esc50",
        "--method", "ce", "--aug", "none", "--epochs", "1", "--batch-size", "4",
        "--set", f"dataset.root={root}", "--out", str(out),
    ]  # fmt: skip
    code, err = run_main(argv, capsys)
    assert code == 2
    [line] = err.strip().splitlines()
    assert "resolves outside the data set root" in line and "run.data_outside_root" in line
    assert SECRET not in err
    assert not out.exists() or not [p for p in out.iterdir() if p.name != "results.sqlite"]


def test_run_data_outside_root_allows_files_outside(tmp_path):
    inside, outside = tmp_path / "data" / "a.wav", tmp_path / "elsewhere.wav"
    splits = DataSplits(["a"], [Clip(inside, 0)], [Clip(outside, 0)], 1.0, root=tmp_path / "data")
    with pytest.raises(DataError, match=r"elsewhere.wav \(eval split\) resolves outside"):
        check_clips_inside_root(splits, "x", allow_outside=False)
    check_clips_inside_root(splits, "x", allow_outside=True)


# --- the audit: no loader in the code base can run code from a file ---------------------------

SOURCE_ROOTS = [Path(__file__).resolve().parents[1] / d for d in ("harness", "plugins")]


def unsafe_loads(tree: ast.AST) -> list[str]:
    """Calls that could run code from a file: pickle/dill/joblib/submitit loads, torch.load
    without ``weights_only=True``, np.load with ``allow_pickle=True``, a job's result()."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = ast.unparse(node.func)
        keywords = {k.arg: ast.unparse(k.value) for k in node.keywords}
        if (
            name in ("pickle.load", "pickle.loads", "pickle_load", "joblib.load", "dill.load")
            or name.endswith("pickle_load")
            or name.endswith("Unpickler")
        ):
            found.append(name)
        elif name == "torch.load" and keywords.get("weights_only") != "True":
            found.append(f"torch.load without weights_only=True (line {node.lineno})")
        elif name.endswith(("np.load", "numpy.load")) and keywords.get("allow_pickle") == "True":
            found.append(f"np.load(allow_pickle=True) (line {node.lineno})")
        elif name.endswith((".result", ".results")) and not node.args:
            found.append(f"{name}() (line {node.lineno})")
    return found


def test_no_loader_in_the_code_base_can_run_code_from_a_file():
    problems = {}
    for root in SOURCE_ROOTS:
        for path in sorted(root.rglob("*.py")):
            found = unsafe_loads(ast.parse(path.read_text(), str(path)))
            if found:
                problems[str(path.relative_to(root.parent))] = found
    assert problems == {}


def test_the_audit_sees_each_unsafe_call():
    code = (
        "import pickle, torch, numpy as np\n"
        "pickle.load(f)\ntorch.load(p)\ntorch.load(p, weights_only=False)\n"
        "np.load(p, allow_pickle=True)\nsubmitit.core.utils.pickle_load(p)\njob.result()\n"
        "torch.load(p, weights_only=True)\nnp.load(p)\n"
    )
    assert len(unsafe_loads(ast.parse(code))) == 6
