"""Property-based fuzzing: every hostile input ends in a result or a one-line HarnessError.

Config parsing (``--set`` values, TOML documents), the metadata readers of every data set
loader, and audio reading (random WAV headers and payloads). The default (``ci``) profile is
derandomized; ``HARNESS_FUZZ_SCALE`` multiplies the case counts (``FUZZ_CASES`` in total).
"""

from __future__ import annotations

import json
import math
import os
import struct
import tempfile
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from harness.data.audio import check_header, read_audio  # noqa: E402
from harness.nn.impulse import read_ir  # noqa: E402
from harness.registry.config import parse_set, read_toml, resolve  # noqa: E402
from harness.registry.plugins import load_plugins  # noqa: E402
from harness.util.errors import HarnessError  # noqa: E402

SCALE = float(os.environ.get("HARNESS_FUZZ_SCALE", "1"))
CASES = {
    "set": 120,
    "typed": 80,
    "toml": 80,
    "tau22": 50,
    "esc50": 40,
    "csv_loaders": 40,
    "json_loaders": 40,
    "list_loaders": 40,
    "wav": 120,
}
FUZZ_CASES = sum(CASES.values())
"""Generated cases in the default run (710)."""

PLUGINS = load_plugins()


def cases(name: str) -> settings:
    return settings(max_examples=max(1, round(CASES[name] * SCALE)))


def outcome(call: Callable[[], Any]) -> Any:
    """``call()``, which may only fail with a HarnessError whose message is one line."""
    try:
        return call()
    except HarnessError as err:
        message = str(err)
        assert message and "\n" not in message, repr(message)
        return err


# -- config parsing -------------------------------------------------------------------------

KEYS = sorted(
    {"run.epochs", "run.lr", "run.betas", "run.device", "run.seed", "run.plateau_factor"}
    | {"method.name", "method.alpha", "method.beta", "method.label_smoothing", "aug.names"}
    | {"dataset.name", "dataset.scale", "dataset.root", "dataset.clip_seconds", "protocol.names"}
    | {"backbone.size", "backbone.name", "protocol.fewshot.n_way", "aug.multidir.p", "x.y"}
)
NAMES = ["ce", "icl", "passt", "esc50", "tau22-embedded", "fewshot", "linear", "multidir", "x"]
NUMBER_TEXT = st.sampled_from(
    ["nan", "inf", "-inf", "1e400", "-0", "0", "1", "-1", "0.5", "1e-9", "2", "1e12", "0x10"]
)
VALUE_TEXT = st.one_of(
    NUMBER_TEXT,
    st.sampled_from(NAMES),
    st.text(max_size=12),
    st.lists(NUMBER_TEXT, min_size=1, max_size=3).map(",".join),
)


@cases("set")
@given(st.lists(st.tuples(st.one_of(st.sampled_from(KEYS), st.text(max_size=10)), VALUE_TEXT)))
def test_set_assignments_parse_or_fail_with_one_line(pairs):
    assignments = [f"{k}={v}" for k, v in pairs]
    outcome(lambda: resolve(parse_set(assignments), PLUGINS))


SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(NAMES),
    st.text(max_size=8),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


def section(name: str) -> st.SearchStrategy:
    fields = sorted({k.split(".", 1)[1] for k in KEYS if k.startswith(f"{name}.")})
    return st.dictionaries(st.sampled_from([*fields, "bogus"]), VALUES, max_size=3)


RAW = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "run": st.one_of(section("run"), SCALARS),
            "method": section("method"),
            "dataset": section("dataset"),
            "aug": section("aug"),
            "protocol": section("protocol"),
            "backbone": section("backbone"),
        },
    ),
    st.dictionaries(st.text(max_size=6), VALUES, max_size=3),
)


@cases("typed")
@given(RAW)
def test_typed_config_values_resolve_or_fail_with_one_line(raw):
    outcome(lambda: resolve(raw, PLUGINS))


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return (
            "nan"
            if math.isnan(value)
            else ("inf" if value > 0 else "-inf")
            if math.isinf(value)
            else repr(value)
        )
    if isinstance(value, int | str):
        return json.dumps(value)
    return json.dumps(str(value))


