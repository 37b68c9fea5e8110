"""Evaluation: test ELBO, importance-sampled log-likelihood, latent diagnostics, the MC KL study.

Every number is per image, in nats, with its standard error over images. Evaluation
draws its samples of z from a forked RNG, so it neither depends on nor disturbs the
training stream.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch import Tensor

from . import distributed
from .conditioning import given
from .data import to_float
from .distributions import kl_diag_std_normal, kl_q_p_exact, kl_q_p_mc, rsample
from .fusion import FusedLogPx, fused_for
from .model import VAE, eval_mode, param_device
from .objectives import make_objective

__all__ = [
    "evaluate", "evaluate_elbo", "log_likelihood", "importance_log_likelihoods", "latent_stats", "kl_mc_error",
    "seeded_rng", "matmul_peak_gflops", "LIKELIHOOD_NOTE", "DEQUANTIZATION_NOTE", "MAX_DECODES",
    "MAX_DECODES_CPU", "default_max_decodes",
]

#: What the importance-sampled log-likelihood means, printed with it and in the report.
LIKELIHOOD_NOTE = (
    "log p(x) is estimated by importance sampling from q(z|x) (Burda et al. 2016): "
    "log p(x) ~= logsumexp_i [log p(x|z_i) + log p(z_i) - log q(z_i|x)] - log k. It is a lower bound "
    "in expectation that tightens as k grows, and is never below the ELBO on average. With a Gaussian "
    "decoder it is the log of a probability *density* over pixel values in [0, 1], not of a probability: "
    "it can be positive, bits/dim can be negative, and it is comparable only with models of the same data "
    "scaling (not with the discrete NLLs of the literature, which use a Bernoulli decoder on binarized "
    "images; train with --likelihood bernoulli --binarize dynamic for those)."
)

#: What the 8-bit bits/dim of a continuous model means, printed with it.
DEQUANTIZATION_NOTE = (
    "bits/dim (8-bit) is an upper bound on -log2 P(x)/D of the images as 8-bit data: the model's density at the "
    "pixel levels plus uniform noise u ~ U[0, 1/256)^D, -E log2 p(x + u)/D, plus 8 bits/dim for the bins' width "
    "1/256 (Theis et al. 2016). A density of +145 nats over 784 pixels is -145/(784 ln 2) = -0.27 bits/dim, so "
    "about 8 - 0.27 = 7.7 bits/dim as an 8-bit model: comparable with other models of the 8-bit data, not with "
    "the NLL of a Bernoulli model on binarized images (~80-90 nats = 0.15 bits/dim on different, 1-bit data)."
)

ACTIVE_THRESHOLD = 0.01  # a latent unit is active if Var_x E_q[z_u] > 0.01 (Burda et al. 2016)


@contextmanager
def seeded_rng(seed: int | None, device: torch.device) -> Iterator[None]:
    """Run the block on torch's RNG forked and seeded with ``seed`` (CPU, and ``device`` if CUDA),
    so it neither depends on nor disturbs the global stream; ``seed=None`` uses the global RNG."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def _networks(device: torch.device, autocast_dtype: torch.dtype | None):
    """Autocast for the networks' forward passes (``autocast_dtype`` None: off, fp32)."""
    return torch.autocast(device.type, dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None)


def _mean_se(values: Tensor) -> tuple[float, float]:
    """Mean of per-image values [M] and its standard error over the images."""
    mean = values.mean().item()
    se = values.std().item() / math.sqrt(values.numel()) if values.numel() > 1 else float("nan")
    return mean, se


def _blocks(m: int, size: int) -> Iterator[slice]:
    for start in range(0, m, size):
        yield slice(start, min(start + size, m))


#: decoded images per forward pass in ``log_likelihood``, whatever k: the memory bound. A pass holds a
#: few [max_decodes, D] tensors and the decoder's activations: at 2048 on MNIST about 40 MB for the mlp
#: and 0.6 GB peak RSS in all for the assignment's conv nets (1.5 GB at 8192). On a CPU 2048 is also
#: faster than 8192: its tensors need no fresh pages from the OS each pass (benchmarks/eval_pass_size.py:
#: 1.26x for the mlp on one core, 1.23x for the conv nets); a GPU wants larger passes.
MAX_DECODES = 8192
MAX_DECODES_CPU = 2048


