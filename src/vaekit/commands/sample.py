"""``vaekit sample``: new images from a trained run, their latent codes drawn by a sampler (``vaekit.samplers``),
written as a PNG grid or (``--out FILE.npy``) as a uint8 array for outside tools (``vaekit.generated``); a
conditional run's (``vaekit.conditions``) for a chosen condition (``--label 7``) or for every one."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..conditional_images import conditional_samples, save_images
from ..generated import draw_uint8, save_npy
from ..plots import plot_samples
from ..runfolder import RunFolder
from ..samplers import decode_samples, make_sampler
from .report import report_run

__all__ = ["sample_run"]


def sample_run(
    run_dir: str | Path, n: int = 64, seed: int = 0, out: str | Path | None = None, *, sampler: str = "prior",
    options: dict[str, Any] | None = None, components: int | None = None, label: str | None = None,
) -> Path:
    """Write ``n`` new images from a trained run; returns the file's path.

    ``out`` ending in ``.png`` (or None) gets a grid; ending in ``.npy``, the images themselves as a
    uint8 array [n, C, H, W], round(255 * clamp(mean image, 0, 1)), drawn as ``vaekit.generated.draw_uint8``
    draws them (the images ``vaekit eval --generate n --seed S`` measures); any other suffix is a ValueError.

    ``sampler`` names a sampler of ``vaekit.samplers.SAMPLERS`` ("prior": z ~ p(z), default file
    ``RUN_DIR/samples_seedS.png``; "gmm": a Gaussian mixture fitted to the training set's posterior
    means, ``RUN_DIR/samples_gmm.png``), with its ``options`` (``components=`` is the GMM's, kept
    as a keyword). A sampler that fits something to the run keeps it in the run folder; the run's
    report is then rewritten to show it (unless ``out`` is given).

    A conditional run (``--condition``): with ``label`` (a class's name or number; for the quadrants, a test
    image's), ``n`` images of that condition; without, every condition across rows (every class; the given
    parts of 10 test images) with z shared down each column (``conditional_images.conditional_samples``).
    ``out`` ending in ``.png`` gets a grid, in ``.npy`` the images as uint8 [N, C, H, W]
    (``conditional_images.QUANTIZATION``); with ``label``, by default ``RUN_DIR/samples_<label>_seedS.png``.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if out is not None and Path(out).suffix.lower() not in (".png", ".npy"):
        raise ValueError(f"out (--out) must end in .png (a grid) or .npy (a uint8 array [N, C, H, W]), got {str(out)!r}")
    options = dict(options or {})
    if components is not None:
        options["components"] = components
    part = make_sampler(sampler, options)
    run = RunFolder(run_dir)
    model = run.load_model()
    conditional = getattr(model, "condition", None) is not None
    if label is not None and not conditional:
        raise ValueError(f"--label picks a condition of a conditional run; the run in {run.path} has none (train it with --condition label)")
    fitted = part.prepare(run, model)
    if conditional:
        data = run.load_data()
        images, nrow, title = conditional_samples(model, run.images(data, "test"), data.test_labels, part, n, seed, label)
        default = part.default_file(seed) if label is None else f"samples_{re.sub(r'[^A-Za-z0-9_.-]+', '-', label)}_seed{seed}.png"
        path = save_images(images, Path(out) if out is not None else run / default, nrow, title)
    else:
        path = Path(out) if out is not None else run / part.default_file(seed)
        if path.suffix.lower() == ".npy":
            save_npy(path, draw_uint8(model, part, n, seed))
        else:
            plot_samples(decode_samples(model, part.sample_z(model, n, seed)), path, title=part.title(n, seed))
    if out is None and fitted is not None:
        report_run(run.path, model=model)
    return path
