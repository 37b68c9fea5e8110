"""Fetching MNIST: :func:`download_mnist` downloads the four files, verified against :data:`MNIST_MD5`."""

from __future__ import annotations

import gzip
import hashlib
import os
import pathlib
import urllib.error
import urllib.parse
import urllib.request
import zlib
from http.client import HTTPException

from ..checkpoint import atomic_write_bytes
from .errors import DatasetError
from .idx import GZIP_MAGIC, IDX_FILES, MNIST_MD5, read_bytes

__all__ = ["download_mnist"]


def _file_md5(path: pathlib.Path) -> str | None:
    """MD5 of a file's decompressed content, or None if it cannot be read."""
    try:
        return hashlib.md5(read_bytes(path)).hexdigest()
    except DatasetError:
        return None


def download_mnist(
    dest: str | os.PathLike,
    base_url: str = "https://ossci-datasets.s3.amazonaws.com/mnist/",
    *,
    timeout: float = 60.0,
) -> pathlib.Path:
    """Download the four MNIST ``.gz`` files into ``dest`` and verify them.

    Each file is fetched from ``base_url + name`` (any scheme urllib handles,
    ``file://`` included) into a temporary file in ``dest``, its decompressed
    MD5 is checked against :data:`MNIST_MD5`, and only then is it renamed to
    its final name.  Files already present with the right checksum are not
    fetched again; present but wrong ones are replaced.  Returns ``dest``,
    which :func:`load_dataset` accepts as a folder.

    Raises :class:`DatasetError` naming the URL for network errors, and the
    URL with expected and actual MD5 for a mismatch; no partial file is left.
    """
    dest = pathlib.Path(dest)
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetError(f"download_mnist: cannot create destination {dest}: {exc}") from exc
    if not base_url.endswith("/"):
        base_url += "/"

    for base in IDX_FILES.values():
        name = f"{base}.gz"
        expected = MNIST_MD5[name]
        target = dest / name
        if target.is_file() and _file_md5(target) == expected:
            continue
        url = urllib.parse.urljoin(base_url, name)
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                payload = response.read()  # ~10 MB at most: verify in memory, then write
        except (urllib.error.URLError, HTTPException, OSError, ValueError) as exc:
            # URLError/HTTPError: unreachable, refused, 404...; OSError: timeouts and resets
            # mid-transfer; HTTPException: e.g. IncompleteRead; ValueError: a malformed URL.
            raise DatasetError(f"could not download {url}: {exc}") from exc
        try:
            actual = hashlib.md5(gzip.decompress(payload) if payload[:2] == GZIP_MAGIC else payload).hexdigest()
        except (OSError, EOFError, zlib.error):
            actual = "unreadable or corrupt gzip data"
        if actual != expected:
            raise DatasetError(
                f"{url}: MD5 checksum mismatch of the decompressed content: "
                f"expected {expected}, got {actual}; nothing was saved to {target}"
            )
        atomic_write_bytes(target, payload)
    return dest
