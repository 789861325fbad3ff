"""MNIST provisioning: download into the user's cache, reuse, re-fetch of damaged files.

No machine here reaches MNIST's mirrors, so a local HTTP server on 127.0.0.1 stands in for
them: the tests point torchvision's mirror list and checksums at it (the product keeps the
real ones) and serve the four files this session reads.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
import torchvision

from snnbench.dataio import data

ROOT = Path(__file__).resolve().parent.parent
NAMES = [f"{stem}.gz" for stem in data.FILES.values()]


class Mirror:
    """Serves ``/m<i>/<file>`` for mirrors i = 0, 1 from ``files``; logs every request.

    ``faults[(i, name)]`` makes mirror i misbehave for that file: ``"cut"`` announces the
    full length and closes the connection half-way (a download killed mid-way), ``"short"``
    serves the first half as if it were the whole file.
    """

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.faults: dict[tuple[int, str], str] = {}
        self.requests: list[tuple[int, str]] = []
        mirror = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                parts = self.path.strip("/").split("/")
                if len(parts) != 2 or parts[0] not in ("m0", "m1") or parts[1] not in files:
                    self.send_error(404)
                    return
                index, name = int(parts[0][1:]), parts[1]
                mirror.requests.append((index, name))
                body = files[name]
                fault = mirror.faults.get((index, name))
                half = body[: len(body) // 2]
                self.send_response(200)
                self.send_header("Content-Length", str(len(half if fault == "short" else body)))
                self.end_headers()
                self.wfile.write(half if fault else body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def names(self) -> list[str]:
        return [name for _, name in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _gz_bytes(files: dict[str, Path]) -> dict[str, bytes]:
    """The session's four files as gzip'ed bytes, under torchvision's file names."""
    out = {}
    for key, path in files.items():
        raw = path.read_bytes()
        out[f"{data.FILES[key]}.gz"] = raw if path.suffix == ".gz" else gzip.compress(raw)
    return out


@pytest.fixture
def mirror(
    mnist_files: dict[str, Path], no_data: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Mirror]:
    """A local mirror pair serving MNIST, with torchvision's lists pointed at it."""
    files = _gz_bytes(mnist_files)
    server = Mirror(files)
    resources = [(n, hashlib.md5(files[n], usedforsecurity=False).hexdigest()) for n in NAMES]
    monkeypatch.setattr(
        torchvision.datasets.MNIST, "mirrors", [f"{server.url}/m0/", f"{server.url}/m1/"]
    )
    monkeypatch.setattr(torchvision.datasets.MNIST, "resources", resources)
    yield server
    server.close()


def _raw_dir(cache: Path) -> Path:
    return cache / "MNIST" / "raw"


def test_cache_dir_follows_xdg_and_defaults_to_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data.cache_dir() == tmp_path / "xdg" / "snnbench"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")  # the XDG spec: absolute only
    assert data.cache_dir() == tmp_path / "home" / ".cache" / "snnbench"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert data.cache_dir() == tmp_path / "home" / ".cache" / "snnbench"
    assert (
        data.download_dir("mnist", None)
        == tmp_path / "home" / ".cache" / "snnbench" / "MNIST" / "raw"
    )
    assert data.download_dir("mnist", "d") == Path("d") / "MNIST" / "raw"


