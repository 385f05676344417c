"""Run folders and the SQLite results store.

A run's folder and its row are one recoverable unit (:func:`commit_run`): the
folder is written under a temporary name that names its process, the row is
inserted in one transaction (the commit point), then the folder is renamed into
place. A failed run leaves neither folder nor row; a killed one leaves at most a
temporary folder of a dead process, which the next command removes (before the
commit point) or renames into place (after it): :func:`recover`.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sqlite3
import time
import warnings
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from harness.util.cache import owned_temp_dir, stale_temp_dirs, temp_owner
from harness.util.errors import HarnessError, UsageError, naming
from harness.util.faults import checkpoint
from harness.util.files import write_text_atomic
from harness.util.names import unknown_name_message

COMPLETE_MARKER = ".complete"
"""Written last into a staged run folder: everything but the rename is done."""
STORE_MARKER = ".store"
"""In a run folder: the absolute path of the results store its row belongs to. Several
stores may share one output folder (``--store runs/a.sqlite``, ``--store runs/b.sqlite``);
only the owner adopts a folder that has no row (:func:`ingest`, ``store check``). Folders
written before the marker existed belong to any store."""
PARTIAL = ".partial"
"""The folder under an output folder holding in-progress runs (``OUT/.partial/<id>``)."""
SAMPLES_FILE = "samples.jsonl"
"""Per-clip predictions of a run's evaluation split (``--log-samples``), one JSON object a
line: ``clip``, ``device``, ``label``, ``predicted``, ``probabilities`` (class -> value)."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    created TEXT NOT NULL,
    config_hash TEXT NOT NULL,
    backbone TEXT NOT NULL,
    method TEXT NOT NULL,
    aug TEXT NOT NULL,
    dataset TEXT NOT NULL,
    protocols TEXT NOT NULL,
    seed INTEGER NOT NULL,
    config_json TEXT NOT NULL,
    metrics_json TEXT NOT NULL,
    run_dir TEXT NOT NULL,
    harness_version TEXT NOT NULL,
    git_commit TEXT NOT NULL,
    environment_json TEXT NOT NULL,
    duration_s REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_config_hash ON runs (config_hash);
"""

COLUMNS = [
    "run_id",
    "created",
    "config_hash",
    "backbone",
    "method",
    "aug",
    "dataset",
    "protocols",
    "seed",
    "config_json",
    "metrics_json",
    "run_dir",
    "harness_version",
    "git_commit",
    "environment_json",
    "duration_s",
]


COLLAPSED_KEY = "health/collapsed"
"""The metric that marks a run whose representation collapsed in training (1.0; 0.0 when
its health probe saw no collapse; absent in runs stored before the probe existed)."""


@dataclass
class RunRecord:
    """One row of the results store."""

    run_id: str
    created: str
    config_hash: str
    backbone: str
    method: str
    aug: str
    dataset: str
    protocols: str
    seed: int
    config: dict[str, Any]
    metrics: dict[str, float]
    run_dir: str
    harness_version: str
    git_commit: str
    environment: dict[str, Any]
    duration_s: float

    @property
    def collapsed(self) -> bool:
        """Whether the run's representation collapsed during training (``health/*``)."""
        return bool(self.metrics.get(COLLAPSED_KEY, 0.0))

    def row(self) -> tuple:
        try:
            values = {
                **self.__dict__,
                "config_json": json.dumps(self.config, sort_keys=True, allow_nan=False),
                "metrics_json": json.dumps(self.metrics, sort_keys=True, allow_nan=False),
                "environment_json": json.dumps(self.environment, sort_keys=True),
            }
        except ValueError:
            bad = sorted(k for k, v in self.metrics.items() if not _finite(v))
            raise HarnessError(
                f"run {self.run_id}: non-finite value in its record (metrics: {', '.join(bad)})"
            ) from None
        return tuple(values[c] for c in COLUMNS)

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> RunRecord:
        """The record of a row; a :class:`MalformedRow` naming the run and the field when a
        JSON column does not parse or holds the wrong shape (e.g. a hand-edited store)."""
        data = dict(row)
        run_id = data.get("run_id")
        for column, check in JSON_COLUMNS.items():
            try:
                value = json.loads(data.pop(column))
            except (TypeError, ValueError) as err:
                reason = str(err).splitlines()[0] if str(err) else type(err).__name__
                message = f"stored run {run_id}: {column} is not JSON ({reason})"
                raise MalformedRow(message) from None
            problem = check(value)
            if problem:
                raise MalformedRow(f"stored run {run_id}: {column} {problem}")
            data[column.removesuffix("_json")] = value
        return cls(**data)


