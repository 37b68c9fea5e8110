"""A Gaussian mixture on the latent space, for better samples from a trained VAE.

Two-stage ("ex-post") density estimation (Ghosh et al. 2020, "From Variational to
Deterministic Autoencoders"; Pythae's GaussianMixtureSampler): the aggregate posterior
q(z) = E_x q(z|x) of a trained VAE is usually not N(0, I), so images decoded from prior
draws land in holes of the latent space. Fitting a Gaussian mixture to the training set's
posterior means and sampling z from it gives images closer to the data.

EM in torch, float64 throughout, full covariances with a small ridge added to each, a
seeded k-means++ start; the same points and seed give the identical fit.

    gmm = fit_gmm(means, components=10, seed=0)    # means: [M, K]
    z = gmm.sample(64, torch.Generator().manual_seed(0))   # [64, K] float64
    gmm.log_prob(test_means).mean()                # nats per point
    save_gmm("runs/x/gmm.safetensors", gmm); load_gmm(...)
"""

from __future__ import annotations

import json
import math
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from torch import Tensor

from .checkpoint import CheckpointError, load_weights, save_weights

__all__ = ["GMM", "fit_gmm", "save_gmm", "load_gmm", "standard_normal_log_prob", "GMM_FORMAT"]

GMM_FORMAT = "vaekit.gmm/1"
_LOG_2PI = math.log(2 * math.pi)


@dataclass
class GMM:
    """A Gaussian mixture: ``weights`` [C], ``means`` [C, K], ``covariances`` [C, K, K] (float64).

    ``info``: how it was fitted (components, seed, iterations, converged, train log-likelihood).
    """

    weights: Tensor
    means: Tensor
    covariances: Tensor
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.weights = self.weights.double()
        self.means = self.means.double()
        self.covariances = self.covariances.double()
        c, k = self.means.shape
        if self.weights.shape != (c,) or self.covariances.shape != (c, k, k):
            raise ValueError(
                f"weights {list(self.weights.shape)}, means {list(self.means.shape)} and covariances "
                f"{list(self.covariances.shape)} do not describe one mixture of [C], [C, K], [C, K, K]"
            )
        self._chol = torch.linalg.cholesky(self.covariances)  # [C, K, K] lower; fails on a non-PD covariance

    @property
    def components(self) -> int:
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def component_log_prob(self, points: Tensor) -> Tensor:
        """log N(x_m; mu_c, Sigma_c) for points [M, K] -> [M, C] (float64)."""
        x = points.to(torch.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"points must have shape [M, K={self.dim}], got {list(points.shape)}")
        diff = x[None, :, :] - self.means[:, None, :]  # [C, M, K]
        sol = torch.linalg.solve_triangular(self._chol, diff.transpose(1, 2), upper=False)  # [C, K, M]
        maha = sol.pow(2).sum(dim=1)  # [C, M]
        half_logdet = torch.log(torch.diagonal(self._chol, dim1=1, dim2=2)).sum(dim=1)  # [C]
        return (-0.5 * (self.dim * _LOG_2PI + maha) - half_logdet[:, None]).T  # [M, C]

    def log_prob(self, points: Tensor) -> Tensor:
        """log p(x) of points [M, K] under the mixture -> [M] (float64, logsumexp over components)."""
        return torch.logsumexp(self.component_log_prob(points) + torch.log(self.weights)[None, :], dim=1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n draws [n, K] (float64): a component by its weight, then mu_c + L_c eps."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be an int >= 0, got {n!r}")
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator) if n else torch.zeros(0, dtype=torch.long)
        eps = torch.randn(n, self.dim, dtype=torch.float64, generator=generator)  # [n, K]
        return self.means[comp] + (self._chol[comp] @ eps[:, :, None])[:, :, 0]

    def to_tensors(self) -> dict[str, Tensor]:
        return {"weights": self.weights, "means": self.means, "covariances": self.covariances}


def standard_normal_log_prob(points: Tensor) -> Tensor:
    """log N(x; 0, I) of points [M, K] -> [M] (float64)."""
    x = points.to(torch.float64)
    return -0.5 * (x.shape[1] * _LOG_2PI + x.pow(2).sum(dim=1))


def _sq_dist(x: Tensor, centers: Tensor, x2: Tensor) -> Tensor:
    """Squared distances [M, C] of x [M, K] (with x2 = |x|^2 [M]) to centers [C, K]."""
    return (x2[:, None] - 2 * x @ centers.T + centers.pow(2).sum(dim=1)[None, :]).clamp_min(0)


