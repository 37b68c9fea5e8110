import os
import tempfile

import pytest


def pytest_configure(config):
    # never touch the user's cache: the verified-MNIST cache of this test session lives in a temp folder
    if "VAEKIT_CACHE" not in os.environ:
        os.environ["VAEKIT_CACHE"] = tempfile.mkdtemp(prefix="vaekit-test-cache-")


@pytest.fixture(scope="session")
def mnist():
    from vaekit import load_dataset

    return load_dataset("mnist")
