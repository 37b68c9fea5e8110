"""``vaekit sample``: new images from a trained run, their latent codes drawn by a sampler (``vaekit.samplers``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..plots import plot_samples
from ..runfolder import RunFolder
from ..samplers import decode_samples, make_sampler
from .report import report_run

__all__ = ["sample_run"]


def sample_run(
    run_dir: str | Path, n: int = 64, seed: int = 0, out: str | Path | None = None, *, sampler: str = "prior",
    options: dict[str, Any] | None = None, components: int | None = None,
) -> Path:
    """Write a grid of ``n`` new images from a trained run; returns the PNG's path.

    ``sampler`` names a sampler of ``vaekit.samplers.SAMPLERS`` ("prior": z ~ p(z), default file
    ``RUN_DIR/samples_seedS.png``; "gmm": a Gaussian mixture fitted to the training set's posterior
    means, ``RUN_DIR/samples_gmm.png``), with its ``options`` (``components=`` is the GMM's, kept
    as a keyword). A sampler that fits something to the run keeps it in the run folder; the run's
    report is then rewritten to show it (unless ``out`` is given).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    options = dict(options or {})
    if components is not None:
        options["components"] = components
    part = make_sampler(sampler, options)
    run = RunFolder(run_dir)
    model = run.load_model()
    fitted = part.prepare(run, model)
    path = Path(out) if out is not None else run / part.default_file(seed)
    plot_samples(decode_samples(model, part.sample_z(model, n, seed)), path, title=part.title(n, seed))
    if out is None and fitted is not None:
        report_run(run.path, model=model)
    return path
