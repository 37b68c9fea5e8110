"""vaekit: a small, fast, thoroughly tested toolkit for Variational Autoencoders on images.

The public API::

    from vaekit import log_prob, kl_q_p_mc, kl_q_p_exact, rsample, elbo   # the math
    from vaekit import SimpleVAE, train_vae, generate_images, set_seed     # model and training
    from vaekit import VAE, fit, ModelConfig, TrainConfig                  # models of parts, the trainer
    from vaekit import load_dataset, evaluate, log_likelihood, load_run   # data, evaluation, runs
    from vaekit import RunFolder, build_model                             # run folders, models from configs
"""

__version__ = "0.1.0"

from .checkpoint import CheckpointError
from .commands import eval_run, sample_run, train_run
from .config import ModelConfig, TrainConfig, resolve_device
from .data import DatasetError, binarize, load_dataset
from .distributions import elbo, kl_q_p_exact, kl_q_p_mc, log_prob, rsample
from .evaluation import evaluate, evaluate_elbo, latent_stats, log_likelihood
from .latents import interpolate, latent_grid, posterior_means, reconstruct
from .model import VAE, SimpleVAE, build_model, generate_images
from .runfolder import RunFolder, load_run
from .train import fit, set_seed, train_vae

__all__ = [
    "__version__",
    "log_prob",
    "kl_q_p_mc",
    "kl_q_p_exact",
    "rsample",
    "elbo",
    "VAE",
    "SimpleVAE",
    "generate_images",
    "train_vae",
    "fit",
    "set_seed",
    "ModelConfig",
    "TrainConfig",
    "resolve_device",
    "load_dataset",
    "DatasetError",
    "evaluate",
    "evaluate_elbo",
    "log_likelihood",
    "latent_stats",
    "binarize",
    "posterior_means",
    "reconstruct",
    "latent_grid",
    "interpolate",
    "train_run",
    "eval_run",
    "load_run",
    "RunFolder",
    "build_model",
    "sample_run",
    "CheckpointError",
]
