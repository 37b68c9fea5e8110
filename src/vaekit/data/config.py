"""``DataConfig``: how a dataset is read (image size, channels, test fraction, bad files).

Saved with every run (``data_config`` in config.json); the flags of ``vaekit train`` and
``vaekit data`` are derived from its fields. ``vaekit.config`` re-exports it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..registry import option, validate

__all__ = ["DataConfig"]


@dataclass
class DataConfig:
    """How a dataset is read: image folders and array files (see vaekit.data.formats).

    The named datasets and IDX folders have their own split; ``image_size`` and ``channels``
    apply to every source, ``test_fraction`` only where no split is given.
    """

    image_size: int | None = option(
        None, "resize the shorter side to this many pixels (antialiased), then crop the centre square; "
        "None: the images' own size (they must all agree)", min=1,
    )
    channels: int | None = option(None, "1 (grey) or 3 (RGB); None: 1 if every image is grey, else 3", choices=(1, 3))
    test_fraction: float = option(
        0.1, "share of the images held out as the seeded test split where the data has no train/test split (0 < F < 1)",
        gt=0.0, lt=1.0,
    )
    skip_bad_images: bool = option(False, "skip unreadable or corrupt image files (and count them) instead of stopping")

    def __post_init__(self) -> None:
        if self.channels is not None and (isinstance(self.channels, bool) or self.channels not in (1, 3)):
            raise ValueError(f"channels must be 1 or 3 (or None: from the data), got {self.channels!r}")
        validate(self)
