"""Issue 23 item 8: leaderboard and sweep specs whose fields hold values of any type.

Hypothesis writes spec files whose every field is either of its right type or any TOML value
(numbers huge and non-finite, strings, booleans, arrays, tables, nested): ``harness
leaderboard --spec`` and ``harness sweep --dry-run`` either succeed (the output written) or
stop with one line and exit 2, writing nothing; never a traceback.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import event, example, given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from harness.cli.main import main  # noqa: E402
from harness.results.store import ResultStore  # noqa: E402
from tests.fuzzing import cases  # noqa: E402
from tests.test_leaderboard import record  # noqa: E402

FUZZ = cases(60)


def toml(value: Any) -> str:
    """``value`` as a TOML value (inline tables and arrays)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, int | str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(map(toml, value)) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {toml(v)}" for k, v in value.items()) + "}"


def toml_document(table: dict[str, Any]) -> str:
    return "".join(f"{json.dumps(key)} = {toml(value)}\n" for key, value in table.items())


WORDS = st.sampled_from(["ce", "icl", "none", "multidir", "method", "aug", "seed", "", "é|%"])
SCALARS = st.one_of(
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    WORDS,
    st.text(max_size=8),
)
ANY = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.one_of(WORDS, st.text(max_size=4)), inner, max_size=3),
    ),
    max_leaves=6,
)


def field(right: st.SearchStrategy) -> st.SearchStrategy:
    """A value nested in a field: mostly of its right type, else anything."""
    return st.one_of(right, right, right, ANY)


@st.composite
def at_most_one_wrong(draw, fields: dict[str, st.SearchStrategy]) -> dict[str, Any]:
    """A spec of right-typed fields, or one with a single field holding any value."""
    spec = draw(st.fixed_dictionaries({}, optional=fields))
    if draw(st.booleans()):
        spec[draw(st.sampled_from(sorted(fields)))] = draw(ANY)
    return spec


MATCH_KEYS = st.sampled_from(["method", "aug", "backbone", "seed", "method.alpha", "bogus", ""])
ROW = st.fixed_dictionaries(
    {"label": field(st.one_of(WORDS, st.integers(), st.floats()))},
    optional={"match": field(st.dictionaries(MATCH_KEYS, ANY, max_size=3))},
)
METRIC_WORDS = st.sampled_from(["logloss", "acc", "a", "overall", "bogus"])
LEADERBOARD_SPEC = at_most_one_wrong(
    {
        "title": WORDS,
        "protocol": st.sampled_from(["device-logloss", "device-probe", "bogus"]),
        "metric": METRIC_WORDS,
        "agg": st.sampled_from(["best", "mean", "both", "runs", "bogus"]),
        "baseline": WORDS,
        "filters": st.dictionaries(MATCH_KEYS, WORDS, max_size=2),
        "where": st.dictionaries(MATCH_KEYS, field(WORDS), max_size=2),
        "rows": st.lists(ROW, max_size=3),
        "columns": st.lists(METRIC_WORDS, max_size=3),
        "recipe_augs": st.lists(WORDS, max_size=2),
    }
)


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    """``harness`` in this process: (exit code, stderr)."""
    try:
        main(argv)
        code = 0
    except SystemExit as exit_info:
        code = exit_info.code if isinstance(exit_info.code, int) else 1
    return code, capsys.readouterr().err


def assert_ok_or_one_line(code: int, err: str) -> None:
    event(f"exit {code}")  # --hypothesis-show-statistics: how many render, how many refuse
    assert "Traceback" not in err, err
    if code != 0:
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("harness: error:"), err


@pytest.fixture(scope="module")
def board_store(tmp_path_factory) -> Path:
    store = tmp_path_factory.mktemp("board") / "runs.sqlite"
    results = ResultStore(store)
    for i, (method, aug) in enumerate([("ce", "none"), ("icl", "multidir"), ("ce", "none")]):
        results.add(record(f"r{i}", method, aug, i % 2, a=1.0 + i, s4=1.5 - 0.1 * i))
    return store


@FUZZ
@given(spec=LEADERBOARD_SPEC)
@example(spec={"columns": ["logloss", "logloss"]})  # found by this fuzzer: a pandas traceback
def test_a_leaderboard_spec_with_fields_of_any_type_renders_or_is_one_line(
    tmp_path_factory, capsys, board_store, spec
):
    folder = tmp_path_factory.mktemp("spec")
    path, output = folder / "spec.toml", folder / "board.md"
    path.write_text(toml_document(spec))
    argv = [
        "leaderboard",
        "--spec",
        str(path),
        "--store",
        str(board_store),
        "--output",
        str(output),
    ]
    code, err = run_cli(argv, capsys)
    assert_ok_or_one_line(code, err)
    assert output.exists() == (code == 0)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["spec.toml", *(["board.md"] if code == 0 else [])]
    )


AXES = st.sampled_from(["method", "aug", "run.lr", "run.epochs", "method.alpha", "bogus", ""])
SWEEP = st.fixed_dictionaries(
    {},
    optional={
        "base": field(st.fixed_dictionaries({}, optional={"method": st.just({"name": "ce"})})),
        "seeds": field(st.lists(st.integers(0, 3), max_size=3)),
        "grid": field(
            st.lists(
                st.dictionaries(AXES, field(st.lists(ANY, max_size=2)), max_size=2), max_size=2
            )
        ),
    },
)


@FUZZ
@given(sweep=SWEEP)
def test_a_sweep_spec_with_fields_of_any_type_plans_or_is_one_line(tmp_path_factory, capsys, sweep):
    folder = tmp_path_factory.mktemp("sweep")
    path = folder / "sweep.toml"
    path.write_text("[sweep]\n" + toml_document(sweep))
    out = folder / "runs"
    argv = ["sweep", str(path), "--dry-run", "--out", str(out), "--store", str(folder / "s.sqlite")]
    code, err = run_cli(argv, capsys)
    assert_ok_or_one_line(code, err)
    assert not out.exists() or not any(out.iterdir())
