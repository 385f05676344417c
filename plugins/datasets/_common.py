"""Shared helpers of the data set loaders: the cache folder, metadata checks, clip lists.

Not a plugin. Every check raises a one-line :class:`harness.util.errors.DataError`
naming the file (and the field or line) that is wrong.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, TypeVar

from harness.api import Clip, DataError, Domain, build_once, cache_root, field_domains

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".aiff", ".aif")

T = TypeVar("T")


def require_dir(path: Path, dataset: str) -> Path:
    if not path.is_dir():
        raise DataError(f"{dataset}: folder not found: {path}")
    return path


def require_file(path: Path, dataset: str) -> Path:
    if not path.is_file():
        raise DataError(f"{dataset}: file not found: {path}")
    return path


@contextmanager
def text_errors(path: Path) -> Iterator[None]:
    """Undecodable bytes, malformed CSV and unreadable files become a DataError naming ``path``."""
    try:
        yield
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except csv.Error as err:
        raise DataError(f"{path}: malformed CSV: {err}") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read: {err.strerror or err}") from None


def read_text(path: Path, dataset: str) -> str:
    """A UTF-8 text file's content (a DataError when missing or not UTF-8)."""
    require_file(path, dataset)
    with text_errors(path):
        return path.read_text(encoding="utf-8")


def read_csv(path: Path, fields: Iterable[str], dataset: str) -> list[tuple[int, dict[str, str]]]:
    """``(line number, row)`` of a CSV file whose header and rows have every one of ``fields``."""
    require_file(path, dataset)
    with text_errors(path):
        return _read_csv(path, list(fields))


def _read_csv(path: Path, fields: list[str]) -> list[tuple[int, dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        for name in fields:
            if name not in header:
                raise DataError(f"{path}: missing field '{name}' in the header")
        rows = []
        for row in reader:
            for name in fields:
                if not (row.get(name) or "").strip():
                    raise DataError(f"{path}: line {reader.line_num}: empty field '{name}'")
            rows.append((reader.line_num, {k: (v or "").strip() for k, v in row.items() if k}))
    return rows


def read_json(path: Path, dataset: str) -> Any:
    require_file(path, dataset)
    try:
        with text_errors(path), path.open(encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON: {err}") from None
    except RecursionError:
        raise DataError(f"{path}: not valid JSON: nested too deeply") from None


def parse_int(value: str, path: Path, where: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise DataError(f"{path}: {where}: {value!r} is not an integer") from None


def check_audio_exists(paths: Iterable[Path], listed_in: Path) -> None:
    """Every listed audio file exists (checked up front, not after training)."""
    missing = [p for p in paths if not p.is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DataError(f"{listed_in}: audio file not found: {missing[0]}{more}")


def require_clips(clips: list[T], dataset: str, where: Path) -> list[T]:
    """``clips`` unless empty (then a DataError naming ``where``)."""
    if not clips:
        raise DataError(f"{dataset}: no clips found in {where}")
    return clips


def audio_files(folder: Path) -> list[Path]:
    """Audio files directly inside ``folder``, sorted by name."""
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS
    )


def check_positive(name: str, value: float) -> None:
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")


MAX_CLIP_SECONDS = 3600.0
CLIP_SECONDS = Domain(
    gt=0, le=MAX_CLIP_SECONDS, help="Seconds per clip (longer clips are cropped, shorter padded)."
)


# -- sizes of generated data sets ------------------------------------------------------------

MAX_GENERATED_CLIPS = 1_000_000
"""The most clips one count option of a generated data set accepts (the real TAU22 Mobile
development set has about 230,000; a million fills some 90 GB at 44.1 kHz)."""
MAX_GENERATED_GIB = 64
"""The most 16-bit audio one generated data set may hold, all its counts together."""


def clip_count(help: str, low: int = 1) -> Domain:
    """The domain of a generated data set's clip (or class) count: ``[low, 1,000,000]``."""
    return Domain(ge=low, le=MAX_GENERATED_CLIPS, help=help)


def outside_domains(config: Any) -> bool:
    """Whether a field of ``config`` is outside its own domain (then that field's message
    is the one the user sees, not a check that combines fields)."""
    values = vars(config)
    return any(
        domain.problem(values[name])
        for name, domain in field_domains(type(config)).items()
        if name in values
    )


def check_generated_size(clips: float, seconds: float, sample_rate: float, options: str) -> None:
    """Refuse (``ValueError``) a generated data set of more than ``MAX_GENERATED_GIB`` of
    16-bit audio: ``options`` names the options that set its size."""
    gib = clips * seconds * sample_rate * 2 / 2**30
    if gib > MAX_GENERATED_GIB:
        raise ValueError(
            f"{options} would generate {clips:,.0f} clips, {gib:,.0f} GiB of audio; "
            f"at most {MAX_GENERATED_GIB} GiB: lower them"
        )


def read_audioset_json(path: Path, dataset: str = "audioset") -> list[Clip]:
    """Unlabeled clips listed in an AudioMAE-style JSON file."""
    data = read_json(path, dataset)
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise DataError(f"{path}: missing field 'data' (a list of {{'wav': ..., 'labels': ...}})")
    clips = []
    for number, item in enumerate(data["data"]):
        wav = item.get("wav") if isinstance(item, dict) else None
        if not isinstance(wav, str) or not wav:
            raise DataError(f"{path}: data[{number}] has no field 'wav'")
        labels = item.get("labels", "")
        clip_path = Path(wav) if Path(wav).is_absolute() else path.parent / wav
        clips.append(Clip(path=clip_path, label=-1, meta={"labels": str(labels)}))
    check_audio_exists((c.path for c in clips), path)
    return require_clips(clips, dataset, path)


def settings_key(version: int, settings: Any) -> str:
    """The cache key of a generated data set: its generator's version and a hash of its
    settings (a dataclass), e.g. ``v1-0123456789ab``."""
    text = json.dumps({"version": version, **asdict(settings)}, sort_keys=True)
    return f"v{version}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def write_generator_info(path: Path, version: int, settings: Any) -> None:
    """``generator.json``: the generator's version and the settings it wrote the set with."""
    info = {"version": version, **asdict(settings)}
    path.write_text(json.dumps(info, indent=2) + "\n")


def settings_from(config: Any, settings: type[T]) -> T:
    """A generator's settings (a dataclass) from a Config's fields of the same names."""
    values = asdict(config)
    return settings(**{f.name: values[f.name] for f in fields(settings)})


def generated_root(name: str, settings: Any, generate: Callable[[Any, Path], None]) -> Path:
    """The cache folder of a generated data set (``<cache>/<name>/<settings key>``), written by
    ``generate(settings, folder)`` now unless already complete."""
    folder = cache_root() / name / settings.key()
    return build_once(folder, lambda tmp: generate(settings, tmp))