def _kmeans_pp(x: Tensor, c: int, gen: torch.Generator) -> Tensor:
    """k-means++ seeding: c rows of x [M, K], each next one drawn with probability ~ squared distance."""
    m = x.shape[0]
    first = int(torch.randint(m, (1,), generator=gen))
    centers = [x[first]]
    d2 = (x - x[first]).pow(2).sum(dim=1)  # [M]
    for _ in range(1, c):
        total = d2.sum()
        if total <= 0:  # fewer distinct points than components: repeat one
            idx = int(torch.randint(m, (1,), generator=gen))
        else:
            idx = int(torch.multinomial(d2 / total, 1, generator=gen))
        centers.append(x[idx])
        d2 = torch.minimum(d2, (x - x[idx]).pow(2).sum(dim=1))
    return torch.stack(centers)  # [C, K]


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run the block with one torch thread, then restore the caller's count.

    EM is a long series of small operations on [M, C] arrays: on a 2-core CPU one thread
    fitted 60,000 points 4x faster than two (20x for 1,500 points on a busy machine), and a
    fixed thread count makes the fit's reductions, and so the fit, the same whatever the caller set.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def fit_gmm(
    points: Tensor,
    components: int = 10,
    seed: int = 0,
    iters: int = 200,
    tol: float = 1e-6,
    ridge: float = 1e-6,
    kmeans_iters: int = 30,
    restarts: int = 5,
) -> GMM:
    """Fit a Gaussian mixture with full covariances to ``points`` [M, K] by EM (float64).

    Start: ``restarts`` k-means++ seedings (a seeded generator), each refined by up to
    ``kmeans_iters`` Lloyd steps; the one with the least squared distance gives each
    cluster's weight, mean and covariance. EM stops after ``iters`` iterations or when the
    mean log-likelihood per point rises by less than ``tol``. ``ridge`` is added to every
    covariance's diagonal (as a fraction of the data's mean variance, so the fit does not
    depend on the scale of the points). Deterministic: the same points and seed give the same fit
    (it runs on one torch thread, whatever the caller's setting).
    """
    with _one_thread():
        return _fit_gmm(points, components, seed, iters, tol, ridge, kmeans_iters, restarts)


def _fit_gmm(
    points: Tensor, components: int, seed: int, iters: int, tol: float, ridge: float, kmeans_iters: int, restarts: int,
) -> GMM:
    if isinstance(components, bool) or not isinstance(components, int) or components < 1:
        raise ValueError(f"components must be an int >= 1, got {components!r}")
    if not isinstance(points, Tensor) or points.ndim != 2 or points.shape[0] < 1:
        raise ValueError(f"points must be a tensor [M, K] with M >= 1, got {list(points.shape) if isinstance(points, Tensor) else type(points).__name__}")
    x = points.detach().to("cpu", torch.float64)
    if not torch.isfinite(x).all():
        raise ValueError("points must be finite")
    m, k = x.shape
    if components > m:
        raise ValueError(f"components={components} is more than the {m} points")
    gen = torch.Generator().manual_seed(seed)
    scale = float(x.var(dim=0, unbiased=False).mean()) if m > 1 else 1.0
    reg = ridge * (scale if scale > 0 else 1.0) * torch.eye(k, dtype=torch.float64)

    # start: the best (least squared distance) of ``restarts`` k-means++ seedings, each refined by Lloyd steps
    best = None
    x2 = x.pow(2).sum(dim=1)  # [M]
    for _ in range(restarts):
        centers = _kmeans_pp(x, components, gen)
        for _ in range(kmeans_iters):
            assign = _sq_dist(x, centers, x2).argmin(dim=1)  # [M]
            counts = torch.bincount(assign, minlength=components).double()  # [C]
            sums = torch.zeros_like(centers).index_add_(0, assign, x)  # [C, K]
            new = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], centers)  # an empty cluster stays put
            if torch.equal(new, centers):
                break
            centers = new
        dist = _sq_dist(x, centers, x2).min(dim=1).values.sum()
        if best is None or dist < best[0]:
            best = (dist, centers)
    assign = _sq_dist(x, best[1], x2).argmin(dim=1)
    resp = torch.nn.functional.one_hot(assign, components).double()  # [M, C]

    def m_step(r: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        nk = r.sum(dim=0) + 10 * torch.finfo(torch.float64).eps  # [C]
        mu = (r.T @ x) / nk[:, None]  # [C, K]
        diff = x[None, :, :] - mu[:, None, :]  # [C, M, K]
        cov = (r.T[:, :, None] * diff).transpose(1, 2) @ diff / nk[:, None, None] + reg  # [C, K, K]
        empty = nk < 1e-8  # a component that lost all its points: the data's covariance around its mean
        if empty.any():
            cov[empty] = torch.cov(x.T).reshape(k, k) + reg if m > 1 else reg
        return nk / m, mu, cov

    weights, mu, cov = m_step(resp)
    gmm = GMM(weights, mu, cov)
    prev = -math.inf
    converged = False
    it = 0
    for it in range(1, iters + 1):  # noqa: B007 - the count is reported after the loop
        logp = gmm.component_log_prob(x) + torch.log(gmm.weights)[None, :]  # [M, C]
        total = torch.logsumexp(logp, dim=1)  # [M]
        ll = float(total.mean())
        resp = torch.exp(logp - total[:, None])  # E-step
        if ll - prev < tol:
            converged = True
            break
        prev = ll
        gmm = GMM(*m_step(resp))  # M-step
    final = float(gmm.log_prob(x).mean())
    gmm.info = {
        "components": components, "seed": seed, "iterations": it, "converged": converged, "train_points": m,
        "train_loglik": final, "ridge": ridge, "tol": tol,
    }
    return gmm


def save_gmm(path: str | os.PathLike, gmm: GMM) -> None:
    """Write the mixture to a safetensors file (atomically), its fit info as JSON metadata."""
    save_weights(path, gmm.to_tensors(), {"format": GMM_FORMAT, "info": json.dumps(gmm.info)})


def load_gmm(path: str | os.PathLike) -> GMM:
    """Read a mixture written by ``save_gmm``; CheckpointError naming the file if it is not one."""
    tensors, meta = load_weights(path)
    try:
        if meta.get("format") != GMM_FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, expected {GMM_FORMAT!r}")
        info = json.loads(meta.get("info", "{}"))
        return GMM(tensors["weights"], tensors["means"], tensors["covariances"], info=info if isinstance(info, dict) else {})
    except (KeyError, ValueError, RuntimeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is not a vaekit GMM: {type(e).__name__}: {e}") from None
