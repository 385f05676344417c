"""Published checkpoints by name, against a local HTTP server on 127.0.0.1."""

import hashlib
import http.server
import io
import threading
import zipfile
from pathlib import Path

import pytest
import torch

from harness.registry.checkpoints import load_backbone_checkpoint
from harness.registry.config import resolve
from harness.registry.plugins import load_plugins
from harness.registry.pretrained import PREFIX, Pretrained, cache_path, fetch
from harness.util.errors import DataError, UsageError


class Server:
    """Serves ``files`` (path -> bytes); ``lie_length`` announces more bytes than it sends."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.lie_length: set[str] = set()
        self.requests = 0
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.requests += 1
                path = self.path.split("?", 1)[0]
                body = owner.files.get(path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                extra = 1000 if path in owner.lie_length else 0
                self.send_header("Content-Length", str(len(body) + extra))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    server = Server()
    yield server
    server.stop()


def checkpoint_bytes(state: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def cache_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_downloads_once_records_the_hash_and_verifies_later(server, tmp_path):
    body = checkpoint_bytes({"w": torch.arange(6.0)})
    server.files["/ck.pt"] = body
    entry = Pretrained(f"{server.url}/ck.pt?token=x", layout="test")
    path = tmp_path / "cache" / "ck.pt"
    assert fetch(entry, path, progress=False) == path
    assert path.read_bytes() == body
    recorded = path.with_name("ck.pt.sha256").read_text().strip()
    assert recorded == hashlib.sha256(body).hexdigest()
    server.stop()  # offline now: the cached, verified file is enough
    assert fetch(entry, path, progress=False) == path
    assert server.requests == 1
    path.write_bytes(body[:-1] + bytes([body[-1] ^ 1]))  # changed since the download
    with pytest.raises(DataError, match=r"ck.pt has sha256 .* delete it to download it again"):
        fetch(entry, path, progress=False)


def test_published_checksum_mismatch_keeps_nothing(server, tmp_path):
    server.files["/ck.pt"] = b"not the published file"
    entry = Pretrained(f"{server.url}/ck.pt", layout="test", sha256="ab" * 32)
    path = tmp_path / "cache" / "ck.pt"
    with pytest.raises(DataError, match=r"^download of ck.pt has sha256 .*nothing was kept$"):
        fetch(entry, path, progress=False)
    assert cache_files(path.parent) == []


def test_published_checksum_match_is_accepted(server, tmp_path):
    body = b"published bytes"
    server.files["/ck.pt"] = body
    entry = Pretrained(f"{server.url}/ck.pt", "test", sha256=hashlib.sha256(body).hexdigest())
    assert fetch(entry, tmp_path / "ck.pt", progress=False).read_bytes() == body


def test_truncated_download_keeps_nothing(server, tmp_path):
    server.files["/ck.pt"] = b"x" * 5000
    server.lie_length.add("/ck.pt")
    path = tmp_path / "cache" / "ck.pt"
    with pytest.raises(DataError) as err:
        fetch(Pretrained(f"{server.url}/ck.pt", "test"), path, progress=False)
    message = str(err.value)
    assert "\n" not in message and "cannot download ck.pt" in message
    assert f"place it at {path}" in message
    assert cache_files(path.parent) == []


def test_server_gone_names_the_file_to_place(server, tmp_path):
    url = f"{server.url}/ck.pt"
    server.stop()
    path = tmp_path / "cache" / "ck.pt"
    entry = Pretrained(url, "test", page="https://example.org/releases")
    with pytest.raises(DataError) as err:
        fetch(entry, path, progress=False)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("cannot download ck.pt (")
    assert message.endswith(f"download it from https://example.org/releases and place it at {path}")
    assert cache_files(path.parent) == []


def test_http_error_is_one_line(server, tmp_path):
    with pytest.raises(DataError, match=r"cannot download nothere.pt \(HTTP 404\)"):
        fetch(Pretrained(f"{server.url}/nothere.pt", "test"), tmp_path / "n.pt", progress=False)


def test_set_backbone_pretrained_resolves_downloads_and_loads(server, monkeypatch):
    from harness_plugins.backbones import passt

    plugins = load_plugins()
    source = passt.PaSST(passt.PaSST.Config(size="tiny"))
    server.files["/tiny.pt"] = checkpoint_bytes(source.state_dict())
    entry = Pretrained(f"{server.url}/tiny.pt", layout="passt", config={"size": "tiny"})
    monkeypatch.setitem(passt.PRETRAINED, "test-tiny", entry)

    cfg = resolve({"backbone": {"name": "passt", "pretrained": "test-tiny"}}, plugins)
    assert cfg.backbone.config.checkpoint == PREFIX + "test-tiny"
    assert cfg.as_dict()["backbone"]["checkpoint"] == "pretrained:test-tiny"
    target = passt.PaSST(cfg.backbone.config)
    report = load_backbone_checkpoint(target, cfg.backbone.config.checkpoint)
    assert report.path == cache_path("passt", entry)
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key


def test_unknown_pretrained_name_lists_the_known_ones():
    with pytest.raises(UsageError, match=r"unknown pretrained passt checkpoint 'passt-s-ap47'"):
        resolve({"backbone": {"name": "passt", "pretrained": "passt-s-ap47"}}, load_plugins())
    with pytest.raises(UsageError, match="not both"):
        resolve(
            {"backbone": {"name": "passt", "pretrained": "passt-s-ap476-swa", "checkpoint": "x"}},
            load_plugins(),
        )


def test_every_backbone_lists_published_names():
    from harness_plugins.backbones import audiomae, beats, m2d, mae_ast, passt

    assert {"passt-s-ap476-swa", "passt-s-kd-ap486"} <= set(passt.PRETRAINED)
    assert {"beats-iter3", "beats-iter3-plus-as2m"} <= set(beats.PRETRAINED)
    assert "audiomae-base-as2m" in audiomae.PRETRAINED
    assert "mae-ast-patch-12l-chunk75" in mae_ast.PRETRAINED
    assert "m2d-vit-base-221006-mr7" in m2d.PRETRAINED
    for module in (audiomae, beats, m2d, mae_ast, passt):
        for entry in module.PRETRAINED.values():
            assert entry.url.startswith("https://") and entry.sha256 is None  # none published
    for entry in m2d.PRETRAINED.values():  # a zip holding <its stem>/checkpoint-300.pth
        stem = entry.filename.removesuffix(".zip")
        assert entry.member == f"{stem}/checkpoint-300.pth" and "-80x608p16x16-" in stem


@pytest.mark.parametrize(
    ("backbone", "name", "expected"),
    [
        ("m2d", "m2d-vit-base-221006-mr7", {"size": "base", "input_frames": 608}),
        ("mae-ast", "mae-ast-patch-12l-chunk75", {"size": "base"}),
    ],
)
def test_new_names_set_the_config_their_file_needs(backbone, name, expected):
    cfg = resolve({"backbone": {"name": backbone, "pretrained": name}}, load_plugins())
    values = cfg.as_dict()["backbone"]
    assert values["checkpoint"] == PREFIX + name
    assert {k: values[k] for k in expected} == expected


def test_m2d_pretrained_name_downloads_the_zip_and_loads_its_member(server, monkeypatch):
    import argparse

    from harness_plugins.backbones import m2d

    source = m2d.M2D(m2d.M2D.Config(size="tiny"))
    state = dict(source.state_dict())
    aside = {"target_blocks.0.norm1.weight": torch.ones(48), "decoder_embed.weight": torch.ones(2)}
    published = {"model": {**state, **aside}, "epoch": 300, "args": argparse.Namespace(lr=1e-4)}
    stem = "m2d_vit_base-80x608p16x16-000000-test"
    server.files[f"/{stem}.zip"] = zip_bytes(
        {f"{stem}/checkpoint-300.pth": checkpoint_bytes(published)}
    )
    entry = Pretrained(
        f"{server.url}/{stem}.zip",
        layout="m2d",
        config={"size": "tiny"},
        member=f"{stem}/checkpoint-300.pth",
    )
    monkeypatch.setitem(m2d.PRETRAINED, "test-tiny", entry)

    cfg = resolve({"backbone": {"name": "m2d", "pretrained": "test-tiny"}}, load_plugins())
    target = m2d.M2D(cfg.backbone.config)
    report = load_backbone_checkpoint(target, cfg.backbone.config.checkpoint)
    assert report.path == cache_path("m2d", entry)
    assert report.path.parts[-2:] == (stem, "checkpoint-300.pth")
    assert report.loaded == len(state)
    for key, value in state.items():
        assert torch.equal(target.state_dict()[key], value), key


def test_mae_ast_pretrained_name_loads_the_published_fairseq_layout(server, monkeypatch):
    from harness_plugins.backbones import mae_ast

    source = mae_ast.MaeAst(mae_ast.MaeAst.Config(size="tiny"))
    server.files["/tiny.pt"] = checkpoint_bytes(source.published_checkpoint())
    entry = Pretrained(f"{server.url}/tiny.pt", layout="mae-ast", config={"size": "tiny"})
    monkeypatch.setitem(mae_ast.PRETRAINED, "test-tiny", entry)

    cfg = resolve({"backbone": {"name": "mae-ast", "pretrained": "test-tiny"}}, load_plugins())
    target = mae_ast.MaeAst(cfg.backbone.config)
    load_backbone_checkpoint(target, cfg.backbone.config.checkpoint)
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key


# -- a checkpoint inside a zip archive (M2D's releases) ----------------------------------


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        for name, body in files.items():
            zipped.writestr(name, body)
    return buffer.getvalue()


MEMBER = "pack/checkpoint-300.pth"


def test_archive_member_is_extracted_recorded_and_the_archive_discarded(server, tmp_path):
    body = checkpoint_bytes({"w": torch.arange(4.0)})
    archive = zip_bytes({"pack/": b"", MEMBER: body, "pack/log.txt": b"epoch 300"})
    server.files["/pack.zip"] = archive
    published = hashlib.sha256(archive).hexdigest()  # a publisher's hash is the archive's
    entry = Pretrained(f"{server.url}/pack.zip", "test", sha256=published, member=MEMBER)
    path = cache_path("m2d", entry)
    assert path.parts[-3:] == ("m2d", "pack", "checkpoint-300.pth")
    assert fetch(entry, path, progress=False).read_bytes() == body
    assert cache_files(path.parent) == ["checkpoint-300.pth", "checkpoint-300.pth.sha256"]
    recorded = path.with_name("checkpoint-300.pth.sha256").read_text().strip()
    assert recorded == hashlib.sha256(body).hexdigest()
    server.stop()  # offline: the extracted, recorded member is enough
    assert fetch(entry, path, progress=False) == path
    assert server.requests == 1
    path.write_bytes(body[:-1] + bytes([body[-1] ^ 1]))
    with pytest.raises(DataError, match=r"checkpoint-300.pth has sha256 .* delete it"):
        fetch(entry, path, progress=False)


def test_archive_without_the_member_is_one_line_and_keeps_nothing(server, tmp_path):
    server.files["/pack.zip"] = zip_bytes({"pack/other.pth": b"x", "pack/log.txt": b"y"})
    entry = Pretrained(f"{server.url}/pack.zip", "test", member=MEMBER)
    path = tmp_path / "cache" / "pack" / "checkpoint-300.pth"
    with pytest.raises(DataError) as err:
        fetch(entry, path, progress=False)
    assert str(err.value) == (
        f"archive pack.zip has no member {MEMBER} (2 files: pack/other.pth, pack/log.txt); "
        "nothing was kept"
    )
    assert cache_files(path.parent) == []


def test_archive_checksum_mismatch_or_not_a_zip_keeps_nothing(server, tmp_path):
    server.files["/pack.zip"] = zip_bytes({MEMBER: b"not the published archive"})
    path = tmp_path / "cache" / "pack" / "checkpoint-300.pth"
    entry = Pretrained(f"{server.url}/pack.zip", "test", sha256="cd" * 32, member=MEMBER)
    with pytest.raises(DataError, match=r"^download of pack.zip has sha256 .*nothing was kept$"):
        fetch(entry, path, progress=False)
    assert cache_files(path.parent) == []
    server.files["/pack.zip"] = b"<not a zip>"
    with pytest.raises(DataError) as err:
        fetch(Pretrained(f"{server.url}/pack.zip", "test", member=MEMBER), path, progress=False)
    assert str(err.value).startswith(f"cannot extract {MEMBER} from pack.zip: ")
    assert "\n" not in str(err.value)
    assert cache_files(path.parent) == []


def test_archive_truncated_or_offline_names_both_places(server, tmp_path):
    archive = zip_bytes({MEMBER: b"x" * 5000})
    server.files["/pack.zip"] = archive
    server.lie_length.add("/pack.zip")
    url = f"{server.url}/pack.zip"
    entry = Pretrained(url, "test", page="https://example.org/r", member=MEMBER)
    path = tmp_path / "cache" / "pack" / "checkpoint-300.pth"
    with pytest.raises(DataError) as err:
        fetch(entry, path, progress=False)
    assert str(err.value) == (
        f"cannot download pack.zip (truncated: {len(archive)} of {len(archive) + 1000} bytes); "
        "download it from "
        f"https://example.org/r and place it at {path.parent / 'pack.zip'} "
        f"(or its member {MEMBER} at {path})"
    )
    assert cache_files(path.parent) == []


def test_archive_placed_by_hand_is_extracted_offline_and_kept(server, tmp_path):
    body = b"hand-placed checkpoint"
    url = f"{server.url}/pack.zip"
    server.stop()
    path = tmp_path / "cache" / "pack" / "checkpoint-300.pth"
    path.parent.mkdir(parents=True)
    (path.parent / "pack.zip").write_bytes(zip_bytes({MEMBER: body}))
    assert fetch(Pretrained(url, "test", member=MEMBER), path, progress=False).read_bytes() == body
    assert cache_files(path.parent) == [
        "checkpoint-300.pth",
        "checkpoint-300.pth.sha256",
        "pack.zip",
    ]


def test_list_backbones_shows_the_published_names():
    from tests.conftest import run_cli

    result = run_cli("list", "backbones")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if "backbone.pretrained=NAME" in line]
    shown = {name.strip() for line in lines for name in line.split(":", 1)[1].split(",")}
    assert {"mae-ast-patch-12l-chunk75", "m2d-vit-base-221006-mr7", "beats-iter3"} <= shown
