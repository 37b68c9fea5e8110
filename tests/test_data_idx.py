"""Tests for vaekit.data.idx: reading IDX files (raw or gzip'd) and rejecting malformed ones."""

from __future__ import annotations

import gzip
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vaekit.data import DatasetError, read_idx

from helpers import idx_bytes, write_idx

GOOD_IMAGES = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_roundtrip(tmp_path, gz):
    path = write_idx(tmp_path / "x.idx", GOOD_IMAGES, gz=gz)
    out = read_idx(path)
    assert out.dtype == np.uint8
    assert out.shape == (2, 3, 4)
    assert np.array_equal(out, GOOD_IMAGES)
    out[0, 0, 0] = 9  # writable
    assert read_idx(str(path)).shape == (2, 3, 4)  # str paths work too


def test_read_idx_detects_gzip_by_content_not_name(tmp_path):
    payload = idx_bytes(GOOD_IMAGES)
    raw_named_gz = tmp_path / "raw.gz"
    raw_named_gz.write_bytes(payload)
    gz_named_raw = tmp_path / "compressed-idx3-ubyte"
    gz_named_raw.write_bytes(gzip.compress(payload))
    assert np.array_equal(read_idx(raw_named_gz), GOOD_IMAGES)
    assert np.array_equal(read_idx(gz_named_raw), GOOD_IMAGES)


@settings(max_examples=40, deadline=None)
@given(
    shape=st.lists(st.integers(0, 5), min_size=1, max_size=4),
    gz=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_read_idx_roundtrip_property(shape, gz, seed):
    array = np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_idx(Path(tmp) / "a", array, gz=gz)
        out = read_idx(path)
    assert out.shape == tuple(shape)
    assert np.array_equal(out, array)


def _bad_magic():
    return b"\x08\x03" + idx_bytes(GOOD_IMAGES)[2:]


def _corrupt_gzip():
    blob = bytearray(gzip.compress(idx_bytes(GOOD_IMAGES)))
    blob[-8] ^= 0xFF  # break the CRC32 in the trailer
    return bytes(blob)


MALFORMED = {
    # name: (file content, substrings the message must contain)
    "bad-magic": (_bad_magic(), ["bad IDX magic number 0x08030803", "two zero bytes"]),
    "float-dtype": (
        idx_bytes(GOOD_IMAGES, type_code=0x0D),
        ["data type code 0x0d", "float32", "expected 0x08"],
    ),
    "unknown-dtype": (idx_bytes(GOOD_IMAGES, type_code=0x42), ["data type code 0x42", "expected 0x08"]),
    "zero-ndim": (b"\x00\x00\x08\x00", ["0 dimensions"]),
    "too-short": (b"\x00\x00", ["too short", "2 bytes"]),
    "truncated-header": (
        b"\x00\x00\x08\x03" + struct.pack(">I", 2),
        ["truncated IDX header", "16 header bytes", "has 8"],
    ),
    "truncated-payload": (
        idx_bytes(GOOD_IMAGES)[:-5],
        ["truncated IDX payload", "(2, 3, 4)", "needs 24 bytes", "only 19"],
    ),
    "trailing-bytes": (
        idx_bytes(GOOD_IMAGES) + b"\x01\x02\x03",
        ["3 unexpected trailing bytes", "needs 24 bytes", "found 27"],
    ),
    "corrupt-gzip": (_corrupt_gzip(), ["corrupt gzip"]),
    "truncated-gzip": (gzip.compress(idx_bytes(GOOD_IMAGES))[:-12], ["corrupt gzip"]),
    "gzip-magic-garbage": (b"\x1f\x8bnot really gzip", ["corrupt gzip"]),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_read_idx_rejects_malformed_files(tmp_path, case):
    content, fragments = MALFORMED[case]
    path = tmp_path / f"{case}-idx3-ubyte"
    path.write_bytes(content)
    with pytest.raises(DatasetError) as err:
        read_idx(path)
    msg = str(err.value)
    assert str(path) in msg
    for fragment in fragments:
        assert fragment in msg, (fragment, msg)


def test_read_idx_missing_file(tmp_path):
    path = tmp_path / "absent-idx1-ubyte"
    with pytest.raises(DatasetError, match="file not found") as err:
        read_idx(path)
    assert str(path) in str(err.value)
