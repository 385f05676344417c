"""Atomic run folders and the SQLite results store."""

import pytest

from harness.results.store import COLUMNS, COMPLETE_MARKER, ResultStore, RunRecord, staged_dir
from harness.util.errors import HarnessError


def make_record(run_id="r1", config_hash="h1"):
    return RunRecord(
        run_id=run_id,
        created="2026-01-01T00:00:00",
        config_hash=config_hash,
        backbone="b",
        method="m",
        aug="none",
        dataset="d",
        protocols="p",
        seed=0,
        config={"x": [1, 2]},
        metrics={"p/acc": 0.5},
        run_dir="/tmp/x",
        harness_version="0",
        git_commit="",
        environment={"torch": "t"},
        duration_s=1.5,
    )


def test_record_round_trips(tmp_path):
    store = ResultStore(tmp_path / "s.sqlite")
    store.add(make_record())
    [back] = store.records()
    assert back == make_record()
    assert store.has_config("h1") and not store.has_config("h2")
    assert store.records(method="other") == []


def test_duplicate_run_id_is_rejected_and_store_keeps_one_row(tmp_path):
    store = ResultStore(tmp_path / "s.sqlite")
    store.add(make_record())
    with pytest.raises(HarnessError, match="already holds a run with id r1"):
        store.add(make_record())
    assert len(store.records()) == 1


def test_staged_dir_appears_only_on_success(tmp_path):
    final = tmp_path / "runs" / "r1"
    with pytest.raises(RuntimeError), staged_dir(final) as tmp:
        (tmp / "metrics.json").write_text("{}")
        raise RuntimeError("boom")
    assert not final.exists() and list((tmp_path / "runs").iterdir()) == []
    with staged_dir(final) as tmp:
        (tmp / "metrics.json").write_text("{}")
    assert (final / "metrics.json").exists()
    with pytest.raises(HarnessError, match="already exists"), staged_dir(final):
        pass


def test_corrupt_store_is_a_one_line_error(tmp_path):
    path = tmp_path / "s.sqlite"
    path.write_bytes(b"not a database" * 100)
    with pytest.raises(HarnessError, match=f"results store {path} is not usable"):
        ResultStore(path).records()


def test_row_json_is_sorted_and_refuses_non_finite_values(tmp_path):
    record = make_record()
    record.config = {"b": 1, "a": {"d": 2, "c": 3}}
    record.metrics = {"z": 1.0, "y": 2.0}
    record.environment = {"q": 1, "p": 2}
    row = dict(zip(COLUMNS, record.row(), strict=True))
    assert row["config_json"] == '{"a": {"c": 3, "d": 2}, "b": 1}'
    assert row["metrics_json"] == '{"y": 2.0, "z": 1.0}'
    assert row["environment_json"] == '{"p": 2, "q": 1}'
    record.metrics = {"ok": 1.0, "bad": float("nan"), "worse": float("-inf")}
    with pytest.raises(HarnessError, match=r"run r1: non-finite value .*metrics: bad, worse\)$"):
        record.row()
    record.metrics = {"ok": 1.0}
    record.config = {"x": float("inf")}
    with pytest.raises(HarnessError, match=r"run r1: non-finite value in its record"):
        record.row()


def test_records_filter_order_and_missing_store(tmp_path):
    store = ResultStore(tmp_path / "s.sqlite")
    assert store.records() == [] and not store.has_config("h1") and store.run_ids() == {}
    assert not (tmp_path / "s.sqlite").exists()
    later, earlier = make_record("b"), make_record("c", config_hash="h2")
    later.created, earlier.created = "2026-01-02T00:00:00", "2026-01-01T00:00:00"
    later.method = "icl"
    same_time = make_record("a", config_hash="h3")
    same_time.created = "2026-01-02T00:00:00"
    for record in (later, earlier, same_time):
        store.add(record)
    assert [r.run_id for r in store.records()] == ["c", "a", "b"]
    assert [r.run_id for r in store.records(method="icl")] == ["b"]
    assert [r.run_id for r in store.records(method=None, config_hash="h2")] == ["c"]
    with pytest.raises(HarnessError, match="cannot filter runs by bogus"):
        store.records(bogus="x")
    assert store.run_ids() == {r: "/tmp/x" for r in ("a", "b", "c")}
    store.delete("b")
    assert set(store.run_ids()) == {"a", "c"} and store.integrity() == "ok"


def test_recover_renames_committed_and_removes_uncommitted_dead_folders(tmp_path):
    from harness.results.store import recover

    out, store = tmp_path / "runs", ResultStore(tmp_path / "s.sqlite")
    store.add(make_record("done"))
    committed = out / ".done.vm~999999~1.aaaa"
    uncommitted = out / ".lost.vm~999999~1.bbbb"
    incomplete = out / ".done2.vm~999999~1.cccc"
    for folder in (committed, uncommitted, incomplete):
        folder.mkdir(parents=True)
    (committed / COMPLETE_MARKER).write_text("done\n")
    (committed / "metrics.json").write_text("{}")
    (uncommitted / COMPLETE_MARKER).write_text("lost\n")
    from harness.util.cache import host_name

    for folder in (committed, uncommitted, incomplete):
        folder.rename(folder.with_name(folder.name.replace(".vm~", f".{host_name()}~")))
    dry = recover(out, store, repair=False)
    assert [p.name for p in dry.finished] == ["done"] and len(dry.removed) == 2
    assert len(list(out.iterdir())) == 3  # nothing changed without repair
    done = recover(out, store)
    assert [p.name for p in done.finished] == ["done"]
    assert sorted(p.name for p in out.iterdir()) == ["done"]
    assert (out / "done" / "metrics.json").is_file()
    assert recover(out, store).finished == [] and recover(tmp_path / "none", store).removed == []


