"""harness.nn.impulse: convolution, Kaiser truncation, loading, bad files, response statistics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.signal
import scipy.special
import soundfile as sf
import torch
import torchaudio.functional as AF

from harness.nn.impulse import (
    IRBank,
    analog_highpass,
    analog_low_shelf,
    analog_lowpass,
    analog_peaking,
    block_length,
    convolve,
    fft_length,
    frequency_responses_db,
    kaiser_truncate,
    kaiser_window,
    list_ir_files,
    load_ir_files,
    load_sofa,
    normalize_irs,
    onsets,
    quantile_bands,
    read_ir,
)
from harness.util.errors import DataError


def decaying_ir(length: int, onset: int, rng: np.random.Generator) -> np.ndarray:
    ir = np.zeros(length)
    tail = length - onset
    ir[onset:] = rng.standard_normal(tail) * np.exp(-np.arange(tail) / (tail / 8))
    ir[onset] = 1.0
    return ir


# -- convolution --------------------------------------------------------------


# one long FFT: (3200, 1024), (500, 700); overlap-save blocks: the others, across block edges
@pytest.mark.parametrize(
    "frames,taps", [(3200, 1024), (500, 700), (4000, 300), (9000, 1024), (7170, 1024), (8000, 1)]
)
def test_convolve_equals_first_samples_of_scipy_fftconvolve(frames: int, taps: int) -> None:
    rng = np.random.default_rng(0)
    wave = rng.standard_normal((5, frames)).astype(np.float32)
    irs = rng.standard_normal((5, taps)).astype(np.float32) / np.sqrt(taps)
    ours = convolve(torch.from_numpy(wave), torch.from_numpy(irs)).numpy()
    reference = np.stack(
        [
            scipy.signal.fftconvolve(w.astype(np.float64), h)[:frames]
            for w, h in zip(wave, irs, strict=True)
        ]
    )
    assert ours.shape == (5, frames)
    assert np.abs(ours - reference).max() <= 1e-5 * np.abs(reference).max()


@pytest.mark.parametrize("frames", [1000, 30000])
def test_convolve_float64_is_exact_to_rounding(frames: int) -> None:
    rng = np.random.default_rng(1)
    wave, irs = rng.standard_normal((3, frames)), rng.standard_normal((3, 64))
    ours = convolve(torch.from_numpy(wave), torch.from_numpy(irs)).numpy()
    reference = np.stack([np.convolve(w, h)[:frames] for w, h in zip(wave, irs, strict=True)])
    np.testing.assert_allclose(ours, reference, atol=1e-11)


def test_convolve_with_delayed_impulse_shifts_the_wave() -> None:
    wave = torch.randn(2, 100)
    irs = torch.zeros(2, 16)
    irs[0, 0] = 1.0
    irs[1, 5] = -2.0
    out = convolve(wave, irs)
    torch.testing.assert_close(out[0], wave[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1, 5:], -2.0 * wave[1, :95], atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1, :5], torch.zeros(5), atol=1e-5, rtol=0)


def test_block_length_choice() -> None:
    assert block_length(32000, 1024) == 8192
    assert block_length(32000, 16000) == 0  # long responses: one FFT
    assert block_length(3000, 1024) == 0


def test_fft_length_is_smooth_and_long_enough() -> None:
    n = fft_length(32000 + 16000 - 1)
    assert n >= 47999
    rest = n
    for prime in (2, 3, 5, 7):
        while rest % prime == 0:
            rest //= prime
    assert rest == 1


def test_convolve_rejects_mismatched_batches() -> None:
    with pytest.raises(ValueError):
        convolve(torch.zeros(2, 10), torch.zeros(3, 4))


# -- Kaiser truncation ----------------------------------------------------------


@pytest.mark.parametrize("length,beta", [(1024, 2.0), (17, 2.0), (256, 8.6)])
def test_kaiser_window_equals_scipy(length: int, beta: float) -> None:
    ours = kaiser_window(length, beta).numpy()
    np.testing.assert_allclose(
        ours, scipy.signal.windows.kaiser(length, beta, sym=True), atol=1e-12
    )


def test_half_kaiser_window_is_right_half_of_odd_scipy_window() -> None:
    length, beta = 1024, 2.0
    half = kaiser_window(length, beta, half=True).numpy()
    full = scipy.signal.windows.kaiser(2 * length - 1, beta, sym=True)
    np.testing.assert_allclose(half, full[length - 1 :], atol=1e-12)
    assert half[0] == pytest.approx(1.0)
    assert half[-1] == pytest.approx(1.0 / scipy.special.i0(beta))
    assert np.all(np.diff(half) < 0)


def test_literal_truncation_is_first_samples_times_full_window() -> None:
    irs = torch.from_numpy(np.random.default_rng(2).standard_normal((3, 3000)))
    out = kaiser_truncate(irs, 1024, beta=2.0, window="full", align="start")
    expected = irs[:, :1024].numpy() * scipy.signal.windows.kaiser(1024, 2.0)
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-12)


def test_onset_aligned_half_window_truncation() -> None:
    rng = np.random.default_rng(3)
    irs = torch.from_numpy(np.stack([decaying_ir(3000, 200, rng), decaying_ir(3000, 10, rng)]))
    out = kaiser_truncate(irs, 1024, beta=2.0, window="half", align="onset", pre=16)
    window = scipy.signal.windows.kaiser(2 * 1024 - 1, 2.0)[1023:]
    np.testing.assert_allclose(
        out[0].numpy(), irs[0, 184 : 184 + 1024].numpy() * window, atol=1e-12
    )
    # the onset is closer to the start than the pre-roll: the segment starts at 0
    np.testing.assert_allclose(out[1].numpy(), irs[1, :1024].numpy() * window, atol=1e-12)


def test_truncation_zero_pads_short_responses() -> None:
    irs = torch.zeros(1, 300, dtype=torch.float64)
    irs[0, 100] = 1.0
    irs[0, 299] = 0.5
    out = kaiser_truncate(irs, 1024, beta=2.0, window="full", align="onset", pre=0)
    window = scipy.signal.windows.kaiser(1024, 2.0)
    assert out[0, 0] == pytest.approx(window[0])
    assert out[0, 199] == pytest.approx(0.5 * window[199])
    assert torch.count_nonzero(out[0, 200:]) == 0


def test_onset_is_first_sample_within_20_db_of_the_peak() -> None:
    ir = torch.zeros(1, 100)
    ir[0, 10] = 0.09  # -20.9 dB: before the onset
    ir[0, 30] = -0.2  # -14 dB: the onset
    ir[0, 50] = 1.0
    assert onsets(ir).tolist() == [30]


# -- normalization and the bank ---------------------------------------------------


def test_normalizations() -> None:
    irs = torch.tensor([[3.0, 4.0, 0.0], [0.0, -2.0, 1.0]])
    torch.testing.assert_close(normalize_irs(irs, "energy").norm(dim=-1), torch.ones(2))
    torch.testing.assert_close(
        normalize_irs(irs, "peak"), torch.tensor([[0.75, 1.0, 0], [0, -1, 0.5]])
    )
    assert normalize_irs(irs, "none") is irs


def test_silent_response_is_a_data_error_naming_its_source() -> None:
    irs = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    meta = [{"source": "ok.wav"}, {"source": "/irs/silent.wav"}]
    with pytest.raises(DataError, match="silent.wav"):
        normalize_irs(irs, "energy", meta)


def test_bank_select_where_values() -> None:
    meta = [{"microphone": m, "angle": a} for m, a in [("x", 0.0), ("y", 5.0), ("x", None)]]
    bank = IRBank(torch.arange(6.0).reshape(3, 2), 32000, meta)
    assert bank.values("microphone") == ["x", "y"]
    assert bank.values("angle") == [0.0, 5.0]
    picked = bank.where(lambda m: m["microphone"] == "x")
    assert len(picked) == 2 and picked.irs[:, 0].tolist() == [0.0, 4.0]
    assert bank.select([2, 0]).meta[0]["angle"] is None


# -- loading files ----------------------------------------------------------------


def write(path: Path, data: np.ndarray, rate: int, subtype: str = "PCM_24") -> Path:
    sf.write(str(path), data, rate, subtype=subtype)
    return path


def test_loader_resamples_each_rate_once_and_pads(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    first = 0.5 * decaying_ir(4410, 20, rng)
    second = 0.5 * decaying_ir(6000, 30, rng)
    third = 0.5 * decaying_ir(1600, 5, rng)
    files = [
        write(tmp_path / "A.wav", first, 44100, "PCM_24"),
        write(tmp_path / "B&O_BM2.wav", second, 48000, "FLOAT"),
        write(tmp_path / "C.wav", third, 16000, "PCM_16"),
    ]
    bank = load_ir_files(files, 32000)
    assert bank.sample_rate == 32000
    assert bank.irs.dtype == torch.float32
    assert bank.length == 4000  # 6000 samples at 48 kHz; the others zero-padded
    assert [m["microphone"] for m in bank.meta] == ["A", "B&O_BM2", "C"]
    for row, path, rate in zip(bank.irs, files, (44100, 48000, 16000), strict=True):
        data, _ = sf.read(str(path), dtype="float64")
        expected = AF.resample(torch.from_numpy(data), rate, 32000)
        torch.testing.assert_close(row[: len(expected)].double(), expected, atol=1e-6, rtol=0)
        assert torch.count_nonzero(row[len(expected) :]) == 0


def test_loader_applies_transform_per_chunk(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    files = [
        write(tmp_path / f"m{i}.wav", 0.5 * decaying_ir(3000, 40, rng), 32000) for i in range(5)
    ]
    bank = load_ir_files(files, 32000, transform=lambda irs: irs[:, :100], chunk=2)
    assert bank.irs.shape == (5, 100)


def test_folder_listing_ignores_documents_and_hidden_files(tmp_path: Path) -> None:
    write(tmp_path / "mic.wav", np.array([1.0, 0.5]), 48000)
    (tmp_path / "SOURCE.md").write_text("about these files")
    write(tmp_path / ".hidden.wav", np.array([1.0]), 48000)
    assert list_ir_files(tmp_path) == [tmp_path / "mic.wav"]


def test_empty_folder_is_a_data_error_naming_it(tmp_path: Path) -> None:
    folder = tmp_path / "no_irs_here"
    folder.mkdir()
    (folder / "README.txt").write_text("nothing")
    with pytest.raises(DataError, match="no_irs_here") as err:
        list_ir_files(folder)
    assert "\n" not in str(err.value)


def test_missing_folder_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found: .*missing"):
        list_ir_files(tmp_path / "missing")


def test_non_audio_file_is_a_data_error_naming_it(tmp_path: Path) -> None:
    write(tmp_path / "good.wav", np.array([1.0, 0.5]), 48000)
    (tmp_path / "notes.wav").write_text("this is not audio\nsecond line\n")
    with pytest.raises(DataError, match="notes.wav") as err:
        load_ir_files(list_ir_files(tmp_path), 32000)
    assert "\n" not in str(err.value)


def test_multichannel_file_is_a_data_error(tmp_path: Path) -> None:
    path = write(tmp_path / "stereo.wav", np.zeros((100, 2)) + 0.1, 48000)
    with pytest.raises(DataError, match="stereo.wav has 2 channels"):
        load_ir_files([path], 32000)


# -- SOFA ---------------------------------------------------------------------


@pytest.fixture
def sofar():
    return pytest.importorskip("sofar")


def write_sofa(sofar, path: Path, irs: np.ndarray, rate: int, positions: np.ndarray) -> Path:
    sofa = sofar.Sofa("GeneralFIR")
    sofa.Data_IR = irs
    sofa.Data_SamplingRate = rate
    sofa.Data_Delay = np.zeros((1, irs.shape[1]))
    sofa.SourcePosition = positions
    sofa.SourcePosition_Type = "spherical"
    sofa.SourcePosition_Units = "degree, degree, metre"
    sofar.write_sofa(str(path), sofa)
    return path


def test_sofa_loader_reads_every_receiver_with_positions(sofar, tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    data = rng.standard_normal((4, 2, 480)) * 0.1
    positions = np.array([[a, 0.0, 1.25] for a in (0.0, 90.0, 180.0, -90.0)])
    bank = load_sofa(write_sofa(sofar, tmp_path / "mics.sofa", data, 48000, positions), 32000)
    assert bank.irs.shape == (8, 320)
    assert [m["angle"] for m in bank.meta[::2]] == [0.0, 90.0, 180.0, 270.0]
    assert {m["distance"] for m in bank.meta} == {125.0}
    assert [m["microphone"] for m in bank.meta[:2]] == ["mics#0", "mics#1"]
    expected = AF.resample(torch.from_numpy(data[2, 1]), 48000, 32000)
    torch.testing.assert_close(bank.irs[5].double(), expected, atol=1e-6, rtol=0)


def test_sofa_without_impulse_responses_is_a_data_error(sofar, tmp_path: Path) -> None:
    path = tmp_path / "hrtf.sofa"
    sofar.write_sofa(str(path), sofar.Sofa("SimpleFreeFieldHRTF"))
    with pytest.raises(DataError, match="hrtf.sofa has no impulse responses"):
        load_sofa(path, 32000)


def test_unreadable_sofa_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.sofa"
    path.write_text("not netCDF")
    with pytest.raises(DataError, match="broken.sofa") as err:
        load_sofa(path, 32000)
    assert "\n" not in str(err.value)


# -- response statistics ----------------------------------------------------------


def test_quantile_bands_on_a_hand_made_example() -> None:
    values = np.array([[0.0, 10.0], [4.0, 14.0], [1.0, 11.0], [3.0, 13.0], [2.0, 12.0]])
    bands = quantile_bands(values, (0.5, 1.0, 0.8))
    assert bands.coverage == [1.0, 0.8, 0.5]
    # linear interpolation between order statistics 0..4: q10 = 0.4, q25 = 1, q75 = 3, q90 = 3.6
    np.testing.assert_allclose(bands.lower, [[0, 10], [0.4, 10.4], [1, 11]])
    np.testing.assert_allclose(bands.upper, [[4, 14], [3.6, 13.6], [3, 13]])
    np.testing.assert_allclose(bands.mean, [2, 12])
    np.testing.assert_allclose(bands.median, [2, 12])


def test_quantile_bands_reject_bad_coverage() -> None:
    with pytest.raises(ValueError):
        quantile_bands(np.zeros((3, 2)), (1.5,))


def test_impulse_has_a_flat_response() -> None:
    irs = np.zeros((2, 64))
    irs[0, 0], irs[1, 10] = 1.0, -0.3
    freqs, db = frequency_responses_db(irs, 32000)
    assert freqs[0] == pytest.approx(20.0) and freqs[-1] < 16000
    np.testing.assert_allclose(db, 0.0, atol=1e-9)


def test_two_tap_response_matches_the_analytic_magnitude() -> None:
    rate = 32000
    freqs = np.array([100.0, 4000.0, 8000.0, 12000.0])
    _, db = frequency_responses_db(np.array([[1.0, 0.5]]), rate, freqs=freqs, smoothing=1 / 48)
    analytic = 10 * np.log10(1.25 + np.cos(2 * np.pi * freqs / rate))
    np.testing.assert_allclose(db[0] - db[0, 0], analytic - analytic[0], atol=0.02)


def test_analog_prototypes() -> None:
    f = np.array([1.0, 1000.0, 10000.0, 100000.0])

    def db(h: np.ndarray) -> np.ndarray:
        return 20 * np.log10(np.abs(h))

    assert db(analog_lowpass(f, 1000.0, 4))[1] == pytest.approx(-3.0103, abs=1e-3)
    assert db(analog_lowpass(f, 1000.0, 4))[2] == pytest.approx(-80.0, abs=0.01)
    assert db(analog_highpass(f, 1000.0, 2))[1] == pytest.approx(-3.0103, abs=1e-3)
    assert db(analog_highpass(f, 1000.0, 2))[3] == pytest.approx(0.0, abs=1e-3)
    assert db(analog_peaking(f, 1000.0, 6.0, 1.0))[1] == pytest.approx(6.0, abs=1e-9)
    assert db(analog_low_shelf(f, 1000.0, -4.0))[0] == pytest.approx(-4.0, abs=1e-3)
    assert db(analog_low_shelf(f, 1000.0, -4.0))[3] == pytest.approx(0.0, abs=1e-3)


# -- exact edges of the convolution and of reading a response ------------------------------


def test_convolve_with_an_odd_fft_length_and_a_wider_response_dtype() -> None:
    """frames + taps - 1 = 1215 = 3^5 * 5 is its own (odd) fast length; float64 responses on
    float32 clips give float32 clips."""
    gen = np.random.default_rng(3)
    wave = gen.standard_normal((2, 1000)).astype(np.float32)
    irs = gen.standard_normal((2, 216))
    out = convolve(torch.from_numpy(wave), torch.from_numpy(irs))
    assert out.dtype == torch.float32
    reference = np.stack([np.convolve(w, h)[:1000] for w, h in zip(wave, irs, strict=True)])
    np.testing.assert_allclose(out.numpy(), reference, rtol=1e-4, atol=1e-4)


def test_convolve_refuses_unbatched_input() -> None:
    with pytest.raises(ValueError, match=r"expected wave \[B, T\] and irs \[B, L\]"):
        convolve(torch.zeros(3), torch.zeros(3, 5))
    with pytest.raises(ValueError, match="got \\(2, 8\\) and \\(3, 4\\)"):
        convolve(torch.zeros(2, 8), torch.zeros(3, 4))


@pytest.mark.parametrize(
    ("frames", "taps", "block"),
    [
        (1985, 64, 0),  # 1985 + 64 - 1 = 2048: one FFT of the whole clip
        (1986, 64, 2048),
        (100_000, 256, 2048),  # 8 * 256 = 2048
        (100_000, 257, 4096),
        (4000, 700, 0),  # 8192-sample blocks would exceed the 4699-sample convolution
    ],
)
def test_block_length_is_8x_the_taps_as_a_power_of_two_and_at_least_2048(
    frames: int, taps: int, block: int
) -> None:
    assert block_length(frames, taps) == block


def test_ir_errors_name_the_impulse_response_file(tmp_path: Path) -> None:
    bad = tmp_path / "nan.wav"
    sf.write(bad, np.array([1.0, np.nan, 0.0], dtype=np.float32), 16000, subtype="FLOAT")
    with pytest.raises(DataError, match=r"^impulse-response file .*nan\.wav contains NaN"):
        read_ir(bad)
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, dtype=np.float32), 16000, subtype="FLOAT")
    with pytest.raises(DataError, match=r"^empty impulse-response file .*empty\.wav$"):
        read_ir(empty)
    fine = tmp_path / "one.wav"
    sf.write(fine, np.array([0.5], dtype=np.float32), 16000, subtype="FLOAT")
    data, rate = read_ir(fine)
    assert data.dtype == np.float64 and data.tolist() == [0.5] and rate == 16000
