"""Tests for vaekit.data.formats: the registry of dataset formats, detect_format, load_dataset, plugins.

The contract test runs over every registered format, with the tiny sample that the format's own
test file (``tests/test_data_formats_<module>.py``) defines in ``SAMPLES``: adding a format is one
file in ``src/vaekit/data/formats/`` and one test file here.
"""

from __future__ import annotations

import importlib
import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import vaekit.registry as registry
from vaekit.data import FORMATS, DatasetError, DatasetInfo, ImageData, detect_format, load_dataset

BUILT_IN = sorted(FORMATS.names())


def samples(folder: Path, monkeypatch) -> dict:
    """A tiny source of every built-in format, made by the ``SAMPLES`` of the format's own test file."""
    out = {}
    for name in BUILT_IN:
        module = FORMATS[name].__module__.rsplit(".", 1)[1]
        tests = importlib.import_module(f"test_data_formats_{module}")
        assert name in getattr(tests, "SAMPLES", {}), f"tests/test_data_formats_{module}.py defines no SAMPLES[{name!r}]"
        out[name] = tests.SAMPLES[name](folder / name, monkeypatch)
    return out


def check_contract(name: str, sources: dict) -> ImageData:
    """What every format promises: it reads its own sample, leaves those of the formats tried after it to them,
    and loads uint8 [N, C, H, W] images with [N] int64 labels and a DatasetInfo that survives config.json."""
    part = FORMATS[name]
    assert part.help() and part.accepts, name
    assert part.detect(sources[name]) and detect_format(sources[name]) == name
    for other, source in sources.items():
        tried_after = FORMATS[other].priority >= part.priority  # else ``other`` comes first and may overlap
        if other != name and tried_after:
            assert not part.detect(source), f"{name} detects the sample of {other}"
    data = load_dataset(sources[name], progress=False)
    assert isinstance(data, ImageData)
    for split in ("train", "test"):
        u8, labels = getattr(data, f"{split}_uint8"), getattr(data, f"{split}_labels")
        assert u8.dtype == torch.uint8 and u8.ndim == 4 and len(u8) > 0 and u8.shape[1] in (1, 3), (split, u8.shape)
        assert labels.dtype == torch.int64 and labels.shape == (len(u8),)
    c, h, w = data.train_uint8.shape[1:]
    assert data.test_uint8.shape[1:] == (c, h, w)
    info = data.info
    assert isinstance(info, DatasetInfo) and info.source == name
    assert (info.train, info.test, info.channels, info.image_size) == (len(data.train_uint8), len(data.test_uint8), c, [h, w])
    assert DatasetInfo.from_dict(json.loads(json.dumps(info.to_dict()))) == info
    return data


@pytest.mark.parametrize("name", BUILT_IN)
def test_every_format_keeps_the_contract(name, tmp_path, monkeypatch):
    check_contract(name, samples(tmp_path, monkeypatch))


def test_the_built_in_formats_and_their_order():
    assert set(FORMATS) == {"mnist", "fashion-mnist", "npy", "npz", "idx", "image-folder"}
    by_priority = sorted(FORMATS.names(), key=lambda n: FORMATS[n].priority)
    assert by_priority.index("image-folder") == len(by_priority) - 1  # any folder: tried last
    assert by_priority.index("idx") < by_priority.index("image-folder")
    assert max(by_priority.index("mnist"), by_priority.index("fashion-mnist")) < by_priority.index("idx")


def test_detect_format_of_paths(tmp_path):
    (tmp_path / "imgs").mkdir()
    np.save(tmp_path / "a.npy", np.zeros((2, 4, 4), np.uint8))
    np.savez(tmp_path / "a.npz", images=np.zeros((2, 4, 4), np.uint8))
    (tmp_path / "idx").mkdir()
    (tmp_path / "idx" / "train-images-idx3-ubyte").write_bytes(b"")  # some IDX files only: "idx" names the missing ones
    (tmp_path / "b.NPY").write_bytes(np.lib.format.magic(1, 0))
    (tmp_path / "a.txt").write_text("?")
    assert detect_format(tmp_path / "imgs") == "image-folder" and detect_format(str(tmp_path / "imgs")) == "image-folder"
    assert detect_format(tmp_path / "a.npy") == "npy" and detect_format(tmp_path / "a.npz") == "npz"
    assert detect_format(tmp_path / "b.NPY") == "npy"
    assert detect_format(tmp_path / "idx") == "idx"
    assert detect_format("mnist") == "mnist" and detect_format("fashion-mnist") == "fashion-mnist"
    with pytest.raises(DatasetError, match="unknown kind") as err:
        detect_format(tmp_path / "a.txt")
    assert str(tmp_path / "a.txt") in str(err.value)
    assert all(FORMATS[n].accepts in str(err.value) for n in FORMATS)  # what is accepted, from the registry
    with pytest.raises(DatasetError, match="not an existing folder or file"):
        detect_format(tmp_path / "missing")