class MalformedRow(HarnessError):
    """A store row whose JSON columns cannot be read back (skipped by listings)."""


def _table_problem(value: Any) -> str:
    return "" if isinstance(value, dict) else f"is a {type(value).__name__}, not a table"


def _metrics_problem(value: Any) -> str:
    if not isinstance(value, dict):
        return _table_problem(value)
    for key, number in value.items():
        if isinstance(number, bool) or not isinstance(number, int | float):
            return f"holds a non-number for {key!r}"
        if not _finite(float(number)):
            return f"holds a non-finite value for {key!r}"
    return ""


JSON_COLUMNS: dict[str, Callable[[Any], str]] = {
    "config_json": _table_problem,
    "metrics_json": _metrics_problem,
    "environment_json": _table_problem,
}
"""Each JSON column and the check of its parsed value ("" when it is fine)."""


def _finite(value: Any) -> bool:
    return not isinstance(value, float) or (value == value and abs(value) != float("inf"))


class ResultStore:
    """The SQLite file that holds one row per finished run."""

    folder_only = False
    """True for :class:`FolderOnlyStore`: a complete run folder is the commit."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def owner(self) -> str:
        """What a run folder of this store's rows names in its :data:`STORE_MARKER`."""
        return str(self.path.resolve())

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=60)
        except (sqlite3.Error, OSError) as err:
            raise HarnessError(f"cannot open results store {self.path}: {err}") from None
        conn.row_factory = sqlite3.Row
        try:
            conn.executescript(SCHEMA)
            self._check_schema(conn)
            with conn:
                yield conn
        except sqlite3.DatabaseError as err:
            raise HarnessError(f"results store {self.path} is not usable: {err}") from None
        finally:
            conn.close()

    def _check_schema(self, conn: sqlite3.Connection) -> None:
        present = {row[1] for row in conn.execute("PRAGMA table_info(runs)")}
        missing = [c for c in COLUMNS if c not in present]
        if missing:
            raise HarnessError(
                f"results store {self.path} has another schema: table 'runs' lacks "
                f"{', '.join(missing)}"
            )

    def check_writable(self) -> None:
        """Preflight: the store opens, has the right schema, takes a write lock and accepts
        a write (rolled back): a store on a read-only mount fails here, not after training."""
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("CREATE TABLE harness_write_check (x)")
            except sqlite3.OperationalError as err:
                raise HarnessError(f"results store {self.path} is not writable: {err}") from None
            finally:
                conn.execute("ROLLBACK")

    def add(self, record: RunRecord) -> None:
        placeholders = ", ".join("?" for _ in COLUMNS)
        row = record.row()
        with self._connect() as conn:
            try:
                conn.execute(
                    f"INSERT INTO runs ({', '.join(COLUMNS)}) VALUES ({placeholders})", row
                )
            except sqlite3.IntegrityError:
                raise HarnessError(
                    f"results store {self.path} already holds a run with id {record.run_id}"
                ) from None
            checkpoint("insert")

    def add_new(self, record: RunRecord) -> bool:
        """Insert ``record`` unless its run id is stored already; True if it was added."""
        placeholders = ", ".join("?" for _ in COLUMNS)
        with self._connect() as conn:
            cursor = conn.execute(
                f"INSERT OR IGNORE INTO runs ({', '.join(COLUMNS)}) VALUES ({placeholders})",
                record.row(),
            )
            return cursor.rowcount == 1

    def delete(self, run_id: str) -> None:
        with self._connect() as conn:
            conn.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))

    def run_ids(self) -> dict[str, str]:
        """``{run_id: run_dir}`` of every stored run."""
        if not self.path.exists():
            return {}
        with self._connect() as conn:
            return dict(conn.execute("SELECT run_id, run_dir FROM runs").fetchall())

    def integrity(self) -> str:
        """SQLite's ``PRAGMA integrity_check`` result (``ok`` when sound)."""
        with self._connect() as conn:
            return "; ".join(r[0] for r in conn.execute("PRAGMA integrity_check").fetchall())

    def records(self, **filters: str | None) -> list[RunRecord]:
        """All runs, oldest first; ``filters`` match columns exactly (None: any)."""
        if not self.path.exists():
            return []
        active = {k: v for k, v in filters.items() if v is not None}
        unknown = set(active) - set(COLUMNS)
        if unknown:
            raise HarnessError(f"cannot filter runs by {', '.join(sorted(unknown))}")
        where = " AND ".join(f"{k} = ?" for k in active) or "1"
        with self._connect() as conn:
            rows = conn.execute(
                f"SELECT * FROM runs WHERE {where} ORDER BY created, run_id", tuple(active.values())
            ).fetchall()
        records = []
        for row in rows:
            try:
                records.append(RunRecord.from_row(row))
            except MalformedRow as err:  # one bad row must not hide every other run
                warnings.warn(
                    f"store {self.path}: {err}; skipped (harness store check lists it)",
                    stacklevel=2,
                )
        return records

    def malformed_rows(self) -> list[str]:
        """One line per row whose JSON columns cannot be read back (for ``store check``)."""
        if not self.path.exists():
            return []
        with self._connect() as conn:
            rows = conn.execute("SELECT * FROM runs ORDER BY created, run_id").fetchall()
        problems = []
        for row in rows:
            try:
                RunRecord.from_row(row)
            except MalformedRow as err:
                problems.append(str(err))
        return problems

    def has_config(self, config_hash: str) -> bool:
        if not self.path.exists():
            return False
        with self._connect() as conn:
            row = conn.execute("SELECT 1 FROM runs WHERE config_hash = ? LIMIT 1", (config_hash,))
            return row.fetchone() is not None