TOML_LINES = st.lists(
    st.one_of(
        st.sampled_from(
            ["[run]", "[method]", "[dataset]", "[aug]", "[protocol]", "[x]", "run = 5"]
        ),
        st.tuples(st.sampled_from([k.split(".")[-1] for k in KEYS]), SCALARS).map(
            lambda kv: f"{kv[0]} = {toml_value(kv[1])}"
        ),
        st.text(max_size=20),
    ),
    max_size=8,
)


@cases("toml")
@given(TOML_LINES, st.binary(max_size=8))
def test_toml_documents_resolve_or_fail_with_one_line(lines, junk):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "c.toml"
        path.write_bytes("\n".join(lines).encode("utf-8", "surrogatepass") + junk)

        def load() -> Any:
            return resolve(read_toml(path), PLUGINS)

        outcome(load)


def test_a_valid_toml_document_resolves():
    doc = '[run]\nepochs = 2\nlr = 0.01\n[method]\nname = "icl"\nalpha = 1\n'
    cfg = resolve(tomllib.loads(doc), PLUGINS)
    assert cfg.run.epochs == 2 and cfg.method.config.alpha == 1.0


# -- metadata readers of the data set loaders ------------------------------------------------

CELL = st.one_of(
    st.sampled_from(["", " ", "a", "b", "s1", "1", "6", "x", "true", "airport", "park"]),
    st.sampled_from(["audio/airport-lisbon-1-2-0-a.wav", "audio/park-paris-1-2-3-b.wav"]),
    st.sampled_from(["1-100-A-0.wav", "1-101-A-1.wav", "dog", "rain", '"q', "a,b", "\x00"]),
    st.text(max_size=6),
)


def table_text(header: list[str], sep: str) -> st.SearchStrategy:
    rows = st.lists(st.lists(CELL, min_size=0, max_size=len(header) + 1), max_size=5)
    head = st.one_of(st.just(header), st.permutations(header), st.lists(CELL, max_size=4))
    return st.tuples(head, rows).map(
        lambda hr: "\n".join(sep.join(r) for r in [hr[0], *hr[1]]) + "\n"
    )


def write(path: Path, text: str, junk: bytes = b"") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8", "surrogatepass") + junk)


def touch_listed(root: Path, text: str) -> None:
    """Create the audio files a table names (so loaders get past the existence check)."""
    for token in set(text.replace("\t", "\n").replace(",", "\n").split("\n")):
        if token.endswith(".wav") and ".." not in token and not token.startswith("/"):
            target = root / token.strip()
            for base in (target, root / "audio" / token.strip()):
                try:
                    base.parent.mkdir(parents=True, exist_ok=True)
                    base.write_bytes(b"")
                except (OSError, ValueError):
                    pass


TAU_META = ["filename", "scene_label", "identifier", "source_label"]


@cases("tau22")
@given(
    table_text(TAU_META, "\t"),
    table_text(["filename", "scene_label"], "\t"),
    table_text(["filename", "scene_label"], "\t"),
    st.binary(max_size=4),
)
def test_tau22_tables_load_or_fail_with_one_line(meta, train, evaluate, junk):
    from harness_plugins.datasets._tau22_layout import load_tau22

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        write(root / "meta.csv", meta, junk)
        write(root / "evaluation_setup" / "fold1_train.csv", train)
        write(root / "evaluation_setup" / "fold1_evaluate.csv", evaluate)
        touch_listed(root, meta)
        outcome(lambda: load_tau22(root, merge_segments=bool(junk)))


ESC_FIELDS = ["filename", "fold", "target", "category", "esc10", "src_file", "take"]


@cases("esc50")
@given(table_text(ESC_FIELDS, ","), st.binary(max_size=4))
def test_esc50_csv_loads_or_fails_with_one_line(text, junk):
    from harness_plugins.datasets._esc50_layout import read_esc50

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        write(root / "meta" / "esc50.csv", text, junk)
        touch_listed(root, text)
        outcome(lambda: read_esc50(root, esc10_only=bool(junk)))


