"""A VQ-VAE's codes from a prior fitted to the frozen encoder's codes of the training set (van den Oord et al. 2017,
sec. 4): a gated PixelCNN or a small transformer over the code grid (``vaekit.codeprior``), then decoded.

``prepare`` fits it once per trained model (RUN_DIR/vq_prior.safetensors, refitted when the options or the
model's weights change) and writes RUN_DIR/vq_prior.json: its NLL of the **test** set's codes (nats per image,
bits per code) against the uniform prior's h w log M, and the data's bits/dim under the VQ-VAE with it
(``codeprior.vq_bits_per_dim``). ``vaekit eval`` adds that bits/dim for the images it evaluates
(``prior_bits_per_dim``).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..checkpoint import CheckpointError
from ..codeprior import PRIOR_NETS, CodePrior, fit_code_prior, load_code_prior, make_code_prior, save_code_prior, vq_bits_per_dim
from ..data import to_float
from ..registry import option
from . import SAMPLERS, Sampler

PRIOR_FILE = "vq_prior.safetensors"
PRIOR_JSON = "vq_prior.json"
SAMPLES_FILE = "samples_vq_prior.png"



@torch.no_grad()
def encoder_codes(model: Any, images: Any, batch_size: int = 1000) -> Tensor:
    """The code grids [N, h, w] (int64, CPU) of ``images`` [N, C, H, W] under the frozen encoder."""
    p = model.log_sig_x
    was = model.training
    model.eval()
    try:
        out = [model.codes(to_float(images[s : s + batch_size]).to(p.device, p.dtype)).cpu() for s in range(0, images.shape[0], batch_size)]
    finally:
        model.train(was)
    return torch.cat(out)


@SAMPLERS.register
class VQPriorSampler(Sampler):
    """vq-prior: a VQ-VAE's codes drawn from a --prior-net (gated PixelCNN or transformer) fitted to the training set's codes"""

    name = "vq-prior"

    @dataclass
    class Options:
        prior_net: str = option("pixelcnn", "the network over the code grid", choices=tuple(PRIOR_NETS))
        prior_width: int = option(32, "channels (PixelCNN) or model width (transformer)", min=4)
        prior_layers: int = option(6, "gated layers (PixelCNN) or transformer blocks", min=1)
        prior_epochs: int = option(2, "passes over the training set's codes", min=1)
        prior_minutes: float | None = option(None, "stop fitting after this many minutes (default: the epochs)", gt=0.0)
        prior_batch_size: int = option(128, "code grids per step", min=1)

    def __init__(self, options: object | None = None):
        super().__init__(options)
        self.prior: CodePrior | None = None
        self.info: dict[str, Any] = {}

    def settings(self, model: Any, digest: str | None) -> dict[str, Any]:
        o = self.options
        return {
            "prior_net": o.prior_net, "width": o.prior_width, "layers": o.prior_layers, "epochs": o.prior_epochs,
            "minutes": o.prior_minutes, "batch_size": o.prior_batch_size, "codebook_size": model.codebook_size,
            "grid": list(model.grid), "model_sha256": digest,
        }

    def _saved(self, run: Any, settings: dict[str, Any]) -> CodePrior | None:
        if not (run / PRIOR_FILE).exists():
            return None
        try:
            prior, info = load_code_prior(run / PRIOR_FILE)
        except CheckpointError:
            return None  # refit and overwrite
        if info.get("settings") != settings:
            return None
        self.info = info
        return prior

    def refusal(self, model: Any) -> str | None:
        if not hasattr(model, "codebook") or not hasattr(model, "code_vectors"):
            return f"sampler vq-prior needs a VQ-VAE run (vaekit train --arch vqvae); this run's model is a {type(model).__name__}"
        return None

    def prepare(self, run: Any, model: Any, data: Any = None) -> dict[str, Any]:
        """Reuse RUN_DIR/vq_prior.safetensors when it was fitted with these options to this model's weights, else
        fit one (seed 0) to the training set's codes and save it; write RUN_DIR/vq_prior.json (the test set's NLL
        and bits/dim, see the module docstring) and return it."""
        if (why := self.refusal(model)) is not None:
            raise ValueError(why)
        settings = self.settings(model, run.weights_digest())
        data = run.load_data() if data is None else data
        self.prior = self._saved(run, settings)
        if self.prior is None:
            o = self.options
            codes = encoder_codes(model, run.images(data, "train"))  # [N, h, w]
            print(f"fitting a {o.prior_net} prior to the codes of {len(codes)} training images ...", file=sys.stderr, flush=True)
            self.prior = make_code_prior(o.prior_net, model.codebook_size, model.grid, width=o.prior_width, layers=o.prior_layers)
            fit = fit_code_prior(self.prior, codes, epochs=o.prior_epochs, minutes=o.prior_minutes, batch_size=o.prior_batch_size)
            self.info = {"settings": settings, "fit": fit, "train_images": len(codes)}
            save_code_prior(run / PRIOR_FILE, self.prior, self.info)
        test = vq_bits_per_dim(model, self.prior, run.images(data, "test"))
        report = {**self.info, **summarize(test, model), "test_images": int(test["bits_per_dim"].numel())}
        run.write_json(PRIOR_JSON, report)
        return report

    def sample_z(self, model: Any, n: int, seed: int) -> Tensor:
        if self.prior is None:
            raise RuntimeError("the vq-prior sampler must be prepared (fitted on a run) before it samples")
        codes = self.prior.sample(n, torch.Generator().manual_seed(seed))  # [n, h, w]
        p = model.log_sig_x
        return model.code_vectors(codes.to(p.device), p.dtype).detach()  # [n, K]

    def default_file(self, seed: int) -> str:
        return SAMPLES_FILE

    def title(self, n: int, seed: int) -> str:
        return f"{n} samples: codes from the {self.options.prior_net} prior (seed {seed}), decoded"


def _mean_se(t: Tensor) -> tuple[float, float]:
    return float(t.mean()), float(t.std() / math.sqrt(t.numel())) if t.numel() > 1 else float("nan")


def summarize(terms: dict[str, Tensor], model: Any) -> dict[str, Any]:
    """The means (and standard errors over images) of ``vq_bits_per_dim``'s terms, with the uniform prior's NLL."""
    bpd, bpd_se = _mean_se(terms["bits_per_dim"])
    nll, nll_se = _mean_se(terms["prior_nll"])
    uniform = model.positions * math.log(model.codebook_size)
    d = model.image_shape[0] * model.image_shape[1] * model.image_shape[2] if model.image_shape else None
    return {
        "prior_nll": nll, "prior_nll_se": nll_se, "prior_bits_per_code": nll / (model.positions * math.log(2.0)),
        "uniform_nll": uniform, "decoder_nll": float(terms["decoder_nll"].mean()),
        "bits_per_dim_8bit": bpd, "bits_per_dim_8bit_se": bpd_se,
        "bits_per_dim_8bit_uniform": bpd + (uniform - nll) / (d * math.log(2.0)) if d else None,
        "unit": "nats per image (prior_nll, decoder_nll, uniform_nll); bits per code; bits/dim of the 8-bit images",
    }


def saved_prior(run: Any, model: Any) -> CodePrior | None:
    """The run's fitted code prior if it was fitted to this model's weights, else None."""
    if not hasattr(model, "codebook") or not (run / PRIOR_FILE).exists():
        return None
    try:
        prior, info = load_code_prior(run / PRIOR_FILE)
    except CheckpointError:
        return None
    fitted_to = (info.get("settings") or {}).get("model_sha256")
    return prior if fitted_to is not None and fitted_to == run.weights_digest() else None


def prior_bits_per_dim(run: Any, model: Any, images: Any, seed: int = 0) -> dict[str, Any]:
    """For ``vaekit eval``: the bits/dim of ``images`` under a VQ-VAE with its fitted code prior, as
    ``{"vq_prior": {...}}`` (``summarize``'s numbers and the prior's name), or {} when the run has none."""
    prior = saved_prior(run, model)
    if prior is None:
        return {}
    out = summarize(vq_bits_per_dim(model, prior, images, seed=seed), model)
    return {"vq_prior": {"prior_net": prior.kind, **out}}


__all__ = ["VQPriorSampler", "encoder_codes", "saved_prior", "prior_bits_per_dim", "summarize", "PRIOR_FILE", "PRIOR_JSON"]