class FolderOnlyStore(ResultStore):
    """Commit mode for cluster jobs: runs write their folder only, never the SQLite file.

    The rename of the complete staged folder is the commit point; the driver (or
    ``harness store ingest``) adds the rows later with :func:`ingest`, so SQLite is
    never written by several hosts over a network file system.
    """

    folder_only = True

    def __init__(self, out_dir: str | Path, owner: str = "") -> None:
        super().__init__(Path(out_dir) / ".no-store")  # never created
        self._owner = owner

    @property
    def owner(self) -> str:
        """The store of the driver that will ingest the folders ("": any store)."""
        return self._owner

    def check_writable(self) -> None:
        pass

    def add(self, record: RunRecord) -> None:
        pass

    def delete(self, run_id: str) -> None:
        pass

    def run_ids(self) -> dict[str, str]:
        return {}

    def integrity(self) -> str:
        return "ok"

    def records(self, **filters: str | None) -> list[RunRecord]:
        return []

    def has_config(self, config_hash: str) -> bool:
        return False


def owned_by(folder: Path, store: ResultStore) -> bool:
    """Whether the run folder (or staged folder) ``folder`` belongs to ``store``: it names
    the store in its :data:`STORE_MARKER`, or names none."""
    try:
        owner = (folder / STORE_MARKER).read_text().strip()
    except FileNotFoundError:
        return True
    except OSError as err:
        raise HarnessError(f"cannot read {folder / STORE_MARKER}: {err}") from None
    return not owner or not store.owner or owner == store.owner


