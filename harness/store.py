"""Run folders and the SQLite results store.

A run's folder is written under a temporary name and renamed into place only
when complete; its row is inserted in one transaction after that. A failed or
interrupted run therefore leaves neither a half-written folder nor a record.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

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

    def row(self) -> tuple:
        values = {
            **self.__dict__,
            "config_json": json.dumps(self.config, sort_keys=True),
            "metrics_json": json.dumps(self.metrics, sort_keys=True),
            "environment_json": json.dumps(self.environment, sort_keys=True),
        }
        return tuple(values[c] for c in COLUMNS)

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> RunRecord:
        data = dict(row)
        data["config"] = json.loads(data.pop("config_json"))
        data["metrics"] = json.loads(data.pop("metrics_json"))
        data["environment"] = json.loads(data.pop("environment_json"))
        return cls(**data)


class ResultStore:
    """The SQLite file that holds one row per finished run."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(self.path, timeout=30)
        except sqlite3.Error as err:
            raise HarnessError(f"cannot open results store {self.path}: {err}") from None
        conn.row_factory = sqlite3.Row
        try:
            conn.executescript(SCHEMA)
            with conn:
                yield conn
        except sqlite3.DatabaseError as err:
            raise HarnessError(f"results store {self.path} is not usable: {err}") from None
        finally:
            conn.close()

    def add(self, record: RunRecord) -> None:
        placeholders = ", ".join("?" for _ in COLUMNS)
        with self._connect() as conn:
            conn.execute(
                f"INSERT INTO runs ({', '.join(COLUMNS)}) VALUES ({placeholders})", record.row()
            )

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
        return [RunRecord.from_row(r) for r in rows]

    def has_config(self, config_hash: str) -> bool:
        if not self.path.exists():
            return False
        with self._connect() as conn:
            row = conn.execute("SELECT 1 FROM runs WHERE config_hash = ? LIMIT 1", (config_hash,))
            return row.fetchone() is not None


@contextmanager
def staged_dir(final: Path) -> Iterator[Path]:
    """A temporary folder beside ``final`` that becomes ``final`` only if the block succeeds."""
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        raise HarnessError(f"run folder already exists: {final}")
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """Write through a temporary file and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
