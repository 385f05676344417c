"""Published checkpoints by name: download once into the cache, verify on every use.

A backbone class lists its published checkpoints in its ``pretrained`` mapping
of :class:`harness.api.Pretrained` entries (URL, key layout, and a sha256 only where the publisher
states one). ``--set backbone.pretrained=NAME`` becomes ``backbone.checkpoint =
"pretrained:NAME"`` (machine-independent in the run's config); loading it calls
:func:`fetch`, which downloads the file into ``$HARNESS_CACHE/pretrained/<backbone>/``
with a progress bar. Without a published hash, the hash of the first download is
written beside the file (``<file>.sha256``) and every later use checks the file against
it. A download goes to a temporary file renamed into place only when complete and
verified, so an interrupted, truncated or mismatching download leaves nothing behind.

A publisher's file may be a zip archive holding the checkpoint (M2D): the entry then names
its ``member``. The archive is downloaded (and checked against a published hash) to a
temporary file, the member is extracted through another temporary file renamed into
``$HARNESS_CACHE/pretrained/<backbone>/<archive stem>/``, the archive is discarded, and the
member's hash is recorded and verified as above. An archive placed by hand in that folder
is extracted the same way.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Mapping
from http.client import HTTPException
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from harness.api.pretrained import Pretrained
from harness.util.cache import cache_root, owner_tag, stale_temp_files
from harness.util.errors import DataError, UsageError
from harness.util.files import write_text_atomic
from harness.util.names import unknown_name_message

if TYPE_CHECKING:
    from harness.api.components import Backbone

PREFIX = "pretrained:"
CHUNK = 1 << 20
TIMEOUT_S = 60.0


def registry(backbone_cls: type[Backbone]) -> Mapping[str, Pretrained]:
    """The backbone's published checkpoints by name (:attr:`Backbone.pretrained`)."""
    return backbone_cls.pretrained


def lookup(backbone_cls: type, name: str) -> Pretrained:
    known = registry(backbone_cls)
    if name not in known:
        backbone = backbone_cls.name
        raise UsageError(unknown_name_message(f"pretrained {backbone} checkpoint", name, known))
    return known[name]


