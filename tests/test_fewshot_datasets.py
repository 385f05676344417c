"""Data set loaders on small files generated in each published layout, well-formed and not."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from harness.data.loader import load_clips
from harness.registry.config import build_dataclass
from harness.util.errors import DataError, UsageError
from harness_plugins.datasets import fewshot_embedded
from harness_plugins.datasets.audioset import AudioSet
from harness_plugins.datasets.esc50 import Esc50
from harness_plugins.datasets.fewshot_embedded import FAMILIES, FewshotEmbedded, sound_classes
from harness_plugins.datasets.folder import Folder
from harness_plugins.datasets.fsdkaggle2018 import FsdKaggle2018
from harness_plugins.datasets.nsynth import NSynth
from harness_plugins.datasets.speech_commands import SpeechCommands
from harness_plugins.datasets.voxceleb1 import VoxCeleb1
from harness_plugins.protocols.fewshot import class_members, episode_accuracies, sample_episodes


def write_wav(path: Path, seconds: float = 0.05, sr: int = 16000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros(int(seconds * sr), dtype=np.float32), sr)
    return path


def load(cls, **config):
    return cls(cls.Config(**config)).load()


def data_error(cls, match: str, **config) -> DataError:
    with pytest.raises(DataError, match=match) as info:
        load(cls, **config)
    assert "\n" not in str(info.value)
    return info.value


# -- ESC-50 -------------------------------------------------------------------

ESC_HEADER = "filename,fold,target,category,esc10,src_file,take"


def esc50_tree(root: Path, rows: list[str] | None = None, header: str = ESC_HEADER) -> Path:
    if rows is None:
        rows = []
        for target, category, esc10 in ((0, "dog", "True"), (1, "rooster", "False")):
            for fold in range(1, 6):
                for take in "AB":
                    rows.append(
                        f"{fold}-10{target}-{take}-{target}.wav,{fold},{target},{category},{esc10},10{target},{take}"
                    )
    (root / "meta").mkdir(parents=True)
    (root / "meta" / "esc50.csv").write_text("\n".join([header, *rows]) + "\n")
    for row in rows:
        write_wav(root / "audio" / row.split(",")[0])
    return root


def test_esc50_folds_and_classes(tmp_path):
    root = esc50_tree(tmp_path / "ESC-50")
    splits = load(Esc50, root=root, fold=3)
    assert splits.classes == ["dog", "rooster"]
    assert len(splits.eval) == 4 and len(splits.train) == 16
    assert {c.meta["fold"] for c in splits.eval} == {"3"}
    assert "3" not in {c.meta["fold"] for c in splits.train}
    assert [c.label for c in splits.eval] == [int(c.path.stem.split("-")[-1]) for c in splits.eval]
    assert sorted(c.label for c in splits.eval) == [0, 0, 1, 1]
    assert splits.clip_seconds == 5.0
    assert all(c.path.parent == root / "audio" for c in splits.train + splits.eval)
    esc10 = load(Esc50, root=root, esc10=True)
    assert esc10.classes == ["dog"] and len(esc10.train) == 8


@pytest.mark.parametrize("field", ["category", "target", "fold", "filename"])
def test_esc50_csv_missing_field(tmp_path, field):
    header = ",".join(f for f in ESC_HEADER.split(",") if f != field)
    root = esc50_tree(tmp_path / "ESC-50", rows=[], header=header)
    data_error(Esc50, rf"esc50.csv: missing field '{field}'", root=root)


def test_esc50_malformed_rows(tmp_path):
    cases = {
        "empty": ("1-1-A-0.wav,1,,dog,False,1,A", r"line 2: empty field 'target'"),
        "fold": ("1-1-A-0.wav,7,0,dog,False,1,A", r"line 2: fold 7 is not one of 1-5"),
        "number": (
            "1-1-A-0.wav,one,0,dog,False,1,A",
            r"line 2: field 'fold': 'one' is not an integer",
        ),
    }
    for name, (row, match) in cases.items():
        root = esc50_tree(tmp_path / name, rows=[row])
        data_error(Esc50, match, root=root)
    clash = ["a.wav,1,0,dog,False,1,A", "b.wav,2,0,cat,False,2,A"]
    data_error(Esc50, r"line 3: target 0 is 'cat'", root=esc50_tree(tmp_path / "clash", rows=clash))


def test_esc50_missing_audio_and_empty_and_missing_root(tmp_path):
    root = esc50_tree(tmp_path / "ESC-50")
    (root / "audio" / "2-100-A-0.wav").unlink()
    data_error(Esc50, r"esc50.csv: audio file not found: .*2-100-A-0.wav", root=root)
    data_error(Esc50, r"esc50.csv: no clips listed", root=esc50_tree(tmp_path / "empty", rows=[]))
    data_error(Esc50, r"esc50: folder not found", root=tmp_path / "nowhere")
    with pytest.raises(UsageError, match="fold must be one of 1-5"):
        build_dataclass(Esc50.Config, {"fold": "6"}, "dataset")


# -- Speech Commands v2 -------------------------------------------------------


def speech_tree(root: Path) -> Path:
    for word in ("yes", "no"):
        for speaker in ("aa", "bb", "cc", "dd"):
            write_wav(root / word / f"{speaker}_nohash_0.wav")
    write_wav(root / "_background_noise_" / "white_noise.wav")
    (root / "validation_list.txt").write_text("yes/bb_nohash_0.wav\nno/bb_nohash_0.wav\n")
    (root / "testing_list.txt").write_text(
        "yes/cc_nohash_0.wav\nno/cc_nohash_0.wav\nno/dd_nohash_0.wav\n"
    )
    return root


def test_speech_commands_lists_and_background_noise(tmp_path):
    root = speech_tree(tmp_path / "sc")
    splits = load(SpeechCommands, root=root)
    assert splits.classes == ["no", "yes"]
    names = {(c.path.parent.name, c.path.name) for c in splits.eval}
    assert names == {
        ("yes", "cc_nohash_0.wav"),
        ("no", "cc_nohash_0.wav"),
        ("no", "dd_nohash_0.wav"),
    }
    train_speakers = sorted(c.meta["speaker"] for c in splits.train)
    assert train_speakers == ["aa", "aa", "dd"]  # neither validation nor test clips
    assert all("_background_noise_" not in str(c.path) for c in splits.train + splits.eval)
    assert {c.label for c in splits.eval if c.path.parent.name == "yes"} == {1}
    # the published validation list is the validation split (never trained on)
    assert sorted((c.path.parent.name, c.meta["speaker"]) for c in splits.valid) == [
        ("no", "bb"),
        ("yes", "bb"),
    ]
    validation = load(SpeechCommands, root=root, eval_split="validation")
    assert len(validation.eval) == 2 and len(validation.train) == 3 and validation.valid == []


def test_speech_commands_bad_lists(tmp_path):
    root = speech_tree(tmp_path / "sc")
    (root / "testing_list.txt").write_text("yes/zz_nohash_0.wav\n")
    data_error(SpeechCommands, r"testing_list.txt: line 1: audio file not found", root=root)
    (root / "testing_list.txt").write_text("_background_noise_/white_noise.wav\n")
    data_error(SpeechCommands, r"testing_list.txt: line 1: .* is not <word>/<file>", root=root)
    (root / "testing_list.txt").unlink()
    data_error(SpeechCommands, r"file not found: .*testing_list.txt", root=root)


def test_speech_commands_empty_eval_split(tmp_path):
    root = speech_tree(tmp_path / "sc")
    (root / "testing_list.txt").write_text("")
    data_error(SpeechCommands, r"no clips found in .*testing_list.txt", root=root)


# -- NSynth -------------------------------------------------------------------


def nsynth_split(folder: Path, notes: dict[str, dict]) -> None:
    folder.mkdir(parents=True)
    (folder / "examples.json").write_text(json.dumps(notes))
    for attrs in notes.values():
        write_wav(folder / "audio" / f"{attrs['note_str']}.wav")


def note(instrument: str, pitch: int) -> tuple[str, dict]:
    name = f"{instrument}-{pitch:03d}-100"
    family = instrument.split("_")[0]
    return name, {
        "note_str": name,
        "instrument_str": instrument,
        "instrument_family_str": family,
        "pitch": pitch,
        "velocity": 100,
    }


def nsynth_tree(root: Path) -> Path:
    nsynth_split(root / "nsynth-train", dict(note("bass_synthetic_033", p) for p in (22, 23, 24)))
    nsynth_split(root / "nsynth-valid", dict(note("keyboard_electronic_001", p) for p in (40, 41)))
    test = [note("guitar_acoustic_010", p) for p in (50, 51)] + [note("bass_electronic_018", 30)]
    nsynth_split(root / "nsynth-test", dict(test))
    return root


def test_nsynth_instruments_and_splits(tmp_path):
    root = nsynth_tree(tmp_path / "nsynth")
    splits = load(NSynth, root=root)
    assert splits.classes == [
        "bass_electronic_018",
        "bass_synthetic_033",
        "guitar_acoustic_010",
        "keyboard_electronic_001",
    ]
    assert len(splits.train) == 5 and len(splits.eval) == 3
    by_name = {c.path.name: c for c in splits.eval}
    assert by_name["guitar_acoustic_010-050-100.wav"].label == 2
    assert by_name["guitar_acoustic_010-050-100.wav"].meta["pitch"] == "50"
    families = load(NSynth, root=root, label_field="instrument_family_str")
    assert families.classes == ["bass", "guitar", "keyboard"]
    assert splits.valid == []  # nsynth-valid is in the default train split
    held = load(NSynth, root=root, train_dirs=["nsynth-train"], valid_dirs=["nsynth-valid"])
    assert len(held.train) == 3 and len(held.valid) == 2
    assert {c.label for c in held.valid} == {3}
    only_test = load(NSynth, root=root / "nsynth-test", train_dirs=[], eval_dirs=["."])
    assert only_test.train == [] and len(only_test.eval) == 3


def test_nsynth_malformed_examples(tmp_path):
    root = nsynth_tree(tmp_path / "nsynth")
    path = root / "nsynth-test" / "examples.json"
    notes = json.loads(path.read_text())
    del notes["guitar_acoustic_010-051-100"]["instrument_str"]
    path.write_text(json.dumps(notes))
    data_error(
        NSynth,
        r"nsynth-test/examples.json: entry 'guitar_acoustic_010-051-100' "
        r"has no field 'instrument_str'",
        root=root,
    )
    path.write_text("{not json")
    data_error(NSynth, r"examples.json: not valid JSON", root=root)
    path.write_text("[]")
    data_error(NSynth, r"examples.json: expected an object", root=root)
    data_error(
        NSynth, r"folder not found: .*nsynth-missing", root=root, eval_dirs=["nsynth-missing"]
    )


def test_nsynth_missing_audio_and_empty(tmp_path):
    root = nsynth_tree(tmp_path / "nsynth")
    (root / "nsynth-valid" / "audio" / "keyboard_electronic_001-041-100.wav").unlink()
    data_error(
        NSynth,
        r"examples.json: audio file not found: .*keyboard_electronic_001-041-100.wav",
        root=root,
    )
    (root / "nsynth-test" / "examples.json").write_text("{}")
    data_error(NSynth, r"nsynth: no clips found", root=root, train_dirs=[])


# -- VoxCeleb1 ----------------------------------------------------------------


def voxceleb_tree(root: Path) -> Path:
    lines = []
    for speaker in ("id10001", "id10002"):
        for index, split in ((1, 1), (2, 1), (3, 2), (4, 3)):
            relative = f"{speaker}/1zcIwhmdeo4/{index:05d}.wav"
            write_wav(root / "wav" / relative)
            lines.append(f"{split} {relative}")
    (root / "iden_split.txt").write_text("\n".join(lines) + "\n")
    return root


def test_voxceleb1_identification_splits(tmp_path):
    root = voxceleb_tree(tmp_path / "vox")
    splits = load(VoxCeleb1, root=root)
    assert splits.classes == ["id10001", "id10002"]
    assert len(splits.train) == 4 and len(splits.eval) == 2
    assert sorted(c.path.name for c in splits.eval) == ["00004.wav", "00004.wav"]
    assert {c.label for c in splits.eval if "id10002" in str(c.path)} == {1}
    assert splits.eval[0].meta["video"] == "1zcIwhmdeo4"
    assert sorted(c.path.name for c in splits.valid) == ["00003.wav", "00003.wav"]  # set 2
    on_val = load(VoxCeleb1, root=root, eval_split="val")
    assert {c.path.name for c in on_val.eval} == {"00003.wav"} and on_val.valid == []


def test_voxceleb1_malformed_split_file(tmp_path):
    root = voxceleb_tree(tmp_path / "vox")
    split_file = root / "iden_split.txt"
    good = split_file.read_text()
    split_file.write_text(good + "4 id10001/1zcIwhmdeo4/00001.wav\n")
    data_error(VoxCeleb1, r"iden_split.txt: line 9: expected '<1\|2\|3> idXXXXX", root=root)
    split_file.write_text("1 id10001-00001.wav\n")
    data_error(VoxCeleb1, r"iden_split.txt: line 1", root=root)
    split_file.write_text(good + "3 id10003/abc/00001.wav\n")
    data_error(VoxCeleb1, r"iden_split.txt: audio file not found: .*id10003", root=root)
    split_file.write_text("")
    data_error(VoxCeleb1, r"voxceleb1: no clips found", root=root)


# -- FSDKaggle2018 ------------------------------------------------------------


def fsd_tree(
    root: Path, train_header: str = "fname,label,manually_verified,freesound_id,license"
) -> Path:
    meta = root / "FSDKaggle2018.meta"
    meta.mkdir(parents=True)
    train = [
        ("00044347.wav", "Hi-hat", 0),
        ("001ca53d.wav", "Saxophone", 1),
        ("002d256b.wav", "Trumpet", 1),
    ]
    test = [("00063640.wav", "Laughter"), ("0013a1db.wav", "Flute")]
    (meta / "train_post_competition.csv").write_text(
        "\n".join([train_header, *(f"{f},{lab},{v},1,CC0" for f, lab, v in train)]) + "\n"
    )
    (meta / "test_post_competition_scoring_clips.csv").write_text(
        "\n".join(
            [
                "fname,label,usage,freesound_id,license",
                *(f"{f},{lab},Public,1,CC0" for f, lab in test),
            ]
        )
        + "\n"
    )
    for fname, *_ in train:
        write_wav(root / "FSDKaggle2018.audio_train" / fname)
    for fname, _ in test:
        write_wav(root / "FSDKaggle2018.audio_test" / fname)
    return root


def test_fsdkaggle2018_layout(tmp_path):
    root = fsd_tree(tmp_path / "fsd")
    splits = load(FsdKaggle2018, root=root)
    assert splits.classes == ["Flute", "Hi-hat", "Laughter", "Saxophone", "Trumpet"]
    assert [c.path.name for c in splits.train] == ["00044347.wav", "001ca53d.wav", "002d256b.wav"]
    assert [c.label for c in splits.eval] == [2, 0]
    assert splits.eval[0].path.parent.name == "FSDKaggle2018.audio_test"
    verified = load(FsdKaggle2018, root=root, verified_only=True)
    assert [c.path.name for c in verified.train] == ["001ca53d.wav", "002d256b.wav"]


def test_fsdkaggle2018_malformed(tmp_path):
    root = fsd_tree(
        tmp_path / "a", train_header="fname,category,manually_verified,freesound_id,license"
    )
    data_error(FsdKaggle2018, r"train_post_competition.csv: missing field 'label'", root=root)
    root = fsd_tree(tmp_path / "b")
    (root / "FSDKaggle2018.audio_test" / "0013a1db.wav").unlink()
    data_error(
        FsdKaggle2018, r"test_post_competition_scoring_clips.csv: audio file not found", root=root
    )
    test_csv = root / "FSDKaggle2018.meta" / "test_post_competition_scoring_clips.csv"
    test_csv.write_text("fname,label,usage,freesound_id,license\n")
    data_error(FsdKaggle2018, r"fsdkaggle2018: no clips found", root=root)


# -- AudioSet (AudioMAE JSON) -------------------------------------------------


def test_audioset_json_is_an_unlabeled_pool(tmp_path):
    relative = write_wav(tmp_path / "as" / "audio" / "Y0001.wav")
    absolute = write_wav(tmp_path / "elsewhere" / "Y0002.wav")
    data = {
        "data": [{"wav": "audio/Y0001.wav", "labels": "/m/09x0r,/m/05zppz"}, {"wav": str(absolute)}]
    }
    (tmp_path / "as" / "train.json").write_text(json.dumps(data))
    splits = load(AudioSet, train_json=tmp_path / "as" / "train.json")
    assert [c.path for c in splits.train] == [relative, absolute]
    assert [c.label for c in splits.train] == [-1, -1]
    assert splits.train[0].meta["labels"] == "/m/09x0r,/m/05zppz"
    assert splits.classes == [] and splits.eval == splits.train


def test_audioset_json_malformed(tmp_path):
    path = tmp_path / "train.json"
    path.write_text(json.dumps({"items": []}))
    data_error(AudioSet, r"train.json: missing field 'data'", train_json=path)
    path.write_text(json.dumps({"data": [{"labels": "/m/09x0r"}]}))
    data_error(AudioSet, r"train.json: data\[0\] has no field 'wav'", train_json=path)
    path.write_text(json.dumps({"data": [{"wav": "missing.wav"}]}))
    data_error(AudioSet, r"train.json: audio file not found: .*missing.wav", train_json=path)
    path.write_text(json.dumps({"data": []}))
    data_error(AudioSet, r"audioset: no clips found in .*train.json", train_json=path)


# -- folder per class ---------------------------------------------------------


def test_folder_per_class_split(tmp_path):
    for name, count in (("cat", 10), ("dog", 5)):
        for i in range(count):
            write_wav(tmp_path / "data" / name / f"{i:02d}.wav")
    (tmp_path / "data" / "notes.txt").write_text("not a class")
    (tmp_path / "data" / "dog" / "readme.txt").write_text("not audio")
    splits = load(Folder, root=tmp_path / "data", eval_fraction=0.2)
    assert splits.classes == ["cat", "dog"]
    assert sorted(c.label for c in splits.eval) == [0, 0, 1]
    assert len(splits.train) == 12
    assert not {c.path for c in splits.eval} & {c.path for c in splits.train}
    again = load(Folder, root=tmp_path / "data", eval_fraction=0.2)
    assert [c.path for c in again.eval] == [c.path for c in splits.eval]
    everything = load(Folder, root=tmp_path / "data", eval_fraction=1.0)
    assert len(everything.eval) == 15 and everything.train == []


def test_folder_with_eval_root_and_bad_input(tmp_path):
    write_wav(tmp_path / "train" / "a" / "1.wav")
    write_wav(tmp_path / "eval" / "b" / "1.wav")
    splits = load(Folder, root=tmp_path / "train", eval_root=tmp_path / "eval")
    assert splits.classes == ["a", "b"] and splits.eval[0].label == 1
    (tmp_path / "empty" / "a").mkdir(parents=True)
    data_error(Folder, r"folder: no clips found in .*empty", root=tmp_path / "empty")
    with pytest.raises(UsageError, match="eval_fraction"):
        build_dataclass(Folder.Config, {"eval_fraction": "0"}, "dataset")


# -- the embedded few-shot benchmark ------------------------------------------

SMALL = {"classes": 16, "clips_per_class": 6, "pool_clips": 5, "pool_classes": 3, "seconds": 0.5}


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_default_has_fifty_classes_over_every_family():
    assert FewshotEmbedded.Config().classes >= 50
    classes = sound_classes(50, seed=0)
    assert len({c.name for c in classes}) == 50
    assert {c.family for c in classes} == set(FAMILIES)


def test_embedded_set_is_written_in_the_esc50_layout(cache):
    dataset = FewshotEmbedded(FewshotEmbedded.Config(**SMALL))
    splits = dataset.load()
    root = splits.root
    assert root.parent == cache / "fewshot-embedded" and (root / ".done").is_file()
    assert len(splits.classes) == 16 and len(splits.eval) == 96
    assert [c.label for c in splits.train] == [-1] * 5
    assert json.loads((root / "pool" / "pool.json").read_text())["data"][0]["wav"].startswith(
        "audio/"
    )
    esc = load(Esc50, root=root, fold=2, clip_seconds=0.5)  # the real ESC-50 loader reads it
    assert esc.classes == splits.classes and len(esc.eval) == 16
    info, rate = sf.info(str(splits.eval[0].path)), 16000
    assert info.samplerate == rate and info.frames == rate // 2
    class_splits = {
        s: (root / "splits" / f"{s}.txt").read_text().split() for s in ("train", "val", "test")
    }
    assert sorted(name for names in class_splits.values() for name in names) == sorted(
        splits.classes
    )
    assert [len(v) for v in class_splits.values()] == [10, 3, 3]
    generator = json.loads((root / "meta" / "generator.json").read_text())
    assert generator["classes"] == 16 and generator["generation_seconds"] >= 0


def test_embedded_set_is_deterministic_and_generated_once(tmp_path, monkeypatch):
    digests = []
    for name in ("one", "two"):
        monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / name))
        root = FewshotEmbedded(FewshotEmbedded.Config(**SMALL)).load().root
        # generator.json records how long generation took, and the done marker its checksum
        files = sorted(
            p for p in root.rglob("*") if p.is_file() and p.name not in ("generator.json", ".done")
        )
        digests.append({str(p.relative_to(root)): file_digest(p) for p in files})
    assert digests[0] == digests[1]

    def must_not_run(*args):
        raise AssertionError("regenerated a finished data set")

    monkeypatch.setattr(fewshot_embedded, "generate", must_not_run)
    assert FewshotEmbedded(FewshotEmbedded.Config(**SMALL)).load().root.is_dir()
    other_seed = FewshotEmbedded(FewshotEmbedded.Config(**SMALL, seed=1))
    with pytest.raises(AssertionError, match="regenerated"):
        other_seed.load()  # another seed is another data set


def test_interrupted_generation_leaves_nothing_behind(cache, monkeypatch):
    calls = {"n": 0}
    render = fewshot_embedded.render_clip

    def failing_render(*args):
        calls["n"] += 1
        if calls["n"] > 10:
            raise KeyboardInterrupt
        return render(*args)

    monkeypatch.setattr(fewshot_embedded, "render_clip", failing_render)
    with pytest.raises(KeyboardInterrupt):
        FewshotEmbedded(FewshotEmbedded.Config(**SMALL)).load()
    assert list((cache / "fewshot-embedded").iterdir()) == []
    monkeypatch.setattr(fewshot_embedded, "render_clip", render)
    assert len(FewshotEmbedded(FewshotEmbedded.Config(**SMALL)).load().eval) == 96


def test_embedded_classes_vary_within_and_differ_between(cache):
    splits = FewshotEmbedded(FewshotEmbedded.Config(**SMALL)).load()
    audio = load_clips(splits.eval, 16000, 0.5, [])
    same_class = audio.wave[audio.labels == 0]
    assert not torch.allclose(same_class[0], same_class[1])
    mel = torchaudio.transforms.MelSpectrogram(16000, n_fft=512, hop_length=160, n_mels=64)(
        audio.wave
    )
    log_mel = torch.log(mel + 1e-6)
    features = torch.cat([log_mel.mean(-1), log_mel.std(-1)], dim=1)
    features = (features - features.mean(0)) / features.std(0)
    members = class_members(audio.labels, range(16))
    episodes = sample_episodes(members, 5, 1, 5, 300, torch.Generator().manual_seed(0))
    accuracy = episode_accuracies(features, episodes).mean().item()
    # far above chance (0.2) with plain spectral statistics, but not trivially separable
    assert 0.45 < accuracy < 0.97


def test_embedded_config_choices(cache):
    labeled = load(FewshotEmbedded, **SMALL, train="labeled", fold=2)
    assert len(labeled.train) == 80 and len(labeled.eval) == 16
    assert all(c.label >= 0 for c in labeled.train)
    with pytest.raises(UsageError, match="train=labeled needs an eval fold"):
        build_dataclass(FewshotEmbedded.Config, {"train": "labeled"}, "dataset")
    with pytest.raises(UsageError, match="classes must be at least 2"):
        build_dataclass(FewshotEmbedded.Config, {"classes": "1"}, "dataset")
