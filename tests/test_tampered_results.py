"""Issue 23 item 8: result files edited by hand or by another program.

Hypothesis rewrites one field (or a whole line) of the files the harness reads back from an
output folder with any JSON value (huge numbers, NaN, Infinity, strings, arrays, tables,
``null``) or drops it: a run's ``metrics.jsonl`` and ``config.json`` under ``harness plot
curves``, a sweep job's status JSON and the sweep state file under ``harness sweep --status``,
a WebDataset shard ``manifest.json``. Each ends in a result or one line (exit 2), never a
traceback, and nothing read runs code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import event, example, given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from harness.cli.main import main  # noqa: E402
from harness.data.shards import FORMAT, read_manifest  # noqa: E402
from harness.util.errors import HarnessError  # noqa: E402
from tests.conftest import TOY_PLUGIN  # noqa: E402
from tests.fuzzing import cases  # noqa: E402
from tests.test_untrusted_files import plant_job, write_sweep  # noqa: E402

JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.sampled_from(["step", "epoch", "health", "../../x", "/etc/passwd", ""]),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=5,
)
DROP = object()
"""Drop the field instead of replacing it."""


@st.composite
def tampered(draw, clean: dict[str, Any]) -> dict[str, Any] | Any:
    """``clean`` with one (possibly nested) field replaced or dropped, or not a table at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(JSON_VALUES)
    out = json.loads(json.dumps(clean))
    node, key = out, draw(st.sampled_from(sorted(out)))
    while isinstance(node[key], dict | list) and node[key] and draw(st.booleans()):
        node = node[key]
        key = draw(st.sampled_from(sorted(node))) if isinstance(node, dict) else 0
    value = draw(st.one_of(st.just(DROP), JSON_VALUES))
    if value is DROP:
        del node[key]
    else:
        node[key] = value
    return out


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        main(argv)
        code = 0
    except SystemExit as exit_info:
        code = exit_info.code if isinstance(exit_info.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_ok_or_one_line(code: int, err: str) -> None:
    event(f"exit {code}")
    assert "Traceback" not in err, err
    if code != 0:
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("harness: error:"), err


# --- metrics.jsonl and config.json under `plot curves` -----------------------------------------

STEP = {
    "event": "step",
    "stage": 1,
    "epoch": 1,
    "step": 2,
    "global_step": 2,
    "loss": 0.7,
    "lr": 0.01,
}
EPOCH = {"event": "epoch", "stage": 1, "epoch": 1, "global_step": 4, "loss": 0.6, "acc": 0.5}
CONFIG = {
    "method": {"name": "ce"},
    "backbone": {"name": "toy"},
    "dataset": {"name": "toy-tones"},
    "aug": {"names": ["multidir"]},
    "run": {"seed": 0},
}


@cases(15)
@given(
    which=st.sampled_from(["step", "epoch", "config", "line"]),
    data=st.data(),
)
@example(which="config", data=None)  # found by this fuzzer: aug.names = null, a traceback
@example(which="step", data=None)  # global_step = "x"
def test_a_tampered_metrics_log_or_config_plots_or_is_one_line(
    tmp_path_factory, capsys, which, data
):
    folder = tmp_path_factory.mktemp("run")
    events = [dict(STEP), dict(EPOCH), {**STEP, "global_step": 6, "loss": 0.5}]
    config: Any = CONFIG
    if data is None:  # the explicit examples
        config = {**CONFIG, "aug": {"names": None}, "method": 5}
        events[0] = {**STEP, "global_step": "x"} if which == "step" else events[0]
    elif which == "config":
        config = data.draw(tampered(CONFIG))
    elif which == "line":
        events[1] = data.draw(st.one_of(JSON_VALUES, st.text(max_size=10)))
    else:
        events[0 if which == "step" else 1] = data.draw(
            tampered(events[0 if which == "step" else 1])
        )
    lines = [e if isinstance(e, str) else json.dumps(e) for e in events]
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "config.json").write_text(json.dumps(config))
    output = folder / "curves.png"
    code, _, err = run_cli(
        ["plot", "curves", "--run", str(folder), "--output", str(output)], capsys
    )
    assert_ok_or_one_line(code, err)
    assert output.exists() == (code == 0)


# --- sweep --status: a job's status JSON and the sweep state file ------------------------------


@pytest.fixture(scope="module")
def sweep_spec(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sweep")
    spec, config_hash = write_sweep(folder)
    return folder, spec, config_hash


GOOD_STATUS = {"outcome": "success", "run_id": "r1"}


@cases(30)
@given(status=st.one_of(tampered(GOOD_STATUS), tampered({"outcome": "error", "error": "E: x"})))
def test_a_tampered_job_status_is_a_status_line_or_one_line(capsys, sweep_spec, status):
    folder, spec, config_hash = sweep_spec
    jobs = plant_job(folder, config_hash)
    (jobs / "4242_0_status.json").write_text(json.dumps(status))
    argv = ["--plugin", str(TOY_PLUGIN), "sweep", str(spec), "--out", str(folder / "runs")]
    code, out, err = run_cli([*argv, "--status"], capsys)
    assert_ok_or_one_line(code, err)
    if code == 0:
        assert all("\n" not in line for line in out.splitlines())


GOOD_ENTRY = {"executor": "local", "job_id": "4242", "folder": "/tmp", "host": "elsewhere"}


@cases(30)
@given(entry=tampered(GOOD_ENTRY))
def test_a_tampered_sweep_state_entry_is_a_status_line_or_one_line(capsys, sweep_spec, entry):
    folder, spec, config_hash = sweep_spec
    plant_job(folder, config_hash)
    state = folder / "runs" / "results.sweep-jobs.json"
    state.write_text(json.dumps({config_hash: entry}))
    argv = ["--plugin", str(TOY_PLUGIN), "sweep", str(spec), "--out", str(folder / "runs")]
    code, _, err = run_cli([*argv, "--status"], capsys)
    assert_ok_or_one_line(code, err)


# --- a shard manifest ------------------------------------------------------------------------


def shard_folder(folder: Path) -> dict[str, Any]:
    (folder / "shard-000000.tar").write_bytes(b"x" * 512)
    return {
        "format": FORMAT,
        "sample_rate": 16000,
        "length": 16000,
        "clips": 3,
        "clip_list": "abc",
        "shards": [{"name": "shard-000000.tar", "clips": 3, "bytes": 512, "sha256": "0" * 64}],
    }


def test_the_clean_shard_manifest_reads(tmp_path):
    manifest = shard_folder(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert read_manifest(str(tmp_path)).clips == 3


@cases(60)
@given(data=st.data())
def test_a_tampered_shard_manifest_reads_or_is_one_line(tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("shards")
    manifest = data.draw(tampered(shard_folder(folder)))
    (folder / "manifest.json").write_text(json.dumps(manifest))
    try:
        shards = read_manifest(str(folder))
    except HarnessError as err:
        event("refused")
        assert "\n" not in str(err) and str(folder) in str(err)
        return
    event("read")
    assert sum(shards.counts) == shards.clips
    for name in shards.names:  # a shard is a file of the manifest's folder, nothing else
        assert (folder / name).resolve().parent == folder.resolve()
