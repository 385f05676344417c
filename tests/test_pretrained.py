"""Published checkpoints by name, against a local HTTP server on 127.0.0.1."""

import hashlib
import http.server
import io
import threading
from pathlib import Path

import pytest
import torch

from harness.checkpoints import load_backbone_checkpoint
from harness.config import resolve
from harness.errors import DataError, UsageError
from harness.plugins import load_plugins
from harness.pretrained import PREFIX, Pretrained, cache_path, fetch


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
    from harness_plugins.backbones import audiomae, beats, passt

    assert {"passt-s-ap476-swa", "passt-s-kd-ap486"} <= set(passt.PRETRAINED)
    assert {"beats-iter3", "beats-iter3-plus-as2m"} <= set(beats.PRETRAINED)
    assert "audiomae-base-as2m" in audiomae.PRETRAINED
    for module in (audiomae, beats, passt):
        for entry in module.PRETRAINED.values():
            assert entry.url.startswith("https://") and entry.sha256 is None  # none published
