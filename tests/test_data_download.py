"""Tests for vaekit.data.download: download_mnist, against servers on 127.0.0.1 started here (no network)."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import socket
import threading

import pytest

import vaekit.data.download as download
from vaekit.data import DatasetError, download_mnist, load_dataset

from helpers import IDX_NAMES, make_idx_folder


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def served(tmp_path, monkeypatch):
    """Small MNIST-named .gz files served over http://127.0.0.1, with MNIST_MD5 patched to match."""
    root = tmp_path / "www"
    mirror = root / "mnist"
    arrays = make_idx_folder(mirror, gz=True, seed=3)
    table = {
        f"{base}.gz": hashlib.md5(gzip.decompress((mirror / f"{base}.gz").read_bytes())).hexdigest()
        for base in IDX_NAMES.values()
    }
    monkeypatch.setattr(download, "MNIST_MD5", table)
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield {
            "url": f"http://127.0.0.1:{server.server_address[1]}/mnist/",
            "mirror": mirror,
            "arrays": arrays,
        }
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _closed_port_url() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/mnist/"


def test_download_mnist_fetches_verifies_and_skips(served, tmp_path):
    dest = tmp_path / "downloaded"
    assert download_mnist(dest, served["url"], timeout=5) == dest
    assert sorted(p.name for p in dest.iterdir()) == sorted(download.MNIST_MD5)
    for name in download.MNIST_MD5:
        assert (dest / name).read_bytes() == (served["mirror"] / name).read_bytes()
    ds = load_dataset(dest, cache_dir=tmp_path / "cache")
    assert ds.train_labels.tolist() == served["arrays"]["train_labels"].tolist()

    # Valid files are not fetched again: the (unreachable) server is never asked.
    stamps = {p.name: p.stat().st_mtime_ns for p in dest.iterdir()}
    assert download_mnist(dest, _closed_port_url(), timeout=5) == dest
    assert {p.name: p.stat().st_mtime_ns for p in dest.iterdir()} == stamps


def test_download_mnist_replaces_a_corrupt_existing_file(served, tmp_path):
    dest = tmp_path / "downloaded"
    dest.mkdir()
    (dest / "t10k-labels-idx1-ubyte.gz").write_bytes(b"junk")
    download_mnist(str(dest), served["url"].rstrip("/"), timeout=5)  # no trailing slash
    got = (dest / "t10k-labels-idx1-ubyte.gz").read_bytes()
    assert got == (served["mirror"] / "t10k-labels-idx1-ubyte.gz").read_bytes()


def test_download_mnist_wrong_content_leaves_no_file(served, tmp_path):
    bad = served["mirror"] / "t10k-images-idx3-ubyte.gz"
    bad.write_bytes(gzip.compress(b"not the expected content"))
    dest = tmp_path / "downloaded"
    with pytest.raises(DatasetError) as err:
        download_mnist(dest, served["url"], timeout=5)
    msg = str(err.value)
    assert served["url"] + "t10k-images-idx3-ubyte.gz" in msg
    assert download.MNIST_MD5["t10k-images-idx3-ubyte.gz"] in msg
    assert hashlib.md5(b"not the expected content").hexdigest() in msg
    # Files before it in order were kept; the bad one and any temp file were not.
    assert sorted(p.name for p in dest.iterdir()) == [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
    ]


def test_download_mnist_http_404_names_url(served, tmp_path):
    (served["mirror"] / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetError, match="404") as err:
        download_mnist(tmp_path / "d", served["url"], timeout=5)
    assert served["url"] + "train-labels-idx1-ubyte.gz" in str(err.value)
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["train-images-idx3-ubyte.gz"]


def test_download_mnist_unreachable_url(tmp_path):
    url = _closed_port_url()
    dest = tmp_path / "d"
    with pytest.raises(DatasetError) as err:
        download_mnist(dest, url, timeout=5)
    assert url + "train-images-idx3-ubyte.gz" in str(err.value)
    assert list(dest.iterdir()) == []


def test_download_mnist_from_file_url(served, tmp_path):
    dest = download_mnist(tmp_path / "d", served["mirror"].as_uri() + "/", timeout=5)
    assert sorted(p.name for p in dest.iterdir()) == sorted(download.MNIST_MD5)
