"""``vaekit eval``: the ELBO, the importance-sampled log-likelihood and latent diagnostics of a trained run."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from ..architectures import flops_per_image
from ..config import resolve_precision
from ..evaluation import DEQUANTIZATION_NOTE, LIKELIHOOD_NOTE, evaluate, matmul_peak_gflops
from ..model import param_device
from ..runfolder import RunFolder
from ..samplers import make_sampler
from ..samplers.vq_prior import prior_bits_per_dim
from .quality import QualityMeter, check_generate, record

__all__ = ["eval_run"]


def eval_run(
    run_dir: str | Path,
    *,
    k: int = 1000,
    split: str = "test",
    limit: int | None = None,
    n_samples: int = 10,
    batch_size: int = 500,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
    save: bool = True,
    precision: str | None = None,
    generate: int | None = None,
    sampler: str = "prior",
    sampler_options: dict[str, Any] | None = None,
    fuse: bool | None = None,
) -> dict[str, Any]:
    """Evaluate a trained run on its dataset's ``split`` (the first ``limit`` images, or all).

    Returns ``vaekit.evaluate``'s numbers plus ``split``, ``seconds`` and ``note`` (what the
    log-likelihood means), and with ``save`` writes them to ``RUN_DIR/eval_{split}.json``.

    ``precision`` (auto, fp32, bf16; default: the run's own) is resolved for the evaluation
    device by ``config.resolve_precision``: the networks run in bf16 only where auto or the
    run chose it (tests/test_evaluation.py checks that bf16 agrees with fp32 within the SE).

    ``fuse`` (None: auto, True, False): the log-likelihood's decoder and log p(x|z) compiled together
    (``vaekit.fusion``), as ``vaekit.evaluate``'s ``fuse``.

    ``generate`` (N): also measure the sample quality of N images from ``sampler`` (with
    ``sampler_options``; seed ``seed``) against the test set (``vaekit.commands.quality``), added
    as ``sample_quality`` and recorded in ``RUN_DIR/sample_quality.json``.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    if generate is not None:  # a bad request fails before the long evaluation
        check_generate(generate)
        make_sampler(sampler, sampler_options)
    run = RunFolder(run_dir)
    model = run.load_model(device)
    train_cfg = run.train_config()
    if param_device(model)[0].type in ("cpu", "cuda"):
        model.to(memory_format=torch.channels_last)  # faster convolutions, same numbers
    data = run.load_data()
    meter = QualityMeter(run, data=data, progress=progress) if generate is not None else None  # its problems before the long part
    if meter is not None:
        meter.sampler(sampler, sampler_options)  # a sampler that cannot draw for this model, too
    images = run.images(data, split)
    images = images[:limit] if limit is not None else images
    condition = getattr(model, "condition", None)  # a conditional model: each image's c, from it and its label
    labels = None if condition is None else getattr(data, f"{split}_labels")[: len(images)]
    t0 = time.perf_counter()
    autocast_dtype, _ = resolve_precision(precision or train_cfg.precision, param_device(model)[0])
    result = evaluate(
        model, images, k=k, n_samples=n_samples, batch_size=batch_size, seed=seed, progress=progress, autocast_dtype=autocast_dtype,
        labels=labels, fuse=fuse,
    )
    result.update(prior_bits_per_dim(run, model, images, seed))  # a VQ-VAE with its fitted code prior: bits/dim under it
    result = {
        "split": split, **result, "seconds": time.perf_counter() - t0, "device": str(param_device(model)[0]),
        "precision": "bf16" if autocast_dtype is not None else "fp32",
    }
    # how fast the estimate ran: decoder passes per second, and its FLOP rate against this machine's matmul rate
    dec = model.decoder if condition is None else model.decoder.net  # a conditional decoder's network takes [z, c]
    dec_flops = flops_per_image(dec, torch.zeros(1, model.latent_dim + (0 if condition is None else condition.size)))
    result["decodes_per_s"] = result["decodes"] / max(result["log_likelihood_seconds"], 1e-9)
    result["decoder_gflops"] = result["decodes_per_s"] * dec_flops / 1e9
    result["matmul_peak_gflops"] = matmul_peak_gflops(device=param_device(model)[0], dtype=autocast_dtype or torch.float32)
    result["note"] = LIKELIHOOD_NOTE
    if condition is not None:  # what the log-likelihood is of, and its proposal (Sohn et al. 2015, Sec. 4.1)
        result["condition"] = {"name": condition.name, "describe": condition.describe(), "quantity": condition.quantity()}
        result["note"] = (f"{condition.quantity()} of a conditional model ({condition.describe()}), by importance sampling from the "
                          f"recognition network q(z|x, c) with p(z) = N(0, I), as Sohn et al. 2015 (Sec. 4.1) estimate the conditional "
                          f"log-likelihood; bits/dim are per scored pixel. " + LIKELIHOOD_NOTE)
    if "bits_per_dim_8bit" in result:
        result["dequantization_note"] = DEQUANTIZATION_NOTE
    if meter is not None:
        result["sample_quality"] = meter.measure(sampler, sampler_options, generate, seed)
        if save:
            record(run, result["sample_quality"])
    if save:
        run.write_json(f"eval_{split}.json", result)
    return result
