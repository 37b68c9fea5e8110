"""Two-stage sampling (Ghosh et al. 2020): z from a Gaussian mixture fitted to the training set's posterior
means, which follows the aggregate posterior more closely than the prior does."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..checkpoint import CheckpointError
from ..gmm import GMM, fit_gmm, load_gmm, save_gmm, standard_normal_log_prob
from ..latents import posterior_means
from ..registry import option
from . import SAMPLERS, Sampler

GMM_FILE = "gmm.safetensors"
GMM_JSON = "gmm.json"
GMM_FIT_SEED = 0


@SAMPLERS.register
class GMMSampler(Sampler):
    """gmm: z from a Gaussian mixture of --components components fitted to the training set's posterior means"""

    name = "gmm"

    @dataclass
    class Options:
        components: int = option(10, "mixture components", min=1)

    def __init__(self, options: object | None = None):
        super().__init__(options)
        self.gmm: GMM | None = None

    def prepare(self, run: Any, model: Any, data: Any = None) -> dict[str, Any]:
        """Reuse RUN_DIR/gmm.safetensors when it has this many components and was fitted to this model's weights
        (their SHA-256, kept in its info), else fit one (seed 0) on the training set's posterior means and save it;
        write RUN_DIR/gmm.json: the mean log-density (nats per point) of the **test** set's posterior means under the
        mixture and under N(0, I)."""
        components = self.options.components
        digest = run.weights_digest()
        self.gmm = None
        if (run / GMM_FILE).exists():
            try:
                old = load_gmm(run / GMM_FILE)
                if (old.components == components and old.dim == getattr(model, "K", model.latent_dim)
                        and old.info.get("model_sha256") == digest):
                    self.gmm = old
            except CheckpointError:
                self.gmm = None  # refit and overwrite
        data = run.load_data() if data is None else data
        if self.gmm is None:
            train_means = posterior_means(model, run.images(data, "train"), labels=data.train_labels)  # [N, K] (E[z|x, c])
            self.gmm = fit_gmm(train_means, components=components, seed=GMM_FIT_SEED)
            self.gmm.info["model_sha256"] = digest
            save_gmm(run / GMM_FILE, self.gmm)
        test_means = posterior_means(model, run.images(data, "test"), labels=data.test_labels)  # [M, K]
        info = {
            **self.gmm.info,
            "components": self.gmm.components,
            "latent_dim": self.gmm.dim,
            "test_points": int(test_means.shape[0]),
            "test_loglik_gmm": float(self.gmm.log_prob(test_means).mean()),
            "test_loglik_prior": float(standard_normal_log_prob(test_means).mean()),
            "unit": "nats per point (mean log-density of the test set's posterior means)",
        }
        run.write_json(GMM_JSON, info)
        return info

    def sample_z(self, model: Any, n: int, seed: int) -> Tensor:
        if self.gmm is None:
            raise RuntimeError("the GMM sampler must be prepared (fitted on a run) before it samples")
        return self.gmm.sample(n, torch.Generator().manual_seed(seed))  # [n, K]

    def default_file(self, seed: int) -> str:
        return "samples_gmm.png"

    def title(self, n: int, seed: int) -> str:
        return f"{n} samples from the GMM ({self.options.components} components, seed {seed})"

    def explorer_gmm(self) -> GMM | None:
        return self.gmm


def saved_gmm(run: Any) -> GMM | None:
    """The run's fitted mixture (RUN_DIR/gmm.safetensors), or None if there is none or it is unreadable."""
    if not (run / GMM_FILE).exists():
        return None
    try:
        return load_gmm(run / GMM_FILE)
    except CheckpointError:
        return None