def default_max_decodes(device: torch.device) -> int:
    """``log_likelihood``'s images decoded per pass on ``device``: MAX_DECODES_CPU on a CPU, else MAX_DECODES."""
    return MAX_DECODES_CPU if device.type == "cpu" else MAX_DECODES


@torch.no_grad()
def log_likelihood(
    model: VAE, x: Tensor, k: int = 1000, *, seed: int | None = 0, max_decodes: int | None = None,
    autocast_dtype: torch.dtype | None = None, fuse: bool | None | FusedLogPx = None,
) -> Tensor:
    """Importance-sampled log p(x) per image [B], in nats (float64), with exactly ``k`` samples.

    log p(x) ~= logsumexp_{i=1..k} [log p(x|z_i) + log p(z_i) - log q(z_i|x)] - log k,  z_i ~ q(z|x)
    (Burda et al. 2016, eq. 8 at k samples).

    The networks run in their own dtype (float32), batched across images and samples, at most
    ``max_decodes`` decoded images at a time, whatever k; log p(x|z) is summed over the pixels in
    that dtype, and the log weights and their running logsumexp are in float64.

    Args:
        model: a ``vaekit.VAE`` (SimpleVAE, or built from any encoder and decoder).
        x: images [B, C, H, W].
        k: number of importance samples per image (>= 1).
        seed: seeds a forked RNG (the same seed gives the same estimate); None draws from
            the global RNG.
        max_decodes: images decoded at once (the memory bound); None: ``default_max_decodes`` of
            the model's device.
        autocast_dtype: run the encoder and decoder under autocast in this dtype (bf16); None: fp32.
            Their outputs are made float32 before log p(x|z) is computed, in every mode.
        fuse: compile the decoder and log p(x|z) together (``vaekit.fusion``: CPU, fp32); None: where that is
            possible and B * k >= ``FUSE_MIN_DECODES``; or a ``FusedLogPx`` of this model, reused across calls.

    Returns:
        [B] float64: the estimate of log p(x) for each image (see ``LIKELIHOOD_NOTE``).
    """
    if isinstance(fuse, FusedLogPx):
        fuse.check_model(model)
    else:
        fuse = fused_for(model, x.shape[0] * k, fuse, autocast_dtype)
    return importance_log_likelihoods(model, [x], k, seed=seed, max_decodes=max_decodes, autocast_dtype=autocast_dtype, fused=fuse)[0]


