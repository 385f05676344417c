"""The ``vintage`` and ``multidir`` augmentations and ``harness plot dirs``.

Real MicIRP files (66 vintage microphones) are read from ../shared/data/micirp
beside the checkout; those tests skip when it is absent.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import scipy.signal
import soundfile as sf
import torch
import torchaudio.functional as AF
from click.testing import CliRunner

from harness import hookimpl
from harness.api import Batch, Task
from harness.nn.impulse import (
    ImpulseResponseAugmentation,
    IRBank,
    frequency_responses_db,
    kaiser_truncate,
    quantile_bands,
)
from harness.nn.impulse.multidir import parse_multidir_name, synthetic_multidir
from harness.registry.config import build_dataclass
from harness.registry.plugins import Plugins, load_plugins, new_plugin_manager
from harness.util.errors import DataError, UsageError
from harness_plugins.augmentations.multidir import MultiDir
from harness_plugins.augmentations.vintage import Vintage, synthetic_vintage
from tests.conftest import run_cli

MICIRP = Path(__file__).resolve().parents[2] / "shared" / "data" / "micirp"
needs_micirp = pytest.mark.skipif(not MICIRP.is_dir(), reason=f"{MICIRP} is absent")
DEVICES = ["a", "b", "c", "s1", "s2", "s3"]


def make(cls, task_devices=DEVICES, rate: int = 32000, **config):
    aug = cls(build_dataclass(cls.Config, config, f"aug.{cls.name}"))
    aug.setup(Task(classes=["x", "y"], devices=list(task_devices), sample_rate=rate))
    return aug


def batch_for(devices: list[int], frames: int = 200, seed: int = 0) -> Batch:
    generator = torch.Generator().manual_seed(seed)
    n = len(devices)
    return Batch(
        wave=torch.randn(n, frames, generator=generator),
        label=torch.zeros(n, dtype=torch.long),
        device=torch.tensor(devices),
        index=torch.arange(n),
    )


def response_db_at(irs: torch.Tensor, rate: int, freqs: list[float]) -> np.ndarray:
    return frequency_responses_db(irs, rate, freqs=np.array(freqs))[1]


# -- registration and defaults ---------------------------------------------------


@pytest.mark.parametrize("name,cls", [("vintage", Vintage), ("multidir", MultiDir)])
def test_registered_as_waveform_augmentations(name: str, cls: type) -> None:
    assert load_plugins()["augmentation"].get(name).cls is cls
    cfg = cls.Config()
    assert cls.stage == "waveform"
    assert (cfg.path, cfg.p, cfg.devices, cfg.normalize) == ("", 0.6, ["a"], "energy")


def test_multidir_defaults_follow_section_5_3() -> None:
    cfg = MultiDir.Config()
    # "we window the Multi DIRs dataset to 1024 samples with a Kaiser window (beta = 2)"
    assert (cfg.length, cfg.beta, cfg.window, cfg.align) == (1024, 2.0, "full", "start")
    assert Vintage.Config().length == 0


def test_bad_probability_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="aug.vintage.*p must be in"):
        build_dataclass(Vintage.Config, {"p": "1.5"}, "aug.vintage")


# -- vintage: real MicIRP files ---------------------------------------------------


@needs_micirp
def test_micirp_folder_loads_66_microphones_from_both_rates() -> None:
    files = sorted(MICIRP.glob("*.wav"))
    rates = {sf.info(str(f)).samplerate for f in files}
    assert rates == {44100, 48000}
    aug = make(Vintage, path=str(MICIRP), normalize="none")
    bank = aug.bank
    assert len(bank) == 66 and bank.sample_rate == 32000
    assert sorted(m["microphone"] for m in bank.meta) == sorted(f.stem for f in files)
    assert "B&O_BM2" in bank.values("microphone")
    longest = max(
        math.ceil(sf.info(str(f)).frames * 32000 / sf.info(str(f)).samplerate) for f in files
    )
    assert bank.length == longest
    at_48k = next(f.stem for f in files if sf.info(str(f)).samplerate == 48000)
    for name in ("B&O_BM2", at_48k):
        index = [m["microphone"] for m in bank.meta].index(name)
        data, rate = sf.read(str(MICIRP / f"{name}.wav"), dtype="float64")
        expected = AF.resample(torch.from_numpy(data), rate, 32000)
        got = bank.irs[index, : len(expected)].double()
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


@needs_micirp
def test_micirp_microphone_filter_and_energy_normalization() -> None:
    aug = make(Vintage, path=str(MICIRP), microphones="B&O_BM2,Coles_4038")
    assert aug.bank.values("microphone") == ["B&O_BM2", "Coles_4038"]
    torch.testing.assert_close(aug.irs.norm(dim=-1), torch.ones(2))


@needs_micirp
def test_embedded_vintage_bank_matches_real_statistics() -> None:
    real = make(Vintage, path=str(MICIRP)).bank
    synthetic = make(Vintage).bank
    freqs = [1000.0, 5000.0, 10000.0, 14000.0]
    real_median = np.median(response_db_at(real.irs, 32000, freqs), axis=0)
    synthetic_median = np.median(response_db_at(synthetic.irs, 32000, freqs), axis=0)
    assert np.abs(real_median - synthetic_median).max() < 3.0


# -- vintage: embedded bank ---------------------------------------------------------


def test_embedded_vintage_bank_is_deterministic_and_low_pass() -> None:
    bank = synthetic_vintage(32000)
    again = synthetic_vintage.__wrapped__(32000)
    assert len(bank) == 66 and len(bank.values("microphone")) == 66
    assert torch.equal(bank.irs, again.irs)
    db = response_db_at(bank.irs, 32000, [1000.0, 2000.0, 5000.0, 14000.0])
    bands = quantile_bands(db, (0.8,))
    assert bands.median[3] < -20.0  # pronounced low-pass above 10 kHz
    assert (bands.upper[0, :3] - bands.lower[0, :3]).max() < 12.0  # narrow band at 1-5 kHz
    assert np.all(np.abs(bands.median[:2]) < 3.0)


def test_vintage_truncation_option() -> None:
    aug = make(Vintage, length=512)
    assert aug.irs.shape == (66, 512)


# -- multidir: embedded bank -------------------------------------------------------


def test_embedded_multidir_bank_shape_and_metadata() -> None:
    bank = synthetic_multidir(32000)
    assert bank.irs.shape == (25 * 72 * 3, 1024)
    assert len(bank.values("microphone")) == 25
    assert bank.values("angle") == [float(a) for a in range(0, 360, 5)]
    assert bank.values("distance") == [50.0, 125.0, 500.0]
    patterns = set(bank.values("pattern"))
    assert {"omni", "cardioid", "supercardioid", "figure-8"} <= patterns
    assert set(bank.values("transducer")) == {"condenser", "dynamic", "ribbon"}
    assert torch.isfinite(bank.irs).all()
    # responses decay within the 1024-sample window
    assert bank.irs[:, -8:].abs().max() < 0.05 * bank.irs.abs().max()


def energy(bank, **where) -> float:
    rows = [i for i, m in enumerate(bank.meta) if all(m[k] == v for k, v in where.items())]
    assert len(rows) == 1
    return float(bank.irs[rows[0]].square().sum())


def first(bank, pattern: str, transducer: str) -> str:
    return next(
        m["microphone"]
        for m in bank.meta
        if m["pattern"] == pattern and m["transducer"] == transducer
    )


def test_embedded_multidir_polar_patterns_are_physical() -> None:
    bank = synthetic_multidir(32000)
    cardioid = first(bank, "cardioid", "condenser")
    figure8 = first(bank, "figure-8", "ribbon")
    omni = first(bank, "omni", "condenser")
    at = dict(distance=125.0)
    assert energy(bank, microphone=cardioid, angle=180.0, **at) < 0.25 * energy(
        bank, microphone=cardioid, angle=0.0, **at
    )
    assert energy(bank, microphone=figure8, angle=90.0, **at) < 0.1 * energy(
        bank, microphone=figure8, angle=0.0, **at
    )
    ratio = energy(bank, microphone=omni, angle=90.0, **at) / energy(
        bank, microphone=omni, angle=0.0, **at
    )
    assert 0.5 < ratio < 1.5
    # proximity effect: a figure-8 gains bass at 50 cm relative to 500 cm
    rows = [
        next(
            i
            for i, m in enumerate(bank.meta)
            if (m["microphone"], m["angle"], m["distance"]) == (figure8, 0.0, d)
        )
        for d in (50.0, 500.0)
    ]
    bass = response_db_at(bank.irs[rows], 32000, [80.0])[:, 0]
    assert bass[0] > bass[1] + 3.0


# -- multidir: the published folder layout -----------------------------------------


MICS = ("ShureSM58", "Rode_NT2-A")
TREE_DISTANCES = (50, 125)
TREE_ANGLES = (0, 5, 90, 180, 355)


@pytest.fixture(scope="module")
def multidir_tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("Microphone_Impulse_Responses")
    rng = np.random.default_rng(7)
    for mic in MICS:
        for distance in TREE_DISTANCES:
            folder = root / f"{mic}_{distance}cm_Normalised_IRs" / "IRs"
            folder.mkdir(parents=True)
            for angle in TREE_ANGLES:
                ir = np.zeros(4800)
                ir[100 + distance] = 0.8
                ir[101 + distance :] += (
                    0.05
                    * rng.standard_normal(4699 - distance)
                    * np.exp(-np.arange(4699 - distance) / 300)
                )
                sf.write(
                    str(folder / f"{mic}_{distance}cm_{angle}Deg.wav"), ir, 48000, subtype="PCM_24"
                )
    (root / "README.txt").write_text("Normalised impulse responses")
    return root


def test_multidir_names_are_parsed() -> None:
    meta = parse_multidir_name(Path("x/Rode_NT2-A_125cm_355Deg.wav"))
    assert (meta["microphone"], meta["distance"], meta["angle"]) == ("Rode_NT2-A", 125.0, 355.0)
    other = parse_multidir_name(Path("x/sweep.wav"))
    assert (other["microphone"], other["angle"], other["distance"]) == ("sweep", None, None)


def test_multidir_folder_tree_loads_with_metadata(multidir_tree: Path) -> None:
    aug = make(MultiDir, path=str(multidir_tree), normalize="none")
    bank = aug.bank
    assert bank.irs.shape == (len(MICS) * len(TREE_DISTANCES) * len(TREE_ANGLES), 1024)
    assert bank.values("microphone") == sorted(MICS)
    assert bank.values("distance") == [50.0, 125.0]
    assert bank.values("angle") == [0.0, 5.0, 90.0, 180.0, 355.0]
    meta = bank.meta[0]
    data, _ = sf.read(meta["source"], dtype="float64")
    resampled = AF.resample(torch.from_numpy(data), 48000, 32000)[None]
    expected = kaiser_truncate(resampled, 1024, 2.0, "full", "start")
    torch.testing.assert_close(bank.irs[0].double(), expected[0], atol=1e-6, rtol=0)


BOTH = tuple(sorted(MICS))


@pytest.mark.parametrize(
    "config,expected",
    [
        ({"microphones": "ShureSM58"}, (("ShureSM58",), (50.0, 125.0), TREE_ANGLES)),
        ({"distances": "125"}, (BOTH, (125.0,), TREE_ANGLES)),
        ({"angle_min": "0", "angle_max": "90"}, (BOTH, (50.0, 125.0), (0, 5, 90))),
        ({"angle_min": "350", "angle_max": "10"}, (BOTH, (50.0, 125.0), (0, 5, 355))),
    ],
)
def test_multidir_filters(multidir_tree: Path, config: dict, expected: tuple) -> None:
    bank = make(MultiDir, path=str(multidir_tree), **config).bank
    mics, distances, angles = (
        tuple(bank.values("microphone")),
        tuple(bank.values("distance")),
        tuple(int(a) for a in bank.values("angle")),
    )
    assert (mics, distances, angles) == expected
    assert len(bank) == len(mics) * len(distances) * len(angles)


def test_multidir_filter_errors(multidir_tree: Path) -> None:
    with pytest.raises(UsageError, match="unknown microphone 'ShureSM57'. Did you mean: ShureSM58"):
        make(MultiDir, path=str(multidir_tree), microphones="ShureSM57")
    with pytest.raises(UsageError, match="distances: unknown distance '500.0'"):
        make(MultiDir, path=str(multidir_tree), distances="500")
    with pytest.raises(UsageError, match="select no impulse responses"):
        make(MultiDir, path=str(multidir_tree), angle_min="100", angle_max="170")


def test_multidir_reads_a_sofa_file(tmp_path: Path) -> None:
    sofar = pytest.importorskip("sofar")
    angles = np.arange(0, 360, 45, dtype=np.float64)
    data = np.zeros((len(angles), 1, 4800))
    data[:, 0, 50] = 1.0
    data[:, 0, 60:] = 0.01 * np.random.default_rng(8).standard_normal((len(angles), 4740))
    sofa = sofar.Sofa("GeneralFIR")
    sofa.Data_IR = data
    sofa.Data_SamplingRate = 48000
    sofa.Data_Delay = np.zeros((1, 1))
    sofa.SourcePosition = np.stack(
        [angles, np.zeros_like(angles), np.full_like(angles, 0.5)], axis=1
    )
    sofa.SourcePosition_Type = "spherical"
    sofa.SourcePosition_Units = "degree, degree, metre"
    path = tmp_path / "mic.sofa"
    sofar.write_sofa(str(path), sofa)
    bank = make(MultiDir, path=str(path), angle_min="0", angle_max="90").bank
    assert bank.irs.shape == (3, 1024)
    assert bank.values("angle") == [0.0, 45.0, 90.0]
    assert bank.values("distance") == [50.0]


# -- bad collections ---------------------------------------------------------------


@pytest.mark.parametrize("cls", [Vintage, MultiDir])
def test_empty_folder_is_a_data_error(cls, tmp_path: Path) -> None:
    (tmp_path / "empty_irs").mkdir()
    with pytest.raises(DataError, match="empty_irs"):
        make(cls, path=str(tmp_path / "empty_irs"))


@pytest.mark.parametrize("cls", [Vintage, MultiDir])
def test_non_audio_file_is_a_data_error(cls, tmp_path: Path) -> None:
    sf.write(str(tmp_path / "good_50cm_0Deg.wav"), np.array([0.0, 1.0, 0.5]), 48000)
    (tmp_path / "bad_50cm_5Deg.wav").write_bytes(b"<html>not found</html>")
    with pytest.raises(DataError, match="bad_50cm_5Deg.wav"):
        make(cls, path=str(tmp_path))


def test_sofa_without_irs_is_a_data_error(tmp_path: Path) -> None:
    sofar = pytest.importorskip("sofar")
    path = tmp_path / "transfer_functions.sofa"
    sofar.write_sofa(str(path), sofar.Sofa("SimpleFreeFieldHRTF"))
    with pytest.raises(DataError, match="transfer_functions.sofa"):
        make(MultiDir, path=str(path))


def test_bad_collection_through_the_cli_exits_2_with_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "nothing_here"
    folder.mkdir()
    result = run_cli("plot", "dirs", "--aug", "vintage", "--set", f"aug.vintage.path={folder}")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "nothing_here" in result.stderr


# -- device-aware application ----------------------------------------------------------


@pytest.fixture(scope="module")
def small_vintage() -> Vintage:
    names = ",".join(synthetic_vintage(32000).values("microphone")[:3])
    return make(Vintage, microphones=names, p=1.0)


def convolved_with_some_ir(out: torch.Tensor, wave: torch.Tensor, irs: torch.Tensor) -> bool:
    frames = wave.shape[-1]
    return any(
        np.allclose(
            out.numpy(), scipy.signal.fftconvolve(wave.double(), ir.double())[:frames], atol=1e-5
        )
        for ir in irs
    )


def test_only_clips_of_device_a_are_convolved(small_vintage: Vintage) -> None:
    batch = batch_for([0, 1, 0, 2, 3, 0, 5, -1])
    torch.manual_seed(0)
    out = small_vintage(batch.wave, batch)
    for i, device in enumerate(batch.device.tolist()):
        if device == 0:
            assert not torch.equal(out[i], batch.wave[i])
            assert convolved_with_some_ir(out[i], batch.wave[i], small_vintage.irs)
        else:
            assert torch.equal(out[i], batch.wave[i])


def test_probability_zero_is_the_identity() -> None:
    aug = make(Vintage, p=0.0, devices="all")
    batch = batch_for([0, 1, 2, 0])
    assert torch.equal(aug(batch.wave, batch), batch.wave)


def test_all_devices_with_probability_one_convolves_every_clip(small_vintage: Vintage) -> None:
    aug = make(
        Vintage, microphones=",".join(small_vintage.bank.values("microphone")), p=1.0, devices="all"
    )
    batch = batch_for([0, 1, 2, 3, 4, 5, -1])
    out = aug(batch.wave, batch)
    for i in range(len(batch.wave)):
        assert convolved_with_some_ir(out[i], batch.wave[i], aug.irs)


def test_several_devices_and_probability(small_vintage: Vintage) -> None:
    aug = make(
        Vintage,
        microphones=",".join(small_vintage.bank.values("microphone")),
        p=0.6,
        devices="a,s1",
    )
    devices = [0, 3, 1] * 1000
    batch = batch_for(devices, frames=16)
    torch.manual_seed(1)
    changed = ~(aug(batch.wave, batch) == batch.wave).all(dim=1)
    device = batch.device
    assert not changed[device == 1].any()
    assert changed[device == 0].float().mean().item() == pytest.approx(0.6, abs=0.05)
    assert changed[device == 3].float().mean().item() == pytest.approx(0.6, abs=0.05)


def test_draws_follow_torch_seed(small_vintage: Vintage) -> None:
    batch = batch_for([0] * 6 + [1] * 2)
    aug = make(Vintage, microphones=",".join(small_vintage.bank.values("microphone")), p=0.5)
    torch.manual_seed(3)
    first_out = aug(batch.wave, batch)
    torch.manual_seed(3)
    assert torch.equal(aug(batch.wave, batch), first_out)


def test_unknown_device_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="unknown device 'z'"):
        make(Vintage, devices="z")
    with pytest.raises(UsageError, match="devices=all"):
        make(Vintage, task_devices=[])


def test_forward_before_setup_is_an_error() -> None:
    aug = Vintage(Vintage.Config())
    batch = batch_for([0])
    with pytest.raises(RuntimeError, match="before setup"):
        aug(batch.wave, batch)


def test_bank_follows_the_task_sample_rate() -> None:
    aug = make(MultiDir, rate=16000, microphones="Syn01-omni-condenser", distances="50")
    assert aug.bank.sample_rate == 16000 and aug.irs.shape == (72, 1024)


# -- harness plot dirs -----------------------------------------------------------------


def invoke_plot(*args: str):
    from harness.cli.main import cli

    plugins = load_plugins()
    plugins.pm.hook.register_commands(cli=cli)
    return CliRunner().invoke(cli, ["plot", "dirs", *args], obj={"plugins": plugins})


def test_plot_dirs_writes_a_png(tmp_path: Path) -> None:
    output = tmp_path / "figs" / "vintage.png"
    result = invoke_plot("--aug", "vintage", "--output", str(output))
    assert result.exit_code == 0, result.output
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "wrote" in result.output


def test_plot_dirs_of_a_real_folder(multidir_tree: Path, tmp_path: Path) -> None:
    output = tmp_path / "multidir.png"
    result = invoke_plot(
        "--aug", "multidir", "--set", f"aug.multidir.path={multidir_tree}", "--output", str(output)
    )
    assert result.exit_code == 0, result.output
    assert output.stat().st_size > 10_000


def test_plot_dirs_rejects_other_augmentations_and_keys(tmp_path: Path) -> None:
    result = invoke_plot("--aug", "multidir", "--set", "run.epochs=3")
    assert isinstance(result.exception, UsageError)
    result = invoke_plot("--aug", "multidir", "--set", "aug.multidir.angle_min=400")
    assert isinstance(result.exception, UsageError) and "angle_min" in str(result.exception)


# -- a third-party collection ------------------------------------------------------------


def test_third_party_subclass_reuses_loading_and_application(tmp_path: Path) -> None:
    class PhoneIRs(ImpulseResponseAugmentation):
        name = "phone-irs"
        description = "Convolve training clips with smartphone impulse responses."

        def embedded_bank(self, sample_rate: int) -> IRBank:
            raise UsageError("phone-irs needs --set aug.phone-irs.path=FOLDER")

    class Plugin:
        @hookimpl
        def register_augmentations(self, register) -> None:
            register(PhoneIRs)

    pm = new_plugin_manager()
    pm.register(Plugin(), name="phone-irs-plugin")
    entry = Plugins(pm)["augmentation"].get("phone-irs")
    for i in range(2):
        sf.write(str(tmp_path / f"phone{i}.wav"), np.array([0.0, 1.0, 0.5 * i]), 44100)
    aug = make(entry.cls, path=str(tmp_path), p=1.0, devices="b")
    assert aug.bank.values("microphone") == ["phone0", "phone1"]
    batch = batch_for([0, 1])
    out = aug(batch.wave, batch)
    assert torch.equal(out[0], batch.wave[0]) and not torch.equal(out[1], batch.wave[1])
    with pytest.raises(UsageError, match="needs --set"):
        make(entry.cls)
    with pytest.raises(DataError, match="phone0.wav is a file"):
        make(entry.cls, path=str(tmp_path / "phone0.wav"))


@pytest.mark.parametrize("cls", [MultiDir, Vintage])
def test_the_response_bank_is_a_buffer_that_never_enters_the_weights(cls):
    """The bank moves with the module to the training device but is not saved in method.pt
    or checkpoints (it is rebuilt from the configuration)."""
    aug = make(cls)
    assert aug.state_dict() == {}
    buffers = dict(aug.named_buffers())
    assert set(buffers) == {"irs", "device_ids", "device_slot", "ir_group"}
    assert buffers["irs"].shape[0] == len(aug.bank) and buffers["irs"].is_floating_point()
    assert buffers["ir_group"].shape == (len(aug.bank),)
    assert buffers["device_slot"].shape == (len(DEVICES),)
    assert all(buffers[k].dtype == torch.long for k in ("device_ids", "device_slot", "ir_group"))


# -- from surviving mutants ------------------------------------------------------------------


def test_kaiser_truncation_defaults_are_the_documented_ones() -> None:
    from harness.nn.impulse import kaiser_truncate

    irs = torch.randn(3, 400, generator=torch.Generator().manual_seed(0))
    explicit = kaiser_truncate(irs, 100, beta=2.0, window="half", align="onset", pre=16)
    assert torch.equal(kaiser_truncate(irs, 100), explicit)


@pytest.mark.parametrize("beta", [0.0, 0.5])
def test_a_kaiser_beta_of_zero_or_below_one_is_allowed(beta: float) -> None:
    aug = make(Vintage, beta=beta, length=64)
    assert aug.config.beta == beta and aug.irs.shape[-1] == 64


def test_an_unknown_microphone_names_the_option_and_the_embedded_bank() -> None:
    with pytest.raises(UsageError) as raised:
        make(Vintage, microphones="NoSuchMic")
    message = str(raised.value)
    assert message.startswith("aug.vintage.microphones: unknown microphone 'NoSuchMic'")
    assert message.endswith("(in the embedded bank)")


def test_the_bank_lives_in_non_persistent_long_and_float_buffers() -> None:
    aug = make(Vintage)
    assert aug.device_ids.dtype == torch.long and aug.irs.dtype == torch.float32
    assert aug.state_dict() == {}  # rebuilt from the configuration, never checkpointed
    buffers = dict(aug.named_buffers())
    assert {"irs", "device_ids"} <= set(buffers)
