"""Tests for vaekit.data.info: DatasetInfo, its config.json form, and runs written by earlier versions."""

from __future__ import annotations

import json

import pytest

from vaekit.data import DataConfig, DatasetInfo

# what vaekit wrote into config.json's data.info before DatasetInfo (an image folder, and MNIST)
OLD_IMAGE_FOLDER = {
    "source": "image-folder", "path": "/photos", "split": "seeded", "test_fraction": 0.1, "split_seed": 0,
    "labelled": True, "classes": ["cat", "dog"], "class_labels": {"cat": 0, "dog": 1}, "image_size": [64, 64],
    "channels": 3, "image_size_rule": "given", "channels_rule": "from the data", "skipped": 1,
    "skipped_files": ["a.png: not a readable image (truncated)"], "cache": "/c/imports/photos-0123456789abcdef",
    "cache_status": "reused", "cache_bytes": 12345, "import_seconds": 0.0, "train": 90, "test": 10,
}
OLD_MNIST = {
    "source": "mnist", "path": "/site-packages/vaekit/assets/mnist", "split": "given", "test_fraction": None,
    "split_seed": None, "labelled": True, "classes": None, "skipped": 0, "skipped_files": [], "cache": "/c",
    "image_size": [28, 28], "channels": 1, "image_size_rule": "from the data", "channels_rule": "from the data",
    "train": 60000, "test": 10000,
}


@pytest.mark.parametrize("old", [OLD_IMAGE_FOLDER, OLD_MNIST], ids=["image-folder", "mnist"])
def test_an_old_dict_reads_back_with_every_value_and_writes_the_same_keys(old):
    info = DatasetInfo.from_dict(json.loads(json.dumps(old)))
    for key, value in old.items():
        assert getattr(info, key) == value, key
        assert info[key] == value and info.get(key) == value  # read like the dict it replaces
    written = info.to_dict()
    assert {k: written[k] for k in old} == old  # every old key, with its value
    assert set(written) - set(old) <= {"class_labels", "cache_status", "cache_bytes", "import_seconds"}
    assert all(written[k] is None for k in set(written) - set(old))  # keys an old source did not have: null


def test_missing_keys_keep_defaults_and_unknown_keys_survive_a_round_trip():
    info = DatasetInfo.from_dict({"source": "npz", "future_key": {"a": 1}})
    assert info.source == "npz" and info.split == "given" and info.labelled is True and info.skipped_files == []
    assert info.extra == {"future_key": {"a": 1}} and info["future_key"] == {"a": 1} and "future_key" in info
    assert DatasetInfo.from_dict(info.to_dict()) == info
    assert DatasetInfo.from_dict(None) == DatasetInfo() == DatasetInfo.from_dict({})
    assert DatasetInfo.from_dict({"skipped_files": None}).skipped_files == []
    with pytest.raises(KeyError):
        info["no such key"]
    with pytest.raises(TypeError, match="dataset info must be a dict, got list"):
        DatasetInfo.from_dict([1, 2])


def test_to_dict_is_json_and_round_trips():
    info = DatasetInfo(source="image-folder", path="/p", classes=["a"], class_labels={"a": 0}, skipped_files=["x: y"])
    info.set_seeded_split(DataConfig(test_fraction=0.25), seed=0).set_shape(DataConfig(image_size=8), (3, 8, 8))
    text = json.dumps(info.to_dict())
    back = DatasetInfo.from_dict(json.loads(text))
    assert back == info and back is not info
    assert (back.split, back.test_fraction, back.split_seed) == ("seeded", 0.25, 0)
    assert (back.image_size, back.channels, back.image_size_rule, back.channels_rule) == ([8, 8], 3, "given", "from the data")
    assert dict(back) == back.to_dict() and len(back) == len(back.to_dict())


def test_from_dict_copies_a_dataset_info():
    info = DatasetInfo(source="npy", skipped_files=["a"])
    copy = DatasetInfo.from_dict(info)
    copy.skipped_files.append("b")
    assert copy.source == "npy" and info.skipped_files == ["a"]
