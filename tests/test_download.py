"""`python -m jaxdl.data download NAME` against an HTTP server on the loopback address.

The server (http.server in a thread) serves a tmp folder, answers Range requests with 206
and can cut a response short. The downloader is pointed at it with `base_url`; the cache
is a tmp folder through $XDG_CACHE_HOME. Nothing here reaches the network.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import threading
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from jaxdl import data
from jaxdl.data import __main__ as data_cli
from jaxdl.data import files, rainfall

CONTENT = bytes(range(256)) * 1000  # 256,000 bytes: several chunks of the downloader


@pytest.fixture
def server(tmp_path, monkeypatch):
    root = tmp_path / "served"
    root.mkdir()
    state = SimpleNamespace(cut_after=None, ranges=[], honour_range=True)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802  (http.server's name)
            path = root / self.path.lstrip("/")
            if not path.is_file():
                self.send_error(404)
                return
            body = path.read_bytes()
            requested = self.headers.get("Range")
            state.ranges.append(requested)
            start = 0
            if requested and state.honour_range:
                start = int(requested.removeprefix("bytes=").rstrip("-"))
                if start >= len(body):
                    self.send_error(416)
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            rest = body[start:]
            self.send_header("Content-Length", str(len(rest)))
            self.end_headers()
            if state.cut_after is not None:  # the connection drops mid-file, once
                rest, state.cut_after = rest[:state.cut_after], None
            self.wfile.write(rest)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    yield SimpleNamespace(root=root, url=f"http://127.0.0.1:{httpd.server_port}/mirror",
                          state=state, cache=tmp_path / "cache" / "jaxdl" / "data")
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def _spec(content: bytes = CONTENT, name: str = "blob.bin") -> files.Download:
    digest = hashlib.sha256(content).hexdigest()
    # The canonical URL is never reached: base_url replaces everything before the name.
    return files.Download(name="blob", subdir="blob", title="Blob", files=(name,),
                          remotes=(files.Remote(f"https://canonical.invalid/x/{name}", digest),))


def _serve(server, content: bytes, name: str = "blob.bin") -> None:
    (server.root / "mirror").mkdir(exist_ok=True)
    (server.root / "mirror" / name).write_bytes(content)


def test_good_file_lands_in_the_user_cache(server):
    _serve(server, CONTENT)
    folder = files.download(_spec(), base_url=server.url, progress=False)
    assert folder == server.cache / "blob"
    assert (folder / "blob.bin").read_bytes() == CONTENT
    assert sorted(p.name for p in folder.iterdir()) == ["blob.bin"]  # no .part left
    assert server.state.ranges == [None]
    # Present and complete: a second call fetches nothing.
    files.download(_spec(), base_url=server.url, progress=False)
    assert server.state.ranges == [None]


def test_wrong_file_is_refused_in_one_line_and_removed(server, monkeypatch, capsys):
    _serve(server, b"not the blob" * 100)
    monkeypatch.setitem(data_cli.DOWNLOADS, "blob", _spec())
    assert data_cli.main(["download", "blob", "--base_url", server.url]) == data_cli.EXIT_FAILED
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: download blob: ")
    assert "SHA-256 mismatch" in err[-1] and "the file was removed" in err[-1]
    assert not any((server.cache / "blob").iterdir())


def test_truncated_file_is_refused_and_removed(server):
    _serve(server, CONTENT[:len(CONTENT) // 3])  # served whole, but a third of the file
    with pytest.raises(files.ChecksumError, match=r"blob\.bin: SHA-256 mismatch: expected "):
        files.download(_spec(), base_url=server.url, progress=False)
    assert not any((server.cache / "blob").iterdir())


def test_interrupted_download_resumes_with_a_range_request(server):
    _serve(server, CONTENT)
    server.state.cut_after = 100_000
    with pytest.raises(files.DownloadError, match="interrupted after 100000 of 256000 bytes"):
        files.download(_spec(), base_url=server.url, progress=False)
    folder = server.cache / "blob"
    # Only the partial file, under a name no loader reads.
    assert [(p.name, p.stat().st_size) for p in folder.iterdir()] == [("blob.bin.part", 100_000)]
    files.download(_spec(), base_url=server.url, progress=True)
    assert server.state.ranges == [None, "bytes=100000-"]
    assert (folder / "blob.bin").read_bytes() == CONTENT
    assert sorted(p.name for p in folder.iterdir()) == ["blob.bin"]


def test_server_without_range_support_starts_over(server):
    _serve(server, CONTENT)
    server.state.cut_after, server.state.honour_range = 50_000, False
    with pytest.raises(files.DownloadError, match="interrupted"):
        files.download(_spec(), base_url=server.url, progress=False)
    files.download(_spec(), base_url=server.url, progress=False)
    assert (server.cache / "blob" / "blob.bin").read_bytes() == CONTENT


def test_archive_is_unpacked_into_what_the_loader_reads(server, tmp_path):
    """rainfall's unpacking, fed a small wheel: the CSV is taken out, the wheel removed."""
    csv = b"date,tmax\r\n"
    wheel = io.BytesIO()
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("spotpy/examples/cmf_data/fulda_climate.csv", csv)
    _serve(server, wheel.getvalue(), "spotpy.whl")
    remote = rainfall.DOWNLOAD.remotes[0]
    spec = files.Download(name="rainfall", subdir="rainfall-runoff", title="t",
                          files=(rainfall.FILENAME,),
                          remotes=(files.Remote("https://canonical.invalid/spotpy.whl",
                                                hashlib.sha256(wheel.getvalue()).hexdigest(),
                                                unpack=remote.unpack),))
    folder = files.download(spec, tmp_path / "root", base_url=server.url, progress=False)
    assert folder == tmp_path / "root" / "rainfall-runoff"
    assert sorted(p.name for p in folder.iterdir()) == [rainfall.FILENAME]
    assert (folder / rainfall.FILENAME).read_bytes() == csv


