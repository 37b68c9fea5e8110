"""The math of a VAE with isotropic Gaussians, as pure functions on tensors.

No ``torch.distributions`` here: every density and divergence is written out, so
that the tests can use ``torch.distributions`` as an independent reference.

Conventions (the assignment's contract; shapes are part of the API):

* ``params`` of an isotropic Gaussian are packed as ``[B, K+1]``: the ``K`` means,
  then one log standard deviation shared by all ``K`` dimensions.
* Log densities and divergences are in nats.
* Beyond the assignment: a diagonal Gaussian (one std per dimension, means and log stds
  given separately), and the Bernoulli likelihood of binary images from logits.
* Every function keeps the input's device and dtype; float32 and float64 both work.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

__all__ = [
    "log_prob",
    "kl_q_p_mc",
    "kl_q_p_exact",
    "rsample",
    "elbo",
    "split_params",
    "log_prob_diag",
    "kl_diag_std_normal",
    "rsample_diag",
    "log_bernoulli",
    "log_cb_normalizer",
    "cb_mean",
    "log_continuous_bernoulli",
]

LOG_2PI = math.log(2.0 * math.pi)


# ----------------------------------------------------------------------------- checks


def _shape(t: Tensor) -> str:
    return "[" + ", ".join(str(s) for s in t.shape) + "]"


def _check_tensor(name: str, t: object, ndim: int, layout: str) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {layout}, got {type(t).__name__}")
    if t.ndim != ndim:
        raise ValueError(f"{name} must have shape {layout} ({ndim} dims), got shape {_shape(t)}")
    if not t.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    return t


def _check_floating(name: str, t: object) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    if t.ndim == 0:
        raise ValueError(f"{name} must have at least one dimension, got a scalar")
    return t


def _check_params(name: str, params: object) -> Tensor:
    params = _check_tensor(name, params, 2, "[B, K+1]")
    if params.shape[1] < 2:
        raise ValueError(
            f"{name} must have shape [B, K+1] with K >= 1 (K means, then one log std), "
            f"got shape {_shape(params)}"
        )
    return params


def _check_num_samples(num_samples: object) -> int:
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be an int >= 1, got {num_samples!r}")
    return num_samples


def _check_same(names: tuple[str, ...], tensors: tuple[Tensor, ...]) -> None:
    """Same device and dtype for all tensors (no silent casts or transfers)."""
    first = tensors[0]
    for name, t in zip(names[1:], tensors[1:]):
        if t.device != first.device or t.dtype != first.dtype:
            raise ValueError(
                f"{name} is {t.dtype} on {t.device}, but {names[0]} is {first.dtype} on "
                f"{first.device}; all inputs must share dtype and device"
            )


def split_params(params: Tensor) -> tuple[Tensor, Tensor]:
    """Split packed ``[B, K+1]`` parameters into means ``[B, K]`` and log std ``[B]``."""
    params = _check_params("params", params)
    return params[:, :-1], params[:, -1]


# ----------------------------------------------------------------------------- densities


def log_prob(x: Tensor, mu: Tensor, log_sigma: Tensor) -> Tensor:
    """Log density of the isotropic Gaussian N(mu, sigma^2 I) at x, in nats.

    Args:
        x:         [B, N, K] points (N samples for each of B batch elements).
        mu:        [B, N, K] means.
        log_sigma: [B, N] log standard deviations, one per (batch, sample).

    Returns:
        [B, N]: log N(x; mu, sigma^2 I), summed over the K dimensions.
    """
    x = _check_tensor("x", x, 3, "[B, N, K]")
    mu = _check_tensor("mu", mu, 3, "[B, N, K]")
    log_sigma = _check_tensor("log_sigma", log_sigma, 2, "[B, N]")
    if mu.shape != x.shape:
        raise ValueError(f"mu must have the shape of x {_shape(x)}, got {_shape(mu)}")
    if log_sigma.shape != x.shape[:2]:
        raise ValueError(
            f"log_sigma must have shape [B, N] = [{x.shape[0]}, {x.shape[1]}] to match x "
            f"{_shape(x)}, got {_shape(log_sigma)}"
        )
    _check_same(("x", "mu", "log_sigma"), (x, mu, log_sigma))
    K = x.shape[-1]
    sq_dist = (x - mu).pow(2).sum(dim=-1)  # [B, N]
    # log N(x; mu, s^2 I) = -K/2 log(2 pi) - K log s - |x - mu|^2 / (2 s^2)
    return -0.5 * K * LOG_2PI - K * log_sigma - 0.5 * sq_dist * torch.exp(-2.0 * log_sigma)


def _log_prob_params(samples: Tensor, params: Tensor) -> Tensor:
    """log N(samples; params) for samples [B, N, K] and packed params [B, K+1] -> [B, N]."""
    mu, log_sig = params[:, None, :-1], params[:, -1:]  # [B, 1, K], [B, 1]
    b, n, _ = samples.shape
    return log_prob(samples, mu.expand(b, n, -1), log_sig.expand(b, n))


# ----------------------------------------------------------------------------- divergences


def kl_q_p_mc(samples_q: Tensor, params_q: Tensor, params_p: Tensor) -> Tensor:
    """Monte-Carlo estimate of KL(q || p) from samples of q, in nats.

    KL(q || p) ~= 1/N sum_i [log q(z_i) - log p(z_i)],  z_i ~ q.

    Args:
        samples_q: [B, N, K] samples drawn from q.
        params_q:  [B, K+1] parameters of q (K means, then one log std).
        params_p:  [B, K+1] parameters of p.

    Returns:
        [B]: the estimate for each batch element.
    """
    samples_q = _check_tensor("samples_q", samples_q, 3, "[B, N, K]")
    params_q = _check_params("params_q", params_q)
    params_p = _check_params("params_p", params_p)
    b, _, K = samples_q.shape
    for name, p in (("params_q", params_q), ("params_p", params_p)):
        if p.shape != (b, K + 1):
            raise ValueError(
                f"{name} must have shape [B, K+1] = [{b}, {K + 1}] to match samples_q "
                f"{_shape(samples_q)}, got {_shape(p)}"
            )
    _check_same(("samples_q", "params_q", "params_p"), (samples_q, params_q, params_p))
    log_q = _log_prob_params(samples_q, params_q)  # [B, N]
    log_p = _log_prob_params(samples_q, params_p)  # [B, N]
    return (log_q - log_p).mean(dim=1)  # [B]


def kl_q_p_exact(params_q: Tensor, params_p: Tensor) -> Tensor:
    """Closed-form KL(q || p) between isotropic Gaussians, in nats.

    KL = K (log s_p - log s_q) + (K s_q^2 + |mu_q - mu_p|^2) / (2 s_p^2) - K/2

    Args:
        params_q: [B, K+1] parameters of q (K means, then one log std).
        params_p: [B, K+1] parameters of p.

    Returns:
        [B]: KL(q || p) for each batch element.
    """
    params_q = _check_params("params_q", params_q)
    params_p = _check_params("params_p", params_p)
    if params_p.shape != params_q.shape:
        raise ValueError(
            f"params_p must have the shape of params_q {_shape(params_q)}, got {_shape(params_p)}"
        )
    _check_same(("params_q", "params_p"), (params_q, params_p))
    K = params_q.shape[1] - 1
    mu_q, log_sig_q = params_q[:, :-1], params_q[:, -1]  # [B, K], [B]
    mu_p, log_sig_p = params_p[:, :-1], params_p[:, -1]  # [B, K], [B]
    log_ratio = log_sig_q - log_sig_p  # [B]
    sq_dist = (mu_q - mu_p).pow(2).sum(dim=1)  # [B]
    return 0.5 * (
        K * torch.exp(2.0 * log_ratio) + sq_dist * torch.exp(-2.0 * log_sig_p) - K - 2.0 * K * log_ratio
    )


# ----------------------------------------------------------------------------- sampling


def _noise(n: int, mu: Tensor, eps: Tensor | None) -> Tensor:
    """Standard-normal noise [N, B, K] for means ``mu`` [B, K]: drawn from the global generator, or ``eps`` checked."""
    if eps is None:
        return torch.empty((n, *mu.shape), dtype=mu.dtype, device=mu.device).normal_()  # [N, B, K]
    if not isinstance(eps, Tensor) or tuple(eps.shape) != (n, *mu.shape):
        got = list(eps.shape) if isinstance(eps, Tensor) else type(eps).__name__
        raise ValueError(f"eps must have shape [N={n}, B={mu.shape[0]}, K={mu.shape[1]}], got {got}")
    return eps


def rsample(params_q: Tensor, num_samples: int, eps: Tensor | None = None) -> Tensor:
    """Reparameterized samples z = mu + sigma * eps, eps ~ N(0, I); gradients reach params_q.

    With the same RNG state this draws exactly the numbers of the reference
    ``Normal(mu, sigma).rsample([N]).permute(1, 0, 2)``: the noise is drawn as
    ``[N, B, K]`` from the global generator of params_q's device, then permuted.

    Args:
        params_q:    [B, K+1] parameters of q (K means, then one log std).
        num_samples: N >= 1, samples per batch element.
        eps:         optional [N, B, K] standard-normal noise to use instead of drawing it
                     (data-parallel training passes each rank's slice of the global draw).

    Returns:
        [B, N, K] samples.
    """
    params_q = _check_params("params_q", params_q)
    n = _check_num_samples(num_samples)
    mu, log_sig = params_q[:, :-1], params_q[:, -1:]  # [B, K], [B, 1]
    eps = _noise(n, mu, eps)  # [N, B, K]
    z = mu + eps * torch.exp(log_sig)  # [N, B, K]
    return z.permute(1, 0, 2)  # [B, N, K]


# ----------------------------------------------------------------------------- the ELBO


def elbo(
    x: Tensor,
    params_q: Tensor,
    num_samples: int,
    func_decoder: Callable[[Tensor], Tensor],
    log_sig_x: Tensor | float,
) -> Tensor:
    """The ELBO *loss* per example, in nats: the negative evidence lower bound.

    loss = -1/N sum_i log p(x | z_i) + KL(q(z|x) || N(0, I)),  z_i ~ q(z|x),

    with the KL in closed form and p(x|z) = N(x; decoder(z), sigma_x^2 I). The sign is
    the assignment's: this is the quantity to *minimize*; the ELBO itself is ``-elbo(...)``
    (higher is better, and that is what vaekit reports as "ELBO" elsewhere).

    Args:
        x:            [B, D] flattened data.
        params_q:     [B, K+1] parameters of q(z|x).
        num_samples:  N >= 1 samples of z per example.
        func_decoder: maps z [B, N, K] to decoded means [B, N, D].
        log_sig_x:    scalar log std of the Gaussian decoder (tensor of one element or float).

    Returns:
        [B]: the loss for each example.
    """
    x = _check_tensor("x", x, 2, "[B, D]")
    params_q = _check_params("params_q", params_q)
    if params_q.shape[0] != x.shape[0]:
        raise ValueError(
            f"params_q must have B = {x.shape[0]} rows to match x {_shape(x)}, got {_shape(params_q)}"
        )
    _check_same(("x", "params_q"), (x, params_q))
    n = _check_num_samples(num_samples)
    log_sig_x = torch.as_tensor(log_sig_x, dtype=x.dtype, device=x.device)
    if log_sig_x.numel() != 1:
        raise ValueError(f"log_sig_x must be a scalar, got shape {_shape(log_sig_x)}")

    b, d = x.shape
    z = rsample(params_q, n)  # [B, N, K]
    mu_x = func_decoder(z)  # [B, N, D]
    if not isinstance(mu_x, Tensor) or mu_x.shape != (b, n, d):
        got = _shape(mu_x) if isinstance(mu_x, Tensor) else type(mu_x).__name__
        raise ValueError(f"func_decoder must map z [B, N, K] to [B, N, D] = [{b}, {n}, {d}], got {got}")
    log_px_z = log_prob(x[:, None, :].expand(b, n, d), mu_x, log_sig_x.reshape(1, 1).expand(b, n))  # [B, N]
    kl = kl_q_p_exact(params_q, torch.zeros_like(params_q))  # [B], KL(q || N(0, I))
    return -log_px_z.mean(dim=1) + kl  # [B]


# ----------------------------------------------------------------------------- beyond the assignment


def log_prob_diag(x: Tensor, mu: Tensor, log_sigma: Tensor) -> Tensor:
    """Log density of the diagonal Gaussian N(mu, diag(sigma^2)) at x, summed over the last dim, in nats.

    Args:
        x:         [..., K] points.
        mu:        [..., K] means (broadcastable to x).
        log_sigma: [..., K] or [..., 1] log standard deviations (broadcastable to x).

    Returns:
        [...]: sum_k log N(x_k; mu_k, sigma_k^2).
    """
    x = _check_floating("x", x)
    mu = _check_floating("mu", mu)
    log_sigma = _check_floating("log_sigma", log_sigma)
    _check_same(("x", "mu", "log_sigma"), (x, mu, log_sigma))
    try:
        shape = torch.broadcast_shapes(x.shape, mu.shape, log_sigma.shape)
    except RuntimeError:
        raise ValueError(
            f"x {_shape(x)}, mu {_shape(mu)} and log_sigma {_shape(log_sigma)} must broadcast together"
        ) from None
    if shape != x.shape:
        raise ValueError(f"mu {_shape(mu)} and log_sigma {_shape(log_sigma)} must broadcast to x {_shape(x)}")
    # log N(x; mu, s^2) = -1/2 log(2 pi) - log s - (x - mu)^2 / (2 s^2), per dimension
    per_dim = -0.5 * LOG_2PI - log_sigma - 0.5 * (x - mu).pow(2) * torch.exp(-2.0 * log_sigma)  # [..., K]
    return per_dim.sum(dim=-1)


def kl_diag_std_normal(mu: Tensor, log_sigma: Tensor) -> Tensor:
    """KL(N(mu, diag(sigma^2)) || N(0, I)) per dimension, in nats (sum over the last dim for the total).

    KL_k = (mu_k^2 + sigma_k^2 - 1) / 2 - log sigma_k

    Args:
        mu:        [B, K] means.
        log_sigma: [B, K] or [B, 1] log standard deviations.

    Returns:
        [B, K]: the KL of each dimension.
    """
    mu = _check_tensor("mu", mu, 2, "[B, K]")
    log_sigma = _check_tensor("log_sigma", log_sigma, 2, "[B, K] or [B, 1]")
    if log_sigma.shape[0] != mu.shape[0] or log_sigma.shape[1] not in (1, mu.shape[1]):
        raise ValueError(f"log_sigma must have shape [B, K] or [B, 1] to match mu {_shape(mu)}, got {_shape(log_sigma)}")
    _check_same(("mu", "log_sigma"), (mu, log_sigma))
    return 0.5 * (mu.pow(2) + torch.exp(2.0 * log_sigma) - 1.0) - log_sigma  # [B, K]


def rsample_diag(mu: Tensor, log_sigma: Tensor, num_samples: int, eps: Tensor | None = None) -> Tensor:
    """Reparameterized samples of N(mu, diag(sigma^2)): z = mu + sigma * eps, eps ~ N(0, I).

    The noise is drawn as ``[N, B, K]`` exactly as ``rsample`` draws it, so an isotropic
    posterior gives the same samples through either function.

    Args:
        mu:          [B, K] means.
        log_sigma:   [B, K] or [B, 1] log standard deviations.
        num_samples: N >= 1.
        eps:         optional [N, B, K] standard-normal noise to use instead of drawing it
                     (data-parallel training passes each rank's slice of the global draw).

    Returns:
        [B, N, K] samples.
    """
    mu = _check_tensor("mu", mu, 2, "[B, K]")
    log_sigma = _check_tensor("log_sigma", log_sigma, 2, "[B, K] or [B, 1]")
    if log_sigma.shape[0] != mu.shape[0] or log_sigma.shape[1] not in (1, mu.shape[1]):
        raise ValueError(f"log_sigma must have shape [B, K] or [B, 1] to match mu {_shape(mu)}, got {_shape(log_sigma)}")
    _check_same(("mu", "log_sigma"), (mu, log_sigma))
    n = _check_num_samples(num_samples)
    eps = _noise(n, mu, eps)  # [N, B, K]
    return (mu + eps * torch.exp(log_sigma)).permute(1, 0, 2)  # [B, N, K]


def log_bernoulli(x: Tensor, logits: Tensor) -> Tensor:
    """log Bernoulli(x; sigmoid(logits)) summed over the last dim, in nats, computed from logits.

    log p(x) = sum_d x_d * l_d - softplus(l_d)   (= minus the binary cross-entropy with logits),
    stable for any logit. ``x`` is usually binary; values in [0, 1] give the cross-entropy.

    Args:
        x:      [..., D] targets in [0, 1].
        logits: [..., D] decoder logits (broadcastable to x).

    Returns:
        [...]: the log-likelihood of each row.
    """
    x = _check_floating("x", x)
    logits = _check_floating("logits", logits)
    _check_same(("x", "logits"), (x, logits))
    try:
        ok = torch.broadcast_shapes(x.shape, logits.shape) == x.shape
    except RuntimeError:
        ok = False
    if not ok:
        raise ValueError(f"logits {_shape(logits)} must broadcast to x {_shape(x)}")
    softplus = torch.nn.functional.softplus
    xc = _unbroadcast(x)  # x without its stride-0 copies, e.g. [B, 1, D] for x expanded to [B, N, D]
    if torch.compiler.is_compiling():
        # under torch.compile (vaekit.fusion) no host-side check of x: the general form, its two softplus sharing
        # one exp and log1p, softplus(+-l) = relu(+-l) + log1p(exp(-|l|)) (every term >= 0: no cancellation)
        t = torch.log1p(torch.exp(-logits.abs()))
        return -(x * torch.relu(-logits) + (1.0 - x) * torch.relu(logits) + t).sum(dim=-1)
    if xc.device.type == "cpu" and bool(((xc == 0) | (xc == 1)).all()):
        # binary x (the usual case): -softplus((1 - 2x) l) per pixel, the general form's numbers bit
        # for bit (one of its two terms is exactly zero), in one softplus pass instead of two. On the
        # CPU only: elsewhere the check would cost a host sync per call, and the passes are cheap
        out = -softplus((1.0 - 2.0 * xc) * logits).sum(dim=-1)
        return out if out.shape == x.shape[:-1] else out.expand(x.shape[:-1])
    # x l - softplus(l) = -(x softplus(-l) + (1 - x) softplus(l)); this form keeps its relative
    # accuracy for confident predictions (softplus(-l) ~ exp(-l) instead of l - l)
    return -(x * softplus(-logits) + (1.0 - x) * softplus(logits)).sum(dim=-1)


def _unbroadcast(t: Tensor) -> Tensor:
    """``t`` without the copies an ``expand`` made: every stride-0 dimension sliced to size 1."""
    return t[tuple(slice(0, 1) if stride == 0 and size > 1 else slice(None) for size, stride in zip(t.shape, t.stride()))]


def _check_elementwise(name: str, t: object) -> Tensor:
    if not isinstance(t, Tensor) or not t.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {getattr(t, 'dtype', type(t).__name__)}")
    return t


def log_cb_normalizer(logits: Tensor) -> Tensor:
    """log C(lambda) of the continuous Bernoulli with lambda = sigmoid(logits), elementwise, in nats.

    p(x | lambda) = C(lambda) lambda^x (1 - lambda)^(1 - x) on [0, 1]  (Loaiza-Ganem & Cunningham 2019, eq. 7),
    C(lambda) = 2 atanh(1 - 2 lambda) / (1 - 2 lambda), and C(1/2) = 2.

    In logits l, 1 - 2 lambda = -tanh(l / 2) and atanh(1 - 2 lambda) = -l / 2, so C = l / tanh(l / 2):
    computed as log|l| - log(1 - e^-|l|) + log(1 + e^-|l|) away from l = 0, and by its Taylor series
    log 2 + l^2/12 - 7 l^4/1440 for |l| < 1e-2 (error below 1e-15), so it is exact at and near 1/2
    and has finite gradients everywhere.
    """
    logits = _check_elementwise("logits", logits)
    a = logits.abs()
    small = a < 1e-2
    safe = torch.where(small, torch.ones_like(a), a)  # keeps the other branch (and its gradient) finite
    far = safe.log() - torch.log(-torch.expm1(-safe)) + torch.log1p(torch.exp(-safe))
    a2 = a * a
    near = math.log(2.0) + a2 / 12.0 - 7.0 * a2 * a2 / 1440.0
    return torch.where(small, near, far)


def cb_mean(logits: Tensor) -> Tensor:
    """Mean of the continuous Bernoulli with lambda = sigmoid(logits), elementwise, in [0, 1].

    E[x] = lambda / (2 lambda - 1) + 1 / (2 atanh(1 - 2 lambda))  (Loaiza-Ganem & Cunningham 2019),
    = lambda / tanh(l / 2) - 1 / l in logits, and 1/2 + l/12 - l^3/720 for |l| < 1e-2.
    """
    logits = _check_elementwise("logits", logits)
    small = logits.abs() < 1e-2
    safe = torch.where(small, torch.ones_like(logits), logits)
    far = torch.sigmoid(safe) / torch.tanh(safe / 2.0) - 1.0 / safe
    near = 0.5 + logits / 12.0 - logits.pow(3) / 720.0
    return torch.where(small, near, far)


def log_continuous_bernoulli(x: Tensor, logits: Tensor) -> Tensor:
    """log CB(x; sigmoid(logits)) summed over the last dim, in nats: log_bernoulli(x, l) + log C(l).

    Args:
        x:      [..., D] values in [0, 1] (grey pixels).
        logits: [..., D] decoder logits (broadcastable to x).

    Returns:
        [...]: the log density of each row (can be positive: a density on [0, 1]^D).
    """
    return log_bernoulli(x, logits) + log_cb_normalizer(logits).expand_as(x).sum(dim=-1)
