"""Tests for vaekit.data.errors."""

from vaekit.data import DatasetError


def test_dataset_error_is_a_value_error():
    assert issubclass(DatasetError, ValueError)