def test_unknown_name_lists_choices(tmp_path):
    with pytest.raises(DatasetError) as err:
        load_dataset("cifar-10", cache_dir=tmp_path / "cache")
    msg = str(err.value)
    assert "cifar-10" in msg
    assert "'mnist'" in msg and "'fashion-mnist'" in msg and "folder" in msg and ".npz" in msg


# ----------------------------------------------------------------------------- a format from one file, at run time

CSV_FORMAT = '''
    """A toy dataset format: a .csv of grey pixels, one image per row, its label first."""

    import math
    import pathlib

    import numpy as np
    import torch

    from vaekit.data import DatasetInfo, ImageData
    from vaekit.data.formats import FORMATS, DatasetFormat


    @FORMATS.register
    class CsvPixels(DatasetFormat):
        """A .csv of grey pixels, one square image per row (label first); the first quarter is the test split."""

        name = "csv-pixels"
        accepts = "a .csv file of pixels"

        @classmethod
        def detect(cls, source):
            path = pathlib.Path(source)
            return path.suffix == ".csv" and path.is_file()

        def load(self, source, *, config, cache_dir=None, progress=None):
            rows = np.loadtxt(source, delimiter=",", dtype=np.int64, ndmin=2)  # [N, 1 + S*S]
            side = math.isqrt(rows.shape[1] - 1)
            images = torch.from_numpy(rows[:, 1:].astype(np.uint8)).reshape(len(rows), 1, side, side)  # [N, 1, S, S]
            labels = torch.from_numpy(rows[:, 0])  # [N]
            n_test = len(rows) // 4
            info = DatasetInfo(source=self.name, path=str(source)).set_shape(config, (1, side, side))
            info.train, info.test = len(rows) - n_test, n_test
            return ImageData(
                str(source), train_uint8=images[n_test:], train_labels=labels[n_test:],
                test_uint8=images[:n_test], test_labels=labels[:n_test], info=info,
            )
'''


@pytest.fixture
def restored_registries(monkeypatch):
    """Whatever a test registers or loads as a plugin is forgotten afterwards."""
    monkeypatch.setattr(FORMATS, "_parts", dict(FORMATS._parts))
    monkeypatch.setattr(registry, "_PLUGINS", dict(registry._PLUGINS))


def test_a_format_added_from_one_file_at_run_time(tmp_path, monkeypatch, restored_registries):
    plugin = tmp_path / "csv_pixels.py"
    plugin.write_text(textwrap.dedent(CSV_FORMAT))
    pixels = np.random.default_rng(0).integers(0, 256, (8, 9))  # 8 images of 3x3
    labels = np.arange(8) % 3
    csv = tmp_path / "digits.csv"
    np.savetxt(csv, np.column_stack([labels, pixels]), fmt="%d", delimiter=",")
    with pytest.raises(DatasetError, match="unknown kind"):
        load_dataset(csv)

    registry.load_plugin(plugin)
    assert "csv-pixels" in FORMATS and detect_format(csv) == "csv-pixels"
    data = load_dataset(csv)
    assert torch.equal(data.train_uint8, torch.from_numpy(pixels[2:].astype(np.uint8)).reshape(6, 1, 3, 3))
    assert data.test_labels.tolist() == labels[:2].tolist() and data.info.source == "csv-pixels"
    sources = {**samples(tmp_path / "samples", monkeypatch), "csv-pixels": csv}
    check_contract("csv-pixels", sources)  # the same contract as the built-in formats
    with pytest.raises(DatasetError) as err:
        detect_format(tmp_path / "missing")
    assert "a .csv file of pixels" in str(err.value)  # the accepted formats come from the registry
