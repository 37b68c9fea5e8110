"""``vaekit report``: the run's report.html, with the latent explorer."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..data import ImageData, to_float
from ..explorer import explorer_html
from ..explorer import note_html as explorer_note
from ..latents import posterior_means
from ..model import VAE
from ..report import write_report
from ..runfolder import RunFolder
from ..samplers.gmm import saved_gmm
from ..vq_explorer import vq_panel

__all__ = ["report_run"]


def report_run(
    run_dir: str | Path, out: str | Path | None = None, *, model: VAE | None = None, data: ImageData | None = None,
    notes: Sequence[str] = (),
) -> Path:
    """Write the run's report with the latent explorer (``vaekit.explorer``); returns its path.

    The explorer gets the test set's posterior means and labels, and the run's GMM if
    ``gmm.safetensors`` exists; a conditional model's explorer, its condition's choices (every class) to pick from.
    ``model`` and ``data``, when the caller holds them (training
    has just ended), save loading them again. Anything that keeps the explorer from being
    built is shown as a note in its place; the rest of the report is written regardless.
    ``notes``: figures that were skipped and why (``write_run_figures``), shown with the figures.
    """
    run = RunFolder(run_dir)
    try:
        model = run.load_model() if model is None else model
        data = run.load_data() if data is None else data
        if hasattr(model, "codebook"):  # a VQ-VAE: its grid of codes, with its code prior's samples (vaekit.vq_explorer)
            return write_report(run.path, out, explorer_html=vq_panel(run, model, data), notes=notes)
        test = run.images(data, "test")
        means = posterior_means(model, test, labels=data.test_labels)  # [M, K]; a conditional model's given each c
        gmm = saved_gmm(run)  # gmm.json and the samples still show without it; the explorer then has no GMM button
        labels = data.test_labels if data.info.labelled else None
        condition = getattr(model, "condition", None)  # a conditional model: the page decodes [z, c] of a picked c
        choices = None if condition is None else (condition.choice_title, *condition.choices(to_float(test[:10]), data.test_labels[:10]))
        panel = explorer_html(model, means, labels, gmm=gmm, conditions=choices)
    except Exception as e:  # noqa: BLE001 - never lose the report over the explorer; say why it is missing
        panel = explorer_note(f"{type(e).__name__}: {e}")
    return write_report(run.path, out, explorer_html=panel, notes=notes)