def test_missing_dataset_error_names_the_download_command(server, tmp_path, monkeypatch):
    monkeypatch.delenv(files.ENV_VAR, raising=False)
    with pytest.raises(files.DataFilesNotFoundError) as info:
        data.load_source("shakespeare_char", window=8, stride=8, validation_fraction=0.1,
                         test_fraction=0.1, data_dir=tmp_path / "empty")
    message = str(info.value)
    assert "\n" not in message
    assert f"{server.cache / 'shakespeare'} [user cache: no such directory]" in message
    assert message.endswith("or run `python -m jaxdl.data download shakespeare`.")


def test_every_dataset_has_a_download():
    assert sorted(data_cli.DOWNLOADS) == ["fashion_mnist", "mnist", "rainfall", "sentiment",
                                         "shakespeare"]
    for spec in data_cli.DOWNLOADS.values():
        for remote in spec.remotes:
            assert remote.url.startswith(("https://", "http://")) and len(remote.sha256) == 64


def test_mnist_loader_accepts_the_canonical_download(tmp_path, monkeypatch):
    """The canonical .gz files are another gzip run of the pinned ones: both load."""
    import gzip

    import numpy as np

    from jaxdl.data import mnist
    remotes = []
    for split, n in (("train", 3), ("test", 2)):
        images_file, labels_file = mnist._FILES[split]
        images = np.zeros((n, 28, 28), np.uint8)
        labels = np.arange(n, dtype=np.uint8)
        for name, array in ((images_file, images), (labels_file, labels)):
            header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
            raw = gzip.compress(header + array.tobytes(), mtime=0)
            (tmp_path / name).write_bytes(raw)
            remotes.append(files.Remote(f"https://canonical.invalid/{name}",
                                        hashlib.sha256(raw).hexdigest()))
    with pytest.raises(files.ChecksumError, match="SHA-256 mismatch for MNIST"):
        data.load_source("mnist", data_dir=tmp_path)
    monkeypatch.setitem(mnist._DOWNLOADS, "mnist", files.Download(
        name="mnist", subdir="mnist", title="MNIST", remotes=tuple(remotes),
        files=tuple(mnist.MNIST.sha256)))
    ds = data.load_source("mnist", data_dir=tmp_path)
    assert len(ds) == 3 and len(ds.predefined_splits["test"][0]) == 2