def apply_pretrained(backbone_cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """``backbone.pretrained=NAME`` as ``checkpoint = "pretrained:NAME"`` plus its config."""
    values = dict(values)
    name = values.pop("pretrained", None)
    if name in (None, ""):
        return values
    if not isinstance(name, str):
        raise UsageError(f"backbone.pretrained must be a name, got {name!r}")
    if values.get("checkpoint"):
        raise UsageError("set backbone.pretrained or backbone.checkpoint, not both")
    entry = lookup(backbone_cls, name)
    values["checkpoint"] = PREFIX + name
    for key, value in entry.config.items():
        values.setdefault(key, value)
    return values


def cache_path(backbone: str, entry: Pretrained) -> Path:
    """Where the checkpoint to load lies: the file, or the member extracted from its archive."""
    folder = cache_root() / "pretrained" / backbone
    if entry.member is None:
        return folder / entry.filename
    return folder / Path(entry.filename).stem / PurePosixPath(entry.member).name


def resolve_checkpoint(backbone_cls: type, checkpoint: str | Path) -> Path:
    """A checkpoint path, downloading a ``pretrained:NAME`` first."""
    text = str(checkpoint)
    if not text.startswith(PREFIX):
        return Path(text).expanduser()
    entry = lookup(backbone_cls, text[len(PREFIX) :])
    backbone = backbone_cls.name
    return fetch(entry, cache_path(backbone, entry))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(entry: Pretrained, path: Path, progress: bool | None = None) -> Path:
    """``path`` holding ``entry``'s file: downloaded once, verified on every call."""
    recorded = path.with_name(path.name + ".sha256")
    if entry.member is not None:
        if path.is_file():
            verify(path, _read_hash(recorded), recorded)  # a published hash is the archive's
            return path
        return fetch_member(entry, path, progress)
    if path.is_file():
        verify(path, entry.sha256 or _read_hash(recorded), recorded)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp, digest = download(entry, path, progress)
    try:
        if entry.sha256 is not None and digest != entry.sha256.lower():
            raise DataError(
                f"download of {entry.filename} has sha256 {digest[:16]}..., "
                f"expected {entry.sha256[:16]}... from the registry; nothing was kept"
            )
        write_text_atomic(recorded, digest + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def fetch_member(entry: Pretrained, path: Path, progress: bool | None = None) -> Path:
    """Extract ``entry.member`` to ``path`` from its archive: one placed by hand beside
    ``path``, else a download (verified against a published hash) that is then discarded."""
    path.parent.mkdir(parents=True, exist_ok=True)
    placed = path.parent / entry.filename
    if placed.is_file():
        if entry.sha256 is not None:
            verify(placed, entry.sha256, placed.with_name(placed.name + ".sha256"))
        archive = placed
    else:
        archive, digest = download(entry, placed, progress, extracted=path)
        if entry.sha256 is not None and digest != entry.sha256.lower():
            archive.unlink(missing_ok=True)
            raise DataError(
                f"download of {entry.filename} has sha256 {digest[:16]}..., "
                f"expected {entry.sha256[:16]}... from the registry; nothing was kept"
            )
    try:
        tmp, digest = extract(archive, entry.member, path, entry.filename)
        try:
            write_text_atomic(path.with_name(path.name + ".sha256"), digest + "\n")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    finally:
        if archive != placed:
            archive.unlink(missing_ok=True)
    return path


def extract(archive: Path, member: str, path: Path, name: str) -> tuple[Path, str]:
    """``member`` of the zip ``archive`` (published as ``name``) in a temporary file beside
    ``path``, and its sha256."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, zipfile.ZipFile(archive) as zipped:
            if member not in zipped.namelist():
                names = [n for n in zipped.namelist() if not n.endswith("/")]
                shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
                raise DataError(
                    f"archive {name} has no member {member} "
                    f"({len(names)} files: {shown or 'none'}); nothing was kept"
                )
            with zipped.open(member) as source:
                while chunk := source.read(CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as err:
        tmp.unlink(missing_ok=True)
        reason = _reason(err)
        raise DataError(f"cannot extract {member} from {name}: {reason}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp, digest.hexdigest()


def verify(path: Path, expected: str | None, recorded: Path) -> None:
    if expected is None:
        write_text_atomic(recorded, sha256_of(path) + "\n")  # placed by hand: record it now
        return
    actual = sha256_of(path)
    if actual != expected.lower():
        raise DataError(
            f"{path} has sha256 {actual[:16]}..., expected {expected[:16]}... "
            f"(from {recorded.name if recorded.is_file() else 'the registry'}); "
            f"delete it to download it again"
        )


def _read_hash(recorded: Path) -> str | None:
    if not recorded.is_file():
        return None
    text = recorded.read_text().strip()
    return text or None


def download(
    entry: Pretrained, path: Path, progress: bool | None = None, extracted: Path | None = None
) -> tuple[Path, str]:
    """Stream ``entry.url`` to a temporary file beside ``path``; returns it and its sha256.

    Anything short of a complete body (connection lost, fewer bytes than announced, an
    HTML page instead of a file) removes the partial file and raises one line naming the
    file to place by hand (and, for an archive, where its ``extracted`` member may go).
    """
    from harness.util import progress as bars  # imports tqdm (~60 ms): kept out of `harness --help`

    show = bars.enabled() if progress is None else progress
    remove_stale_partials(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.{owner_tag()}.", dir=path.parent)
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            request = urllib.request.Request(entry.url, headers={"User-Agent": "harness"})
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                if "text/html" in response.headers.get("Content-Type", ""):
                    raise _Failed("the server sent a web page, not the file")
                total = int(response.headers.get("Content-Length") or 0) or None
                received = _stream(response, out, digest, total, show, path.name)
            if total is not None and received != total:
                raise _Failed(f"truncated: {received} of {total} bytes")
        if entry.sha256 is None and extracted is None:  # else: the hash, or the extraction
            check_body(tmp)
    except (_Failed, OSError, HTTPException, TimeoutError) as err:
        tmp.unlink(missing_ok=True)
        raise DataError(offline_message(entry, path, _reason(err), extracted)) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp, digest.hexdigest()


def remove_stale_partials(path: Path) -> None:
    """Partial downloads of ``path`` left by killed processes (their owner is dead)."""
    for stale in stale_temp_files(path.parent, path.name):
        stale.unlink(missing_ok=True)


def check_body(tmp: Path) -> None:
    """A downloaded checkpoint without a published hash is kept only when it can be one: not
    empty, not a web page, and a complete zip (torch's format; every member's CRC checked)
    or a pickle (torch's legacy format). Raises :class:`_Failed`. (An archive is checked by
    its extraction, which reads every byte of its member against the CRC.)"""
    with tmp.open("rb") as handle:
        head = handle.read(1024)
    if not head:
        raise _Failed("the server sent an empty file")
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head")) or b"<html" in text:
        raise _Failed("the server sent a web page, not the file")
    if zipfile.is_zipfile(tmp):
        try:
            with zipfile.ZipFile(tmp) as zipped:
                bad = zipped.testzip()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError) as err:
            raise _Failed(f"not a complete zip file ({_reason(err)})") from None
        if bad is not None:
            raise _Failed(f"corrupt member {bad} (truncated or damaged download)")
        return
    if head[:1] != b"\x80":  # pickle's PROTO opcode: torch's legacy (non-zip) format
        raise _Failed("neither a torch checkpoint nor a zip file (truncated or damaged download)")


def _stream(response, out, digest, total: int | None, show: bool, name: str) -> int:
    from tqdm.auto import tqdm  # ~60 ms: only a download needs it, not `harness --help`

    received = 0
    with tqdm(
        total=total,
        unit="B",
        unit_scale=True,
        desc=f"downloading {name}",
        disable=not show,
        leave=False,
    ) as bar:
        while chunk := response.read(CHUNK):
            out.write(chunk)
            digest.update(chunk)
            received += len(chunk)
            bar.update(len(chunk))
    return received


class _Failed(Exception):
    pass


def _reason(err: BaseException) -> str:
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code}"
    if isinstance(err, urllib.error.URLError):
        return str(err.reason)
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def offline_message(
    entry: Pretrained, path: Path, reason: str, extracted: Path | None = None
) -> str:
    where = entry.page or entry.url
    member = f" (or its member {entry.member} at {extracted})" if extracted is not None else ""
    return (
        f"cannot download {entry.filename} ({reason}); "
        f"download it from {where} and place it at {path}{member}"
    )