def test_first_use_downloads_into_cache_then_runs_reuse_it(mirror, no_data, mnist_files, tmp_path):
    first = data.load("mnist", val_size=100, eval_subset=50)
    assert sorted(mirror.names()) == sorted(NAMES)  # each file fetched once, from mirror 0
    assert {i for i, _ in mirror.requests} == {0}
    raw = _raw_dir(no_data)
    assert first.source == str(raw)
    assert sorted(p.name for p in raw.iterdir()) == sorted(NAMES)  # no .part file left
    assert torch.equal(first.test.images, data.read_idx(mnist_files["test_images"])[:50])

    again = data.load("mnist", val_size=100, eval_subset=50)
    assert len(mirror.requests) == 4  # nothing fetched again
    assert torch.equal(again.train.images, first.train.images)

    # the command line, from another folder and without downloading, reads the same cache
    run_dir = tmp_path / "run"
    res = subprocess.run(
        [sys.executable, "-m", "snnbench", "model=ann", "debug=quick", "dataset.download=false",
         "trainer.progress=false", "spiking.enabled=false", f"hydra.run.dir={run_dir}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "completed" and record["data"]["source"] == str(raw)
    assert len(mirror.requests) == 4


@pytest.mark.parametrize("name", ["train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz"])
def test_truncated_cached_file_is_fetched_again(mirror, no_data, name):
    data.load("mnist", val_size=100)
    cached = _raw_dir(no_data) / name
    good = cached.read_bytes()
    cached.write_bytes(good[: len(good) // 3])  # what a killed copy would leave

    splits = data.load("mnist", val_size=100)
    assert mirror.names()[4:] == [name]  # only the damaged file, once
    assert cached.read_bytes() == good
    assert len(splits.test) == 10000 and len(splits.train) + len(splits.val) == 60000


def test_damaged_file_without_download_is_an_error_not_data(mirror, no_data):
    data.load("mnist", val_size=100)
    cached = _raw_dir(no_data) / "t10k-labels-idx1-ubyte.gz"
    cached.write_bytes(cached.read_bytes()[:100])
    with pytest.raises(data.DataError, match="t10k-labels-idx1-ubyte.gz.*truncated or corrupt"):
        data.load("mnist", val_size=100, download=False)
    assert mirror.names()[4:] == []


@pytest.mark.parametrize("fault", ["cut", "short"])
def test_interrupted_download_is_never_read_and_next_mirror_serves(mirror, no_data, fault):
    name = "t10k-images-idx3-ubyte.gz"
    mirror.faults[(0, name)] = fault
    splits = data.load("mnist", val_size=100)
    assert [r for r in mirror.requests if r[1] == name] == [(0, name), (1, name)]
    assert (_raw_dir(no_data) / name).read_bytes() == mirror.files[name]
    assert sorted(p.name for p in _raw_dir(no_data).iterdir()) == sorted(NAMES)
    assert len(splits.test) == 10000


def test_all_mirrors_failing_leaves_no_file_and_one_line(mirror, no_data):
    name = "t10k-images-idx3-ubyte.gz"
    mirror.faults[(0, name)] = mirror.faults[(1, name)] = "cut"
    with pytest.raises(data.DataError) as err:
        data.load("mnist", val_size=100)
    message = str(err.value)
    assert "\n" not in message
    assert str(_raw_dir(no_data)) in message and "SNNBENCH_DATA" in message
    assert "checksum" in message or "IncompleteRead" in message
    # the files fetched before stay (verified); the broken one is absent, no .part left;
    # the download stopped there
    assert sorted(p.name for p in _raw_dir(no_data).iterdir()) == sorted(NAMES[:2])
    mirror.faults.clear()
    data.load("mnist", val_size=100)  # the next try fetches only what is missing
    assert mirror.names()[4:] == NAMES[2:] and mirror.names().count(name) == 3


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


OFFLINE = """
import torchvision.datasets as d
d.MNIST.mirrors = ["http://127.0.0.1:{port}/"]  # nothing listens: as offline as it gets
"""


def test_cli_offline_without_data_one_line_exit_2(no_data, tmp_path):
    (tmp_path / "offline_mirrors.py").write_text(OFFLINE.format(port=_closed_port()))
    code = (
        "import offline_mirrors, runpy, sys; sys.argv = ['snnbench', *sys.argv[1:]]; "
        "runpy.run_module('snnbench', run_name='__main__')"
    )
    res = subprocess.run(
        [sys.executable, "-c", code, "model=ann", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": f"{tmp_path}:{ROOT}"},
    )  # fmt: skip
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("snnbench: error: mnist files"), res.stderr
    assert str(no_data / "MNIST" / "raw") in lines[0]  # the folder searched and where to put them
    assert "SNNBENCH_DATA" in lines[0] and "Connection refused" in lines[0]
    assert not (tmp_path / "run").exists()
    assert not no_data.exists()  # no empty cache folders left behind


def test_test_suite_offline_without_data_stops_with_one_line(no_data, tmp_path):
    (tmp_path / "offline_mirrors.py").write_text(OFFLINE.format(port=_closed_port()))
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "offline_mirrors", "-p", "no:cacheprovider",
         "tests/test_neurons.py", "-q"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": f"{tmp_path}:{ROOT}"},
    )  # fmt: skip
    out = res.stdout + res.stderr
    assert res.returncode == 4, out  # pytest's usage error: nothing was collected or run
    hits = [line for line in out.splitlines() if "snnbench tests need MNIST" in line]
    assert len(hits) == 1 and str(no_data / "MNIST" / "raw") in hits[0], out
    assert [line for line in out.splitlines() if line.strip()] == hits  # and nothing else