@torch.no_grad()
def importance_log_likelihoods(
    model: VAE, xs: list[Tensor], k: int, *, seed: int | None = 0, max_decodes: int | None = None,
    autocast_dtype: torch.dtype | None = None, fused: FusedLogPx | None = None,
) -> list[Tensor]:
    """``log_likelihood`` of several versions of the same images (e.g. x and a dequantized x + u),
    all importance-sampled with the same k samples z_i ~ q(z|xs[0]) and the same decodes: a valid
    proposal for each, and the decoder runs once. Returns one [B] float64 estimate per entry of ``xs``.
    ``fused``: a ``FusedLogPx`` of this model computes log p(x|z) (else the model, in eager mode).

    A conditional model (``vaekit.conditions``): call it inside ``given(model, xs[0], labels)`` (then
    log p(x|c), with z_i ~ q(z|x, c); B at most ``max_decodes``, or the held condition does not fit)."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an int >= 1 (importance samples per image), got {k!r}")
    device, dtype = param_device(model)
    max_decodes = default_max_decodes(device) if max_decodes is None else max_decodes
    if isinstance(max_decodes, bool) or not isinstance(max_decodes, int) or max_decodes < 1:
        raise ValueError(f"max_decodes must be an int >= 1, got {max_decodes!r}")
    for x in xs:
        if not isinstance(x, Tensor) or x.ndim != 4 or not x.is_floating_point() or x.shape != xs[0].shape:
            got = list(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must be floating-point images of shape [B, C, H, W], got {got}")
    out: list[list[Tensor]] = [[] for _ in xs]
    log_sig_x = model.log_sig_x.detach()
    with eval_mode(model), seeded_rng(seed, device):
        for rows in _blocks(xs[0].shape[0], max_decodes):
            flat = [x[rows].to(device, dtype).flatten(1) for x in xs]  # each [b, D]
            b = flat[0].shape[0]
            with _networks(device, autocast_dtype):
                phi = model.encode(xs[0][rows].to(device, dtype))
            phi64 = phi.double()  # [b, P]: z and its log densities in float64
            totals = [torch.full((b,), -math.inf, dtype=torch.float64, device=device) for _ in xs]  # running logsumexps
            chunk = max(1, max_decodes // b)
            for start in range(0, k, chunk):
                c = min(chunk, k - start)
                eps = torch.randn(b, c, model.latent_dim, dtype=dtype, device=device)  # [b, c, K] in the networks' dtype (float32: 4x faster)
                z = model.rsample_z(phi64, c, eps.permute(1, 0, 2))  # [b, c, K] float64, z ~ q(z|x)
                log_pxs = fused(z.to(dtype), flat) if fused is not None else _log_px(model, z, flat, log_sig_x, autocast_dtype)  # each [b, c]
                log_prior_ratio = model.log_p_z(z) - model.log_q(z, phi64)  # [b, c] float64: log p(z_i) - log q(z_i|x)
                for i, log_px in enumerate(log_pxs):
                    log_w = log_px.double() + log_prior_ratio  # [b, c]
                    totals[i] = torch.logaddexp(totals[i], torch.logsumexp(log_w, dim=1))  # [b]
            for i, total in enumerate(totals):
                out[i].append(total - math.log(k))
    return [torch.cat(o) for o in out]  # each [B]


def _log_px(model: VAE, z: Tensor, flat: list[Tensor], log_sig_x: Tensor, autocast_dtype: torch.dtype | None) -> list[Tensor]:
    """log p(x|z) [b, c] for z [b, c, K] (float64) and each of the flat images [b, D], in eager mode: one decode."""
    _, dtype = param_device(model)
    b, c = z.shape[:2]
    with _networks(z.device, autocast_dtype):
        dec = model.decode(z.to(dtype))
    dec = dec.to(dtype).reshape(b, c, -1)  # [b, c, D] in the parameters' dtype (fp32 under autocast too)
    return [model.likelihood.log_prob(xf[:, None, :].expand_as(dec), dec, log_sig_x) for xf in flat]  # each [b, c]


@torch.no_grad()
def evaluate_elbo(
    model: VAE, images: Tensor, n_samples: int = 10, batch_size: int = 500, seed: int = 0,
    *, sharded: bool = False, autocast_dtype: torch.dtype | None = None, labels: Tensor | None = None,
) -> dict[str, float]:
    """ELBO of ``images`` [M, C, H, W] under ``model`` with its current sigma_x (a conditional model's, given the
    condition of each image and its ``labels`` [M]).

    Returns nats per image: ``elbo`` (higher is better) and its standard error
    ``elbo_se``, the reconstruction term ``rec`` = E_q log p(x|z), and ``kl``.

    ``sharded=True`` (every rank of a process group must call it): each rank evaluates its
    contiguous slice of every batch, with its slice of the noise drawn for the whole batch,
    and the sums are all-reduced: every rank returns what one process would (up to rounding).

    ``autocast_dtype`` (bf16): the networks run under autocast; the per-image terms are
    computed in float32 and summed in float64 in every mode.
    """
    if n_samples < 1 or batch_size < 1:
        raise ValueError(f"n_samples and batch_size must be >= 1, got {n_samples} and {batch_size}")
    if getattr(model, "deterministic_posterior", False):
        n_samples = 1  # q(z|x) is a point mass (a VQ-VAE): every sample of z is the same, one gives the ELBO exactly
    device, dtype = param_device(model)
    elbo, rec, kl = [], [], []
    objective = make_objective("elbo", {"samples": n_samples})
    sharded = sharded and distributed.current() is not None
    with eval_mode(model), seeded_rng(seed, device):
        for start in range(0, images.shape[0], batch_size):
            x = to_float(images[start : start + batch_size])  # [b, C, H, W]
            shard = distributed.BatchShard.of(x.shape[0]) if sharded else distributed.BatchShard.whole(x.shape[0])
            # this process's slice of the noise drawn for the whole batch (all of it in one process)
            eps = shard.draw(lambda b: torch.empty((n_samples, b, model.latent_dim), dtype=dtype, device=device).normal_(), dim=1)
            xb, yb = shard.take(x).to(device, dtype), None if labels is None else shard.take(labels[start : start + batch_size])
            with _networks(device, autocast_dtype), given(model, xb, yb):  # objectives.elbo makes the networks' outputs float32
                terms = objective(model, xb, eps=eps)  # [b_rank]
            elbo.append(terms.elbo.double())
            rec.append(terms.rec.double())
            kl.append(terms.kl.double())
    if sharded:
        e = torch.cat(elbo)  # [M_rank]
        sums = torch.stack([e.sum(), e.pow(2).sum(), torch.cat(rec).sum(), torch.cat(kl).sum(), e.new_tensor(e.numel())])
        s_e, s_e2, s_rec, s_kl, m = distributed.all_reduce_sum(sums).tolist()  # over all M images
        var = (s_e2 - s_e * s_e / m) / (m - 1) if m > 1 else float("nan")  # unbiased, as Tensor.std
        se = math.sqrt(max(var, 0.0)) / math.sqrt(m) if m > 1 else float("nan")
        return {"elbo": s_e / m, "elbo_se": se, "rec": s_rec / m, "kl": s_kl / m}
    mean, se = _mean_se(torch.cat(elbo))  # over the M images
    return {
        "elbo": mean,
        "elbo_se": se,
        "rec": torch.cat(rec).mean().item(),
        "kl": torch.cat(kl).mean().item(),
    }


def kl_mc_error(
    num_samples: list[int], repeats: int = 10, batch: int = 100, K: int = 2, seed: int = 0
) -> dict[str, list[float]]:
    """Absolute error of the Monte-Carlo KL against the exact one, per sample count.

    For ``batch`` random pairs (q, p) of K-dim isotropic Gaussians, each repeat draws
    N samples of q and takes the mean over pairs of |KL_mc - KL_exact| (nats). Returns
    the mean and standard deviation of that error over ``repeats`` repeats for each N.
    """
    g = torch.Generator().manual_seed(seed)
    params_q = torch.randn(batch, K + 1, generator=g, dtype=torch.float64) * 0.5  # [B, K+1]
    params_p = torch.randn(batch, K + 1, generator=g, dtype=torch.float64) * 0.5  # [B, K+1]
    exact = kl_q_p_exact(params_q, params_p)  # [B]
    mean, std = [], []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for n in num_samples:
            errs = torch.stack(
                [(kl_q_p_mc(rsample(params_q, n), params_q, params_p) - exact).abs().mean() for _ in range(repeats)]
            )  # [repeats]
            mean.append(errs.mean().item())
            std.append(errs.std().item() if repeats > 1 else 0.0)
    return {"num_samples": list(num_samples), "mean": mean, "std": std}


@torch.no_grad()
def latent_stats(model: VAE, images: Tensor, batch_size: int = 500, labels: Tensor | None = None) -> dict[str, Any]:
    """Latent diagnostics over ``images`` [M, C, H, W] (for a model with several stochastic layers, of every layer:
    see ``_means_and_kl``).

    Returns ``kl_per_dim`` (KL(q || N(0, I)) of each latent dimension, nats, mean over
    images), ``posterior_mean_var`` (Var over images of E_q[z_u]), ``active_units`` (how
    many have that variance > 0.01, Burda et al. 2016), ``active_units_per_layer`` (the same count for each
    stochastic layer, bottom first: ``[active_units]`` for a model with one), ``recon_mse`` (mean squared error
    per pixel of the reconstruction decoded from the posterior mean) and ``means``
    (the posterior means [M, K], on the CPU). A conditional model's are given each image's condition (``labels`` [M]).
    """
    device, dtype = param_device(model)
    means, kls, sq_err = [], [], 0.0
    with eval_mode(model):
        for rows in _blocks(images.shape[0], batch_size):
            x = to_float(images[rows]).to(device, dtype)  # [b, C, H, W]
            with given(model, x, None if labels is None else labels[rows]):
                mu, kl = _means_and_kl(model, x)  # [b, K], [b, K]
                recon = model.mean_image(mu[:, None, :])[:, 0]  # [b, C, H, W]
                if getattr(model, "condition", None) is not None:  # the quadrants: the given part as it is, no error there
                    recon = model.condition.shown(recon)
            kls.append(kl.sum(dim=0))  # [K]
            sq_err += (recon.double() - x.double()).pow(2).sum().item()
            means.append(mu.double().cpu())
    m = torch.cat(means)  # [M, K]
    var = m.var(dim=0) if m.shape[0] > 1 else torch.zeros(m.shape[1], dtype=m.dtype)  # [K]
    return {
        "kl_per_dim": (torch.stack(kls).sum(dim=0) / m.shape[0]).tolist(),
        "posterior_mean_var": var.tolist(),
        "active_units": int((var > ACTIVE_THRESHOLD).sum().item()),
        "active_threshold": ACTIVE_THRESHOLD,
        "active_units_per_layer": _active_per_layer(model, var),
        "recon_mse": sq_err / getattr(model.likelihood, "scored_dims", images[0].numel()) / images.shape[0],  # per scored pixel
        "means": m.float(),
    }


def _means_and_kl(model: VAE, x: Tensor) -> tuple[Tensor, Tensor]:
    """Posterior means [b, K] and each dimension's KL [b, K] (float64): KL(q(z|x) || N(0, I)) of the posterior, or a
    model's own (``latent_summary``: several stochastic layers, each layer's means along the mean path)."""
    own = getattr(model, "latent_summary", None)
    if own is not None:
        mu, kl = own(x)
        return mu, kl.double()
    mu, log_sig = model.posterior.split(model.encode(x))  # [b, K], [b, 1 or K]
    return mu, kl_diag_std_normal(mu.double(), log_sig.double())


def _active_per_layer(model: VAE, var: Tensor) -> list[int]:
    """Active units of each stochastic layer, bottom first, from the variances ``var`` [K] (the model's
    ``layer_sizes``; one layer if it has no such attribute)."""
    sizes = list(getattr(model, "layer_sizes", None) or [var.numel()])
    return [int((v > ACTIVE_THRESHOLD).sum().item()) for v in var.split(sizes)]


def evaluate(
    model: VAE,
    images: Tensor,
    *,
    k: int = 1000,
    n_samples: int = 10,
    batch_size: int = 500,
    seed: int = 0,
    progress: bool = False,
    autocast_dtype: torch.dtype | None = None,
    labels: Tensor | None = None,
    fuse: bool | None = None,
) -> dict[str, Any]:
    """Everything ``vaekit eval`` reports for ``images`` [M, C, H, W], per image.

    A conditional model (``vaekit.conditions``) is measured given each image's condition (from the image and
    its ``labels`` [M]): its ELBO and log-likelihood are of log p(x|c), over the pixels its likelihood scores
    (the quadrants: log p(x_missing | x_given)), and bits/dim divide by those pixels.

    * ``elbo``, ``elbo_se``, ``rec``, ``kl``: the ELBO with ``n_samples`` samples of z (nats);
    * ``log_likelihood``, ``log_likelihood_se``: importance-sampled log p(x) with exactly ``k``
      samples (nats), ``bits_per_dim`` = -log p(x) / (D ln 2) and its ``bits_per_dim_se``
      (see ``LIKELIHOOD_NOTE`` for what they mean with a Gaussian decoder);
    * ``bits_per_dim_8bit`` (continuous likelihoods only): an upper bound on the NLL of the 8-bit
      data in bits/dim by uniform dequantization (Theis et al. 2016), -E log2 p(x + u) / D + 8 with
      u ~ U[0, 1/256)^D, from the same importance samples (see ``DEQUANTIZATION_NOTE``);
    * ``log_likelihood_seconds``, ``decodes``: the time and the decoder passes of the estimate; ``fused``: whether
      its log p(x|z) ran compiled (``fuse``: as ``log_likelihood``'s, None deciding on all M * k decodes), and
      ``fuse_first_pass_seconds``, the compile and check it took;
    * ``kl_per_dim``, ``posterior_mean_var``, ``active_units``, ``recon_mse``: latent diagnostics (a model with
      a ``latent_stats(images, batch_size)`` method gives its own instead, e.g. a VQ-VAE's codebook perplexity).

    A model whose posterior is a point mass (``deterministic_posterior``, a VQ-VAE) is evaluated with k = 1 and
    one sample of z: every sample is the same, so one is exact.

    ``autocast_dtype`` (bf16): the ELBO's and log p(x)'s networks run under autocast (the
    sums stay float32/float64); None: fp32.
    """
    from tqdm.auto import tqdm

    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"images must have shape [M, C, H, W] with M >= 1, got {list(images.shape)}")
    m, d = images.shape[0], getattr(model.likelihood, "scored_dims", images[0].numel())  # the pixels scored
    if getattr(model, "deterministic_posterior", False):
        k = n_samples = 1  # q(z|x) is a point mass (a VQ-VAE): every importance sample is the same z, and one is exact
    result: dict[str, Any] = {"n_images": m, "dims": d, "k": k, "n_samples": n_samples, "seed": seed}
    result.update(evaluate_elbo(model, images, n_samples=n_samples, batch_size=batch_size, seed=seed, autocast_dtype=autocast_dtype, labels=labels))
    ll_block = 100  # images per call (and progress tick); fixed, so the estimate does not depend on batch_size
    dequantize = not model.likelihood.discrete  # a density of grey levels: also the 8-bit data's NLL
    lls: list[Tensor] = []
    deq: list[Tensor] = []
    t0 = time.perf_counter()
    fused = fused_for(model, m * k, fuse, autocast_dtype)
    for rows in tqdm(list(_blocks(m, ll_block)), desc=f"log p(x), k={k}", disable=not progress, dynamic_ncols=True):
        x = to_float(images[rows])
        xs = [x]
        if dequantize:  # u ~ U[0, 1/256)^D on each 8-bit level x = j/255 (the cubes do not overlap)
            with seeded_rng(seed * 100_003 + rows.start + 1, torch.device("cpu")):
                xs.append(x + torch.rand(x.shape, dtype=x.dtype) / 256.0)
        with given(model, x, None if labels is None else labels[rows]):  # a conditional model: each image's c (100 <= max_decodes)
            est = importance_log_likelihoods(model, xs, k=k, seed=seed * 100_003 + rows.start, autocast_dtype=autocast_dtype, fused=fused)
        lls.append(est[0])
        if dequantize:
            deq.append(est[1])
    result["log_likelihood_seconds"] = time.perf_counter() - t0
    result["decodes"] = m * k
    result["fused"] = fused is not None and fused.failed is None
    if fused is not None:
        result["fuse_first_pass_seconds"] = fused.first_pass_seconds  # compiling and checking, within log_likelihood_seconds
    ll = torch.cat(lls)  # [M] float64
    result["log_likelihood"], result["log_likelihood_se"] = _mean_se(ll)
    bpd = -ll / (d * math.log(2.0))  # [M] bits per dimension
    result["bits_per_dim"], result["bits_per_dim_se"] = _mean_se(bpd)
    if dequantize:
        # Theis et al. 2016: -log P(x) <= E_u[-log p(x + u)] + D log 256 for the 8-bit levels x
        bpd8 = -torch.cat(deq) / (d * math.log(2.0)) + 8.0  # [M]
        result["bits_per_dim_8bit"], result["bits_per_dim_8bit_se"] = _mean_se(bpd8)
    own_stats = getattr(model, "latent_stats", None)  # a model with other latents than Gaussians says what to report
    stats = own_stats(images, batch_size) if callable(own_stats) else latent_stats(model, images, batch_size, labels=labels)
    stats.pop("means", None)
    result.update(stats)
    result["likelihood"] = model.likelihood.name
    return result


def matmul_peak_gflops(
    seconds: float = 0.5, n: int | None = None, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
) -> float:
    """This machine's matmul rate in GFLOP/s on ``device`` in ``dtype``: n x n products for about
    ``seconds`` (n: 1024 on a CPU, 8192 on a GPU, where smaller products leave it idle)."""
    device = torch.device(device)
    n = n or (1024 if device.type == "cpu" else 8192)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    a = torch.randn(n, n, device=device).to(dtype)
    a @ a  # warm-up
    sync()
    count, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ a
        count += 1
        sync()
    return 2.0 * n**3 * count / (time.perf_counter() - t0) / 1e9
