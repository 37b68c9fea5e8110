"""The one exception of the data package."""

from __future__ import annotations

__all__ = ["DatasetError"]


class DatasetError(ValueError):
    """A dataset file or argument is missing, malformed or fails its checksum.

    Its message names the file or argument, what was seen and what was expected.
    """
