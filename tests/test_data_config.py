"""Tests for vaekit.data.config: DataConfig's bounds, and its re-export from vaekit.config."""

from __future__ import annotations

import pytest

import vaekit.config
from vaekit.data import DataConfig


def test_data_config_bounds():
    assert DataConfig() == DataConfig(image_size=None, channels=None, test_fraction=0.1, skip_bad_images=False)
    for bad, needle in [
        ({"channels": 2}, "channels"),
        ({"test_fraction": 0.0}, "test_fraction"),
        ({"test_fraction": 1.0}, "test_fraction"),
        ({"image_size": 0}, "image_size"),
        ({"skip_bad_images": "yes"}, "skip_bad_images"),
    ]:
        with pytest.raises(ValueError, match=needle):
            DataConfig(**bad)


def test_data_config_is_re_exported_by_vaekit_config():
    assert vaekit.config.DataConfig is DataConfig
    assert vaekit.config.config_from_dict(DataConfig, {"image_size": 32, "unknown": 1}) == DataConfig(image_size=32)
