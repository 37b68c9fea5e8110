"""``DatasetInfo``: where a dataset came from, how it was split and converted, and its cache.

One dataclass instead of a dict built by hand per source. It is written into every run's
config.json (``data.info``, by :meth:`DatasetInfo.to_dict`) and read back from runs of any
version (:meth:`DatasetInfo.from_dict` accepts missing and unknown keys). For code written
against the dict it replaces, it also reads like one: ``info["classes"]``, ``info.get("cache")``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Iterator

__all__ = ["DatasetInfo"]

FROM_DATA, GIVEN = "from the data", "given"


@dataclass
class DatasetInfo(Mapping):
    """What a dataset is: its source, split, labels, image shape, skipped files and cache entry.

    ``extra`` keeps keys of a dict this version does not know (a newer run's config.json), so that
    ``from_dict(d).to_dict()`` loses nothing.
    """

    source: str | None = None  # the format's name: "mnist", "idx", "image-folder", "npy", ...
    path: str | None = None  # the folder or file read
    split: str = "given"  # "given", "given (train/ and test/ folders)", "given (keys)" or "seeded"
    test_fraction: float | None = None  # seeded splits only
    split_seed: int | None = None  # seeded splits only
    labelled: bool = True  # False: every label is -1
    classes: list[str] | None = None  # class folder names, sorted as labelled
    class_labels: dict[str, int] | None = None  # class folder name -> label
    skipped: int = 0  # bad image files skipped (--skip-bad-images)
    skipped_files: list[str] = field(default_factory=list)  # "path: why" of each
    image_size: list[int] | None = None  # [H, W]
    channels: int | None = None  # C
    image_size_rule: str | None = None  # "given" (--image-size) or "from the data"
    channels_rule: str | None = None  # "given" (--channels) or "from the data"
    train: int | None = None  # images in the train split
    test: int | None = None  # images in the test split
    cache: str | None = None  # the cache entry's folder; None: read directly
    cache_status: str | None = None  # "reused", "imported" or "re-imported (...)"
    cache_bytes: int | None = None  # size of the cache entry
    import_seconds: float | None = None  # time the import took (0 when reused)
    extra: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ building

    def set_shape(self, config: Any, chw: tuple[int, int, int] | list[int]) -> "DatasetInfo":
        """Record the images' [C, H, W] and whether ``config`` (a DataConfig) gave size and channels."""
        self.channels, self.image_size = int(chw[0]), [int(chw[1]), int(chw[2])]
        self.image_size_rule = GIVEN if config.image_size is not None else FROM_DATA
        self.channels_rule = GIVEN if config.channels is not None else FROM_DATA
        return self

    def set_seeded_split(self, config: Any, seed: int) -> "DatasetInfo":
        """Record a split drawn at random with ``seed``, ``config.test_fraction`` of the images held out."""
        self.split, self.test_fraction, self.split_seed = "seeded", config.test_fraction, seed
        return self

    # ------------------------------------------------------------------ config.json

    def to_dict(self) -> dict[str, Any]:
        """A JSON-writable dict of every field (plus ``extra``'s keys), as written into config.json."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        out.update({k: v for k, v in self.extra.items() if k not in out})
        return json.loads(json.dumps(out, default=str))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "DatasetInfo":
        """The info of a dict written by any version: missing keys keep their defaults, unknown keys go to ``extra``."""
        if isinstance(data, DatasetInfo):
            return dataclasses.replace(data, skipped_files=list(data.skipped_files), extra=dict(data.extra))
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise TypeError(f"dataset info must be a dict, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in data.items() if k in names}
        extra = {**dict(data.get("extra") or {}), **{k: v for k, v in data.items() if k not in names and k != "extra"}}
        if known.get("skipped_files") is None:
            known.pop("skipped_files", None)
        return cls(**known, extra=extra)

    # ------------------------------------------------------------------ read like the dict it replaces

    def __getitem__(self, key: str) -> Any:
        if key in self.extra and key not in self._names():
            return self.extra[key]
        if key not in self._names():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        yield from self._names()
        yield from (k for k in self.extra if k not in self._names())

    def __len__(self) -> int:
        return sum(1 for _ in self)

    @classmethod
    def _names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls) if f.name != "extra")