def test_check_store_lists_each_kind_of_problem_and_repairs_them(tmp_path):
    import json

    from harness.results.store import check_store
    from harness.util.cache import host_name

    out, store = tmp_path / "runs", ResultStore(tmp_path / "runs" / "s.sqlite")
    store.add(make_record("kept"))  # its folder was deleted by hand
    rec = make_record("kept")
    rec.run_id, rec.run_dir = "gone", str(out / "gone")
    store.add(rec)
    staged = out / f".staged.{host_name()}~999999~1.x"
    staged.mkdir(parents=True)
    (staged / COMPLETE_MARKER).write_text("staged\n")
    rec2 = make_record("staged")
    rec2.run_dir = str(out / "staged")
    store.add(rec2)
    dead = out / f".dead.{host_name()}~999999~1.y"
    dead.mkdir()
    orphan = out / "orphan"
    orphan.mkdir()
    record = make_record("orphan")
    (orphan / "config.json").write_text(json.dumps(record.config))
    fields = {k: v for k, v in record.__dict__.items() if k != "config"}
    (orphan / "record.json").write_text(json.dumps(fields))
    broken = out / "broken"
    broken.mkdir()
    (broken / "record.json").write_text("{")
    (out / "notarun").mkdir()
    expected = [
        f"committed run left staged (to rename into place): {out / 'staged'}",
        f"temporary folder of a dead process (to remove): {dead}",
        "run folder without a row, not recoverable (--orphan-folders delete): run folder ",
        f"run folder without a row (to store): {orphan}",
        f"row without a run folder (row to delete): gone ({out / 'gone'})",
    ]
    problems = check_store(out, store)
    assert len(problems) == len(expected)
    for line, start in zip(problems, expected, strict=True):
        assert line.startswith(start), (line, start)
    repaired = check_store(out, store, repair=True)
    assert repaired[0].startswith("committed run left staged (renamed into place)")
    assert repaired[1].startswith("temporary folder of a dead process (removed)")
    assert repaired[3] == f"run folder without a row (stored): {orphan}"
    assert sorted(p.name for p in out.iterdir()) == [
        "broken", "notarun", "orphan", "s.sqlite", "staged"
    ]  # fmt: skip
    assert {"orphan", "staged"} <= set(store.run_ids())
    assert [p for p in check_store(out, store) if "broken" not in p and "gone" not in p] == []


def test_the_kill_suites_stages_are_reached_in_order_while_committing(tmp_path, monkeypatch):
    from harness.results import store as store_module
    from harness.results.store import commit_run
    from harness.util.cache import owner_tag

    reached = []
    monkeypatch.setattr(store_module, "checkpoint", reached.append)
    store = ResultStore(tmp_path / "s.sqlite")
    final = tmp_path / "runs" / "r1"

    def write(tmp):
        assert tmp.parent == final.parent and tmp.name.startswith(f".r1.{owner_tag()}.")
        reached.append("write")

    commit_run(final, store, make_record(), write)
    assert reached == ["write", "insert", "commit"]
    assert sorted(p.name for p in final.parent.iterdir()) == ["r1"]


def test_run_ids_name_the_time_the_config_and_a_random_part():
    import re
    from datetime import UTC, datetime

    from harness.results.store import new_run_id

    created = datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)
    run_id = new_run_id(created, "0123456789abcdef")
    assert re.fullmatch(r"20260304-050607-890123-01234567-[0-9a-f]{8}", run_id), run_id


def test_atomic_writes_create_missing_parents_and_leave_no_temporary_file(tmp_path):
    from harness.results.store import write_json

    target = tmp_path / "a" / "b" / "x.json"
    write_json(target, {"b": 1, "a": [1.5]})
    assert target.read_text() == '{\n  "a": [\n    1.5\n  ],\n  "b": 1\n}\n'
    assert [p.name for p in target.parent.iterdir()] == ["x.json"]


def test_check_store_reports_every_problem_of_each_kind(tmp_path):
    import json

    from harness.results.store import check_store

    out = tmp_path / "runs"
    out.mkdir()
    store = ResultStore(out / "s.sqlite")
    gone = make_record("gone")
    gone.run_dir = str(out / "gone")
    store.add(gone)  # a row without its folder
    for name in ("loose-1", "loose-2"):  # folders without their rows
        folder = out / name
        folder.mkdir()
        record = make_record(name).__dict__ | {"run_dir": str(folder)}
        (folder / "config.json").write_text(json.dumps(record.pop("config")))
        (folder / "record.json").write_text(json.dumps(record))
    (out / "notes.txt").write_text("a file, not a run")
    (out / ".hidden").mkdir()
    problems = check_store(out, store)
    assert len(problems) == 3, problems
    assert sum("loose-" in p for p in problems) == 2 and sum("gone" in p for p in problems) == 1
    assert not any("notes.txt" in p or ".hidden" in p for p in problems)
    assert check_store(tmp_path / "empty", ResultStore(tmp_path / "none.sqlite")) == []