@cases("csv_loaders")
@given(
    table_text(["fname", "label", "manually_verified"], ","),
    table_text(["fname", "label", "usage"], ","),
    st.booleans(),
)
def test_fsdkaggle2018_csvs_load_or_fail_with_one_line(train, test, verified):
    from harness_plugins.datasets.fsdkaggle2018 import META, TEST_CSV, TRAIN_CSV, FsdKaggle2018

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        write(root / META / TRAIN_CSV, train)
        write(root / META / TEST_CSV, test)
        dataset = FsdKaggle2018(FsdKaggle2018.Config(root=root, verified_only=verified))
        outcome(dataset.load)


JSON_VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.text(max_size=6),
        st.sampled_from(["a.wav", "keyboard_acoustic_001-060-100", "keyboard_acoustic"]),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.sampled_from(["data", "wav", "labels", "note_str", "instrument_str", "x"]),
            inner,
            max_size=3,
        ),
    ),
    max_leaves=8,
)


@cases("json_loaders")
@given(JSON_VALUES, st.binary(max_size=3), st.booleans())
def test_nsynth_and_audioset_json_load_or_fail_with_one_line(value, junk, nested):
    from harness_plugins.datasets._common import read_audioset_json
    from harness_plugins.datasets.nsynth import read_examples

    text = json.dumps({"n": value} if nested else value)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        write(root / "examples.json", text, junk)
        outcome(lambda: read_examples(root, "instrument_str", "nsynth"))
        outcome(lambda: read_audioset_json(root / "examples.json"))


LIST_LINE = st.one_of(
    st.sampled_from(["yes/a.wav", "no/b.wav", "1 id10001/v/00001.wav", "3 id1/x/1.wav", "2 a/b"]),
    st.text(max_size=12),
)


@cases("list_loaders")
@given(st.lists(LIST_LINE, max_size=5), st.binary(max_size=3))
def test_speech_commands_and_voxceleb_lists_load_or_fail_with_one_line(lines, junk):
    from harness_plugins.datasets._speech_commands_layout import read_list
    from harness_plugins.datasets._voxceleb1_layout import read_iden_split

    text = "\n".join(lines)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        write(root / "list.txt", text, junk)
        touch_listed(root, text)
        outcome(lambda: read_list(root / "list.txt", {"yes", "no"}, "speech-commands"))
        outcome(lambda: read_iden_split(root / "list.txt", "voxceleb1"))


# -- audio reading -------------------------------------------------------------------------


def wav_bytes(
    fmt: int, channels: int, rate: int, bits: int, payload: bytes, data_len: int | None
) -> bytes:
    block = max(1, channels * bits // 8) & 0xFFFF
    fmt_chunk = struct.pack("<HHIIHH", fmt, channels, rate, rate * block & 0xFFFFFFFF, block, bits)
    length = len(payload) if data_len is None else data_len
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt_chunk + b"data"
    body += struct.pack("<I", length & 0xFFFFFFFF) + payload
    return b"RIFF" + struct.pack("<I", len(body)) + body


FLOATS = st.lists(
    st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=1, max_size=64
).map(lambda xs: np.asarray(xs, dtype="<f4").tobytes())


@cases("wav")
@given(
    st.sampled_from([1, 3, 2, 0, 0xFFFE, 7]),
    st.sampled_from([1, 2, 0, 3, 65535]),
    st.sampled_from([16000, 44100, 1, 0, 2**31]),
    st.sampled_from([16, 32, 8, 24, 0, 7]),
    st.one_of(FLOATS, st.binary(max_size=256)),
    st.one_of(st.none(), st.integers(min_value=0, max_value=2**32 - 1)),
    st.integers(min_value=0, max_value=40),
)
def test_random_wav_files_read_or_fail_with_one_line(fmt, channels, rate, bits, payload, n, cut):
    data = wav_bytes(fmt, channels, rate, bits, payload, n)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "x.wav"
        path.write_bytes(data[: len(data) - cut] if cut < len(data) else data)
        for read in (read_audio, read_ir):
            result = outcome(lambda r=read: r(path))
            if not isinstance(result, HarnessError):
                samples, got_rate = result
                assert got_rate > 0 and samples.size > 0 and np.isfinite(samples).all()
                assert np.abs(samples).max() <= 1e3
        outcome(lambda: check_header(path))
