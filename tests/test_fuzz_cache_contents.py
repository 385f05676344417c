"""Issue 23 item 8: cache entries whose checksums match but whose contents are wrong.

A done marker rewritten over a wrong file (a build bug, a hand-edited entry, a copy from
another version) passes every checksum; what the file holds must still be checked. Hypothesis
draws the wrong contents: ``waves.npy`` of another dtype or shape, ``scales.npy`` with NaN,
infinite, zero or negative scales, an embedding matrix of another dtype, shape or with
non-finite values, a non-tensor. Each is refused with exactly one warning and rebuilt, and
what is read equals a clean build.
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from harness.api import Clip  # noqa: E402
from harness.data.embeddings import cached_embed, embedding_cache_dir  # noqa: E402
from harness.util.cache import write_done_marker  # noqa: E402
from tests.fuzzing import cases  # noqa: E402
from tests.test_fuzz_caches import (  # noqa: E402
    RATE,
    audio_rows,
    embedding_ctx,
    rebuilt_with_warnings,
)

FUZZ = cases(15)


@pytest.fixture(scope="module")
def tones(tmp_path_factory) -> list[Clip]:
    """Five short tones (the clips every decoded-audio cache case builds from)."""
    folder = tmp_path_factory.mktemp("tones")
    clips = []
    for i in range(5):
        t = np.arange(RATE // 4) / RATE
        wave = (0.2 * (i + 1) * np.sin(2 * np.pi * 300 * (i + 1) * t)).astype(np.float32)
        sf.write(folder / f"c{i}.wav", wave, RATE, subtype="FLOAT")
        clips.append(Clip(folder / f"c{i}.wav", i % 2, "a"))
    return clips


DTYPES = st.sampled_from([np.int16, np.int8, np.int32, np.float16, np.float32, np.float64])


@st.composite
def wrong_waves(draw, shape: tuple[int, int]) -> np.ndarray:
    """An array that is not the entry's ``int16`` rows of ``shape``."""
    dtype = draw(DTYPES)
    rows = draw(st.integers(0, shape[0] + 2))
    columns = draw(st.integers(0, shape[1] + 3))
    assume_wrong = dtype != np.int16 or (rows, columns) != shape
    if not assume_wrong:
        columns += 1
    return np.zeros((rows, columns), dtype)


@FUZZ
@given(data=st.data())
def test_waves_of_another_dtype_or_shape_with_a_matching_checksum_are_rebuilt(
    tmp_path_factory,
    tones,
    data,
):
    cache = tmp_path_factory.mktemp("waves")
    folder, clean = audio_rows(tones, cache)
    waves = np.load(folder / "waves.npy")
    np.save(folder / "waves.npy", data.draw(wrong_waves(waves.shape)))
    write_done_marker(folder)  # as if the build itself had written them
    (_, rows), messages = rebuilt_with_warnings(lambda: audio_rows(tones, cache))
    assert np.array_equal(rows, clean)
    assert len(messages) == 1 and "rebuilding it" in messages[0], messages


BAD_SCALES = st.sampled_from([np.nan, np.inf, -np.inf, 0.0, -1.0, 0.5])


@FUZZ
@given(bad=BAD_SCALES, where=st.integers(0, 4), dtype=st.sampled_from([np.float32, np.float64]))
def test_bad_scales_with_a_matching_checksum_are_rebuilt(
    tmp_path_factory,
    tones,
    bad,
    where,
    dtype,
):
    cache = tmp_path_factory.mktemp("scales")
    folder, clean = audio_rows(tones, cache)
    scales = np.load(folder / "scales.npy").astype(dtype)
    scales[where] = bad
    np.save(folder / "scales.npy", scales)
    write_done_marker(folder)
    (_, rows), messages = rebuilt_with_warnings(lambda: audio_rows(tones, cache))
    assert np.array_equal(rows, clean)
    assert len(messages) == 1 and "rebuilding it" in messages[0], messages


@st.composite
def wrong_embeddings(draw) -> object:
    """Not the clean ``2 x 3`` float matrix: another shape or dtype, non-finite, not a tensor."""
    kind = draw(st.sampled_from(["shape", "dtype", "nonfinite", "not a tensor"]))
    if kind == "shape":
        shape = draw(
            st.lists(st.integers(0, 4), min_size=0, max_size=3).filter(lambda s: s != [2, 3])
        )
        return torch.zeros(shape)
    if kind == "dtype":
        return torch.zeros(2, 3, dtype=draw(st.sampled_from([torch.int64, torch.bool])))
    if kind == "nonfinite":
        matrix = torch.arange(6.0).reshape(2, 3)
        matrix[draw(st.integers(0, 1)), draw(st.integers(0, 2))] = draw(
            st.sampled_from([float("nan"), float("inf"), -float("inf")])
        )
        return matrix
    return {"embeddings": torch.zeros(2, 3)}


@FUZZ
@given(wrong=wrong_embeddings())
def test_embeddings_of_another_shape_dtype_or_kind_with_a_matching_checksum_are_rebuilt(
    tmp_path_factory, wrong
):
    ctx, calls = embedding_ctx(tmp_path_factory.mktemp("embeddings"))
    clean = cached_embed(ctx, "eval", "h")
    folder = embedding_cache_dir(ctx, "eval", "h")
    torch.save(wrong, folder / "embeddings.pt")
    write_done_marker(folder)
    again, messages = rebuilt_with_warnings(lambda: cached_embed(ctx, "eval", "h"))
    assert torch.equal(again, clean) and len(calls) == 2
    assert len(messages) == 1 and "rebuilding it" in messages[0], messages
    assert torch.equal(cached_embed(ctx, "eval", "h"), clean) and len(calls) == 2
