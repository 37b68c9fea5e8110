"""The verbs of the ``vaekit`` command, one module each, every one a short function over a run folder
(``vaekit.runfolder.RunFolder``); ``vaekit.cli`` only parses their arguments and prints their results.

    train.py     train_run    vaekit train: train and write the run folder
    evaluate.py  eval_run     vaekit eval: ELBO, log p(x) by importance sampling, latent diagnostics
    sample.py    sample_run   vaekit sample: new images from a sampler
    figures.py   figures_run  vaekit figures: the run's figures (and its report)
    report.py    report_run   vaekit report: report.html with the latent explorer
"""

from .evaluate import eval_run
from .figures import figures_run, write_run_figures
from .report import report_run
from .sample import sample_run
from .train import train_run

__all__ = ["train_run", "eval_run", "sample_run", "figures_run", "report_run", "write_run_figures"]
