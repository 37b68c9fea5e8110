"""Sample quality of a trained run (``vaekit eval --generate N``): N images from a sampler, measured against
the test set in the features of the dataset's extractor, and recorded in ``RUN_DIR/sample_quality.json``.

The images are drawn as ``vaekit sample --out FILE.npy`` draws them (``vaekit.generated.draw_uint8``: on
the CPU, one seeded draw of all N codes, decoded in batches, quantized to uint8), so the same run,
sampler, N and seed give the same bytes, and the figures can be recomputed from the file. The real
images are the dataset's test split as stored (8-bit, never binarized). The features are
``vaekit.features.load_extractor``'s: a small classifier trained on the dataset's labels (FD-classifier),
or for data without labels a fixed random network (FD-random, named so in every printout).

``sample_quality.json``::

    {"format": "vaekit.sample_quality/1",
     "samplers": {"prior": ENTRY, "gmm": ENTRY, ...}}   # one entry per sampler, replaced when re-measured

where ENTRY holds ``sampler``, ``options``, ``n`` (images generated), ``seed``, ``real`` (what they were
measured against), ``images`` (how they were made), ``fd_name``, ``extractor_kind``,
``extractor_accuracy``, every figure of ``vaekit.sample_quality.sample_quality`` (``fd``, ``kid``,
``kid_se``, ``precision``, ``recall``, ``density``, ``coverage``, ``mean_entropy``, ``marginal_entropy``,
``class_shares``, ``n_real``, ``n_fake``, ``extractor``, ...), ``fit`` (what the sampler reported about
its fit, or None), ``seconds``, ``created`` and ``vaekit_version``.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from torch import Tensor

from .. import __version__
from ..checkpoint import CheckpointError, read_json
from ..data import ImageData
from ..features import FeatureExtractor, load_extractor
from ..generated import QUANTIZATION, draw_uint8
from ..runfolder import RunFolder
from ..sample_quality import PRDC_K, describe, sample_quality
from ..samplers import make_sampler

__all__ = ["QualityMeter", "quality_run", "check_generate", "record", "describe_entry", "read_quality", "QUALITY_FILE", "FORMAT"]

QUALITY_FILE = "sample_quality.json"
FORMAT = "vaekit.sample_quality/1"


def check_generate(n: Any, what: str = "--generate") -> int:
    """``n`` if it is a number of images the figures can be measured on (PRDC needs k + 1 of them), else a ValueError."""
    if isinstance(n, bool) or not isinstance(n, int) or n < PRDC_K + 1:
        raise ValueError(f"{what} must be an int >= {PRDC_K + 1} (precision and recall need k+1 = {PRDC_K + 1} images), got {n!r}")
    return n


class QualityMeter:
    """A run's model on the CPU, its dataset, the dataset's feature extractor and the test set's features
    [M, 128], computed once; :meth:`measure` measures any number of samplers against them."""

    def __init__(
        self, run: RunFolder | str | Path, *, data: ImageData | None = None, extractor: FeatureExtractor | None = None,
        real: Tensor | None = None, progress: bool = False,
    ):
        """``data``, ``extractor``, ``real`` (the test set's features [M, 128] in ``extractor``): pass what is at
        hand from another meter of the same dataset; the rest is loaded or computed here."""
        self.run = run if isinstance(run, RunFolder) else RunFolder(run).check_exists()
        self.model = self.run.load_model("cpu")  # where vaekit sample draws: the same codes, the same images
        if getattr(self.model, "condition", None) is not None:
            raise ValueError(f"sample quality measures a model's unconditional samples; the run in {self.run.path} is conditional "
                             f"({self.model.condition.describe()}): draw a class with vaekit sample --label NAME --out FILE.npy instead")
        self.data = self.run.load_data() if data is None else data
        self.extractor = load_extractor(self.data, progress=progress) if extractor is None else extractor
        test = self.data.test_uint8  # [M, C, H, W] uint8, as stored
        if len(test) < PRDC_K + 1:
            raise ValueError(f"the test split of {self.data.name} has {len(test)} images; sample quality needs at least {PRDC_K + 1}")
        self.real = self.extractor.features(test) if real is None else real  # [M, 128]

    def sampler(self, sampler: str = "prior", options: dict[str, Any] | None = None) -> Any:
        """The sampler, checked against the run's model: ValueError (one line) if it cannot draw for it."""
        part = make_sampler(sampler, options)
        if (why := part.refusal(self.model)) is not None:
            raise ValueError(why)
        return part

    @property
    def fd_name(self) -> str:
        return "FD-classifier" if self.extractor.kind == "classifier" else "FD-random"

    def figures(self, images: Tensor) -> dict[str, Any]:
        """``sample_quality`` of any images [n, C, H, W] (uint8, or floats in [0, 1]) against the test set."""
        feats, probs = self.extractor.features_and_probs(images)  # [n, 128], [n, classes] or None
        return sample_quality(self.real, feats, probs, extractor=self.extractor.name)

    def measure(self, sampler: str = "prior", options: dict[str, Any] | None = None, n: int = 10_000, seed: int = 0) -> dict[str, Any]:
        """Prepare ``sampler`` (with ``options``) on the run, draw ``n`` images (``seed``) and measure them: an ENTRY."""
        check_generate(n, "n")
        part = self.sampler(sampler, options)
        t0 = time.perf_counter()
        fit = part.prepare(self.run, self.model, self.data)
        figures = self.figures(draw_uint8(self.model, part, n, seed))
        return {
            "sampler": part.name,
            "options": dataclasses.asdict(part.options),
            "n": n,
            "seed": seed,
            "real": f"the test split of {self.data.name} ({len(self.real):,} images, 8-bit as stored)",
            "images": QUANTIZATION,
            "fd_name": self.fd_name,
            "extractor_kind": self.extractor.kind,
            "extractor_accuracy": self.extractor.accuracy,
            **figures,
            "fit": fit,
            "seconds": time.perf_counter() - t0,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "vaekit_version": __version__,
        }


def read_quality(run: RunFolder) -> dict[str, Any]:
    """The run's sample_quality.json, or an empty one when it is missing, malformed or of another format."""
    try:
        saved = read_json(run / QUALITY_FILE)
    except CheckpointError:
        saved = {}
    if saved.get("format") != FORMAT or not isinstance(saved.get("samplers"), dict):
        return {"format": FORMAT, "samplers": {}}
    return saved


def record(run: RunFolder, entry: dict[str, Any]) -> Path:
    """Write ``entry`` into RUN_DIR/sample_quality.json under its sampler's name (replacing an older one), atomically."""
    saved = read_quality(run)
    saved["samplers"][entry["sampler"]] = entry
    return run.write_json(QUALITY_FILE, saved)


def quality_run(
    run_dir: str | Path, n: int = 10_000, *, sampler: str = "prior", options: dict[str, Any] | None = None, seed: int = 0,
    data: ImageData | None = None, progress: bool = False, save: bool = True,
) -> dict[str, Any]:
    """Measure ``n`` images of the run's ``sampler`` (seed ``seed``) against its test set; returns the ENTRY
    and with ``save`` records it in ``RUN_DIR/sample_quality.json``. ``data``: the run's dataset, if loaded."""
    check_generate(n, "n")
    make_sampler(sampler, options)  # a bad sampler or option fails before anything is loaded
    meter = QualityMeter(run_dir, data=data, progress=progress)
    entry = meter.measure(sampler, options, n, seed)
    if save:
        record(meter.run, entry)
    return entry


def describe_entry(entry: dict[str, Any]) -> str:
    """A header line (n images from which sampler, seed, against what) and ``describe``'s lines, every figure with its n."""
    options = ", ".join(f"{k}={v}" for k, v in (entry.get("options") or {}).items())
    head = (
        f"sample quality: {entry['n']:,} images from the {entry['sampler']} sampler"
        f"{f' ({options})' if options else ''}, seed {entry['seed']}, against {entry['real']}"
    )
    return head + "\n" + describe(entry, entry.get("fd_name", "FD-classifier"))