def run_folders(out_dir: Path) -> list[Path]:
    """Finished run folders in ``out_dir`` (those holding a ``record.json``), by name."""
    if not out_dir.is_dir():
        return []
    return sorted(
        p
        for p in out_dir.iterdir()
        if p.is_dir() and not p.name.startswith(".") and (p / "record.json").is_file()
    )


def ingest(out_dir: Path, store: ResultStore) -> tuple[list[RunRecord], list[str]]:
    """Add the finished run folders of ``out_dir`` that belong to ``store`` and have no row
    yet; idempotent.

    Returns the records added and one line per folder that holds no complete record.
    """
    out_dir = Path(out_dir)
    folders = [f for f in run_folders(out_dir) if owned_by(f, store)]
    if not folders:
        return [], []
    stored = store.run_ids()
    added, problems = [], []
    for folder in folders:
        if folder.name in stored:
            continue
        try:
            record = record_from_folder(folder)
            record.row()  # a record that cannot be stored (NaN) is reported, not stored
        except HarnessError as err:
            problems.append(str(err))
            continue
        if store.add_new(record):
            added.append(record)
    return added, problems


def new_run_id(created: datetime, config_hash: str) -> str:
    """``<UTC time to the microsecond>-<config hash>-<random>``: unique across processes."""
    return f"{created:%Y%m%d-%H%M%S-%f}-{config_hash[:8]}-{secrets.token_hex(4)}"


@contextmanager
def staged_dir(final: Path) -> Iterator[Path]:
    """A temporary folder beside ``final`` that becomes ``final`` only if the block succeeds."""
    tmp = temp_dir_beside(final)
    try:
        yield tmp
        _rename_into_place(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def temp_dir_beside(final: Path) -> Path:
    """A new temporary folder of this process beside ``final``, which must not exist yet."""
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise HarnessError(f"cannot create output folder {final.parent}: {err}") from None
    if final.exists():
        raise HarnessError(f"run folder already exists: {final}")
    return owned_temp_dir(final.parent, final.name)


def _rename_into_place(tmp: Path, final: Path) -> None:
    if final.exists():
        raise HarnessError(f"run folder already exists: {final}")
    try:
        os.rename(tmp, final)
    except OSError as err:
        raise HarnessError(f"cannot move run folder into place at {final}: {err}") from None


def commit_run(
    final: Path, store: ResultStore, record: RunRecord, write: Callable[[Path], None]
) -> None:
    """Write a run's folder with ``write(tmp)`` and store its row, as one recoverable unit."""
    tmp = temp_dir_beside(final)
    try:
        with naming(final):
            write(tmp)
            if store.owner:
                (tmp / STORE_MARKER).write_text(f"{store.owner}\n")
            (tmp / COMPLETE_MARKER).write_text(f"{record.run_id}\n")
        store.add(record)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    checkpoint("commit")
    try:
        _rename_into_place(tmp, final)
    except BaseException:
        store.delete(record.run_id)
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@dataclass
class Recovery:
    """What :func:`recover` did (or, with ``repair=False``, found)."""

    finished: list[Path]
    """Complete run folders of committed runs, renamed into place."""
    removed: list[Path]
    """Temporary folders of dead processes whose run was never committed."""
    leftovers: list[Path] = field(default_factory=list)
    """In-progress folders (``OUT/.partial/<id>``) of runs that were stored: a kill after
    the commit point, before the in-progress folder was removed."""
    abandoned: list[Path] = field(default_factory=list)
    """In-progress folders without ``state.json`` nor a checkpoint, older than
    :data:`ABANDONED_AFTER_S`: a kill right after the folder appeared (nothing to resume)."""


def recover(out_dir: Path, store: ResultStore, repair: bool = True) -> Recovery:
    """Finish or undo what killed processes left in ``out_dir`` (live processes' folders stay)."""
    result = Recovery([], [])
    stale = stale_temp_dirs([out_dir])
    stored = store.run_ids() if stale or (out_dir / PARTIAL).is_dir() else {}
    for tmp in stale:
        if not owned_by(tmp, store):
            continue  # another store's run: its own store finishes or removes it
        run_id = temp_owner(tmp)[0]  # type: ignore[index]
        final = out_dir / run_id
        committed = run_id in stored or store.folder_only
        if committed and (tmp / COMPLETE_MARKER).is_file() and not final.exists():
            result.finished.append(final)
            if repair:
                os.rename(tmp, final)
        else:
            result.removed.append(tmp)
            if repair:
                shutil.rmtree(tmp, ignore_errors=True)
    for folder in committed_partials(out_dir, stored):
        result.leftovers.append(folder)
        if repair:
            shutil.rmtree(folder, ignore_errors=True)
    for folder in abandoned_partials(out_dir, set(result.leftovers)):
        result.abandoned.append(folder)
        if repair:
            shutil.rmtree(folder, ignore_errors=True)
    return result


ABANDONED_AFTER_S = 60.0
"""A live run writes its in-progress folder's ``state.json`` right after creating the folder,
so one still without it this long after its last change was left by a killed process."""


def abandoned_partials(out_dir: Path, skip: Collection[Path] = ()) -> list[Path]:
    """In-progress folders that hold neither ``state.json`` nor a checkpoint and have not
    changed for :data:`ABANDONED_AFTER_S` seconds (nothing in them can be resumed)."""
    root = out_dir / PARTIAL
    if not root.is_dir():
        return []
    now = time.time()
    found = []
    for folder in sorted(root.iterdir()):
        if folder in skip or not folder.is_dir() or (folder / "state.json").exists():
            continue
        try:
            newest = max([folder.stat().st_mtime, *(p.stat().st_mtime for p in folder.iterdir())])
        except OSError:  # removed meanwhile
            continue
        if now - newest >= ABANDONED_AFTER_S and not any(folder.glob("rank*.pt")):
            found.append(folder)
    return found


def committed_partials(out_dir: Path, stored: Collection[str] = ()) -> list[Path]:
    """In-progress folders under ``out_dir/.partial`` whose run is finished: its id is in
    ``stored`` or its run folder (with ``record.json``) is in place."""
    root = out_dir / PARTIAL
    if not root.is_dir():
        return []
    return [
        folder
        for folder in sorted(root.iterdir())
        if folder.name in stored or (out_dir / folder.name / "record.json").is_file()
    ]


def record_from_folder(folder: Path) -> RunRecord:
    """The record a run folder holds (``record.json`` and ``config.json``)."""
    try:
        data = json.loads((folder / "record.json").read_text())
        data["config"] = json.loads((folder / "config.json").read_text())
        data["run_dir"] = str(folder)
        record = RunRecord(**{k: data[k] for k in RunRecord.__dataclass_fields__})
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise HarnessError(f"run folder {folder} holds no complete record: {err}") from None
    parsed = {"config": record.config, "metrics": record.metrics, "environment": record.environment}
    for field_name, value in parsed.items():  # a tampered record.json is not ingested
        problem = JSON_COLUMNS[f"{field_name}_json"](value)
        if problem:
            name = "config.json" if field_name == "config" else "record.json"
            raise HarnessError(f"run folder {folder}: {name}: {field_name} {problem}")
    return record


ORPHAN_FOLDER_CHOICES = ("store", "delete")
"""What ``store check --repair`` does with a run folder that has no row: store its record
(the default; the run counts again) or delete the folder."""


def check_store(
    out_dir: Path, store: ResultStore, repair: bool = False, orphan_folders: str = "store"
) -> list[str]:
    """Problems between ``out_dir``'s run folders and ``store``. With ``repair``: a row whose
    folder is gone is deleted (it would still count as a seed), and a folder without a row is
    stored or deleted as ``orphan_folders`` says."""
    if orphan_folders not in ORPHAN_FOLDER_CHOICES:
        raise UsageError(f"orphan_folders must be store or delete, got {orphan_folders!r}")
    problems = []
    integrity = store.integrity() if store.path.exists() else "ok"
    if integrity != "ok":
        problems.append(f"store {store.path}: integrity_check: {integrity}")
    problems += [
        f"malformed row (left as is; delete the run or fix the row): {line}"
        for line in store.malformed_rows()
    ]
    recovery = recover(out_dir, store, repair)
    verb = "renamed into place" if repair else "to rename into place"
    problems += [f"committed run left staged ({verb}): {p}" for p in recovery.finished]
    verb = "removed" if repair else "to remove"
    problems += [f"temporary folder of a dead process ({verb}): {p}" for p in recovery.removed]
    problems += [f"in-progress folder of a stored run ({verb}): {p}" for p in recovery.leftovers]
    problems += [
        f"in-progress folder of a run killed before its first state ({verb}): {p}"
        for p in recovery.abandoned
    ]
    stored = store.run_ids()
    folders = (
        sorted(p for p in out_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
        if out_dir.is_dir()
        else []
    )
    for folder in folders:
        if folder.name in stored or not (folder / "record.json").is_file():
            continue
        if not owned_by(folder, store):
            continue  # a run of another store sharing this output folder
        problems.append(repair_orphan_folder(folder, store, repair, orphan_folders))
    names = {p.name for p in folders} | {p.name for p in recovery.finished}
    here = out_dir.resolve()
    for run_id, run_dir in sorted(stored.items()):
        if Path(run_dir).resolve().parent != here:
            continue  # a run of another output folder sharing this store
        if run_id not in names and not Path(run_dir).is_dir():
            verb = "row deleted" if repair else "row to delete"
            problems.append(f"row without a run folder ({verb}): {run_id} ({run_dir})")
            if repair:
                store.delete(run_id)
    return problems


def repair_orphan_folder(folder: Path, store: ResultStore, repair: bool, choice: str) -> str:
    """Store (or delete, ``choice``) a run folder that has no row; the line that says so."""
    if choice == "delete":
        if repair:
            remove_folder(folder)
        return f"run folder without a row ({'deleted' if repair else 'to delete'}): {folder}"
    try:
        record = record_from_folder(folder)
    except HarnessError as err:
        return f"run folder without a row, not recoverable (--orphan-folders delete): {err}"
    if repair:
        store.add(record)
    return f"run folder without a row ({'stored' if repair else 'to store'}): {folder}"


def remove_folder(folder: Path) -> None:
    """Delete a folder so that no half-deleted copy stays: rename it away, then remove it."""
    tmp = owned_temp_dir(folder.parent, folder.name)
    os.rename(folder, tmp)
    shutil.rmtree(tmp, ignore_errors=True)


def remove_run(run_id: str, store: ResultStore, out_dir: Path) -> Path | None:
    """Delete a run's row and folder as one unit; the folder removed (None when it was gone).

    The folder is first renamed to a temporary folder of this process, then the row is
    deleted, then the folder removed: a process killed in between leaves either the whole run
    (``store check --repair`` renames it back) or a stale temporary folder (removed)."""
    stored = store.run_ids()
    folder = Path(stored[run_id]) if run_id in stored else out_dir / run_id
    if run_id not in stored and not (folder / "record.json").is_file():
        known = sorted(set(stored) | {p.name for p in run_folders(out_dir)})
        raise UsageError(unknown_name_message(f"run in {store.path}", run_id, known))
    if not folder.is_dir():
        store.delete(run_id)
        return None
    tmp = owned_temp_dir(folder.parent, folder.name)
    try:
        os.rename(folder, tmp)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise HarnessError(f"cannot remove run folder {folder}: {err}") from None
    try:
        store.delete(run_id)
    except BaseException:
        os.rename(tmp, folder)
        raise
    shutil.rmtree(tmp, ignore_errors=True)
    return folder


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
