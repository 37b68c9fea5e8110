"""Sample quality: how far generated images are from the test set, measured in the features of a network.

Pure math on feature tensors ``[N, F]`` (real) and ``[M, F]`` (fake) and on class probabilities
``[M, C]``; no I/O, no network. The features come from :mod:`vaekit.features` (a small classifier
trained here on the dataset's labels, or a fixed random network where there are none), so the Fréchet
distance here is "FD-classifier" (or "FD-random"): it is *not* FID, whose Inception network and
numbers it does not share. Every figure depends on the number of samples (FD and the PRDC
radii are biased at small n), so :func:`sample_quality` returns ``n_real`` and ``n_fake`` with them.

Sums and matrix functions are done in float64; distances are in feature units (FD in squared units).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "frechet_distance",
    "frechet_distance_from_moments",
    "kid",
    "kid_subsets",
    "prdc",
    "label_entropy",
    "class_shares",
    "sample_quality",
    "describe",
    "PRDC_K",
    "KID_SUBSETS",
    "KID_SUBSET_SIZE",
]

#: nearest neighbours for precision, recall, density and coverage (Naeem et al. 2020 use k=5)
PRDC_K = 5
#: KID's defaults (Bińkowski et al. 2018 and torchmetrics: 100 subsets of 1,000)
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
#: pairwise-distance blocks are at most this many float64 entries (8 Mi entries = 64 MiB)
_BLOCK_ENTRIES = 1 << 23


def _check_features(x: Tensor, name: str, min_rows: int = 2, features: int | None = None) -> Tensor:
    """``x`` as float64 [N, F], or a ValueError naming ``name``, what it is and what was expected."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor [N, F], got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-d tensor [N, F] (one row of features per image), got shape {tuple(x.shape)}")
    if x.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} rows (images), got shape {tuple(x.shape)}")
    if x.shape[1] < 1:
        raise ValueError(f"{name} must have at least 1 feature column, got shape {tuple(x.shape)}")
    if features is not None and x.shape[1] != features:
        raise ValueError(f"{name} has {x.shape[1]} features (shape {tuple(x.shape)}), expected {features} like the real features")
    if not (x.is_floating_point() or x.dtype in (torch.uint8, torch.int32, torch.int64)):
        raise ValueError(f"{name} must hold real numbers, got dtype {x.dtype}")
    x = x.detach().to("cpu", torch.float64)
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} holds {int((~torch.isfinite(x)).sum())} non-finite values (NaN or inf); expected finite features")
    return x


def _check_probs(probs: Tensor, name: str = "probs") -> Tensor:
    """``probs`` as float64 [M, C] with rows on the simplex (within 1e-4), or a ValueError."""
    p = _check_features(probs, name, min_rows=1)
    if (p < 0).any() or (p > 1).any():
        raise ValueError(f"{name} must be probabilities in [0, 1], got values in [{p.min():.4g}, {p.max():.4g}]")
    worst = (p.sum(dim=1) - 1).abs().max().item()
    if worst > 1e-4:
        raise ValueError(f"each row of {name} (shape {tuple(p.shape)}) must sum to 1, one is off by {worst:.3g}")
    return p


# ----------------------------------------------------------------------------- Fréchet distance


def _psd_sqrt(s: Tensor) -> Tensor:
    """Square root of a symmetric positive semi-definite matrix [F, F] by its eigendecomposition.

    Singular covariances (dead features, fewer samples than features) are fine: see ``_zero_round_off``.
    """
    w, v = torch.linalg.eigh((s + s.T) / 2)  # [F], [F, F]
    return (v * _zero_round_off(w).sqrt()) @ v.T


def _zero_round_off(w: Tensor) -> Tensor:
    """Eigenvalues w [F] of a PSD matrix with those within round-off of zero (below F * eps * max|w|) set to 0.

    On a singular matrix they come out as +-1e-16 of the largest; their square roots (1e-8 each)
    would otherwise add up to errors far above float64's precision.
    """
    cutoff = w.shape[0] * torch.finfo(w.dtype).eps * w.abs().max()
    return torch.where(w > cutoff, w, torch.zeros_like(w))


def frechet_distance_from_moments(mu1: Tensor, s1: Tensor, mu2: Tensor, s2: Tensor) -> float:
    """Fréchet (2-Wasserstein²) distance between N(mu1, s1) and N(mu2, s2), in squared feature units.

    d² = ||mu1 - mu2||² + tr(s1 + s2 - 2 (s1^½ s2 s1^½)^½)   (Dowson & Landau 1982; Heusel et al. 2017, eq. 6)

    tr (s1 s2)^½ is computed as tr (s1^½ s2 s1^½)^½, the root of a symmetric PSD matrix (same
    eigenvalues as s1 s2), by symmetric eigendecompositions in float64. Round-off below zero is clipped to 0.
    """
    mu1, mu2 = (torch.as_tensor(m, dtype=torch.float64).reshape(-1) for m in (mu1, mu2))  # [F]
    s1, s2 = (torch.as_tensor(s, dtype=torch.float64) for s in (s1, s2))  # [F, F]
    f = mu1.shape[0]
    for name, t, shape in (("mu2", mu2, (f,)), ("s1", s1, (f, f)), ("s2", s2, (f, f))):
        if tuple(t.shape) != shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {shape} to match mu1 of shape ({f},)")
    r1 = _psd_sqrt(s1)  # [F, F]
    inner = r1 @ s2 @ r1  # [F, F] symmetric PSD
    w = torch.linalg.eigvalsh((inner + inner.T) / 2)  # [F]
    tr_sqrt = _zero_round_off(w).sqrt().sum()
    d2 = (mu1 - mu2).pow(2).sum() + torch.trace(s1) + torch.trace(s2) - 2 * tr_sqrt
    return max(float(d2), 0.0)


def _moments(x: Tensor) -> tuple[Tensor, Tensor]:
    """Mean [F] and unbiased covariance [F, F] of float64 rows [N, F]."""
    mu = x.mean(dim=0)  # [F]
    xc = x - mu  # [N, F]
    return mu, xc.T @ xc / (x.shape[0] - 1)


def frechet_distance(real: Tensor, fake: Tensor) -> float:
    """Fréchet distance between Gaussians fitted to real [N, F] and fake [M, F] features (squared feature units).

    Heusel et al. 2017, eq. 6, with the sample means and unbiased covariances in float64. Biased
    upwards at small N, M (the sample covariances' noise adds to it), so compare only at equal n.
    """
    real = _check_features(real, "real")
    fake = _check_features(fake, "fake", features=real.shape[1])
    return frechet_distance_from_moments(*_moments(real), *_moments(fake))


# ----------------------------------------------------------------------------- KID


def _poly_kernel(x: Tensor, y: Tensor) -> Tensor:
    """k(x, y) = (x·y / F + 1)³ for rows [A, F], [B, F] -> [A, B]   (Bińkowski et al. 2018, KID's kernel)"""
    return (x @ y.T / x.shape[1] + 1) ** 3


def _mmd2_unbiased(x: Tensor, y: Tensor) -> float:
    """Unbiased MMD² between rows x [m, F] and y [n, F] with the cubic kernel   (Gretton et al. 2012, eq. 3).

    MMD²_u = Σ_{i≠j} k(x_i, x_j) / (m(m-1)) + Σ_{i≠j} k(y_i, y_j) / (n(n-1)) - 2 Σ_{i,j} k(x_i, y_j) / (mn)
    """
    m, n = x.shape[0], y.shape[0]
    kxx, kyy, kxy = _poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y)  # [m, m], [n, n], [m, n]
    sxx = kxx.sum() - kxx.diagonal().sum()
    syy = kyy.sum() - kyy.diagonal().sum()
    return float(sxx / (m * (m - 1)) + syy / (n * (n - 1)) - 2 * kxy.sum() / (m * n))


def kid_subsets(n_real: int, n_fake: int, subsets: int, subset_size: int, seed: int) -> list[tuple[Tensor, Tensor]]:
    """The (real rows, fake rows) index pairs KID averages over: each a random subset of ``subset_size``
    rows drawn without replacement, independently per subset, from a generator seeded with ``seed``."""
    g = torch.Generator().manual_seed(int(seed))
    return [
        (torch.randperm(n_real, generator=g)[:subset_size], torch.randperm(n_fake, generator=g)[:subset_size])
        for _ in range(subsets)
    ]


def kid(
    real: Tensor, fake: Tensor, subsets: int = KID_SUBSETS, subset_size: int | None = KID_SUBSET_SIZE, seed: int = 0
) -> tuple[float, float]:
    """Kernel distance (KID) of real [N, F] and fake [M, F] features: (mean, standard error), squared feature units.

    Bińkowski et al. 2018 ("Demystifying MMD GANs", KID): the unbiased MMD² with the cubic kernel (x·y/F + 1)³, averaged
    over ``subsets`` random subsets of ``subset_size`` real and as many fake rows (``None``:
    min(1000, N, M)). The standard error is the subsets' standard deviation / sqrt(subsets): the
    error of the subset average; where subsets overlap (subsets * subset_size > N or M) it leaves
    out the error of the finite sets themselves. KID is unbiased, so it can be slightly negative.
    """
    real = _check_features(real, "real")
    fake = _check_features(fake, "fake", features=real.shape[1])
    if isinstance(subsets, bool) or not isinstance(subsets, int) or subsets < 2:
        raise ValueError(f"subsets must be an int >= 2 (a standard error needs two), got {subsets!r}")
    limit = min(real.shape[0], fake.shape[0])
    if subset_size is None:
        subset_size = min(KID_SUBSET_SIZE, limit)
    if isinstance(subset_size, bool) or not isinstance(subset_size, int) or not 2 <= subset_size <= limit:
        raise ValueError(
            f"subset_size must be an int in [2, {limit}] (at most the smaller set: N={real.shape[0]}, M={fake.shape[0]}), "
            f"got {subset_size!r}"
        )
    values = torch.tensor(
        [_mmd2_unbiased(real[i], fake[j]) for i, j in kid_subsets(real.shape[0], fake.shape[0], subsets, subset_size, seed)],
        dtype=torch.float64,
    )  # [subsets]
    return float(values.mean()), float(values.std() / math.sqrt(subsets))


# ----------------------------------------------------------------------------- precision, recall, density, coverage


def _block_rows(columns: int) -> int:
    """Rows per block so that a [rows, columns] float64 block stays within _BLOCK_ENTRIES."""
    return max(1, _BLOCK_ENTRIES // max(columns, 1))


def _distances(a: Tensor, b: Tensor) -> Tensor:
    """Euclidean distances [A, B] between rows a [A, F] and b [B, F], in float64.

    Summed from the differences, not by matrix products (|a|² + |b|² - 2 a·b, six times faster on
    the CPU): duplicate rows are then exactly 0 apart, so ties at a k-NN radius are decided exactly.
    """
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")


def _knn_radii(x: Tensor, k: int) -> Tensor:
    """Distance from each row of x [N, F] to its k-th nearest other row -> [N], in blocks of rows.

    The (k+1)-th smallest distance including the row itself (distance 0), as Naeem et al.'s code does.
    """
    radii = torch.empty(x.shape[0], dtype=torch.float64)
    step = _block_rows(x.shape[0])
    for start in range(0, x.shape[0], step):
        d = _distances(x[start : start + step], x)  # [b, N]
        radii[start : start + step] = d.topk(k + 1, dim=1, largest=False).values[:, -1]
    return radii


def prdc(real: Tensor, fake: Tensor, k: int = PRDC_K) -> dict[str, float]:
    """Precision, recall, density and coverage of fake [M, F] against real [N, F] features (Naeem et al. 2020).

    With B(x, r) the open ball and NND_k the distance to the k-th nearest neighbour within the same set:
    precision = share of fakes inside some B(real_i, NND_k(real_i))        (Kynkäänniemi et al. 2019, sec. 2)
    recall    = share of reals inside some B(fake_j, NND_k(fake_j))        (Kynkäänniemi et al. 2019, sec. 2)
    density   = Σ_j #{i: fake_j in B(real_i, NND_k(real_i))} / (k M)      (Naeem et al. 2020, sec. 3)
    coverage  = share of reals whose ball B(real_i, NND_k(real_i)) holds a fake   (Naeem et al. 2020, sec. 3)

    "Inside" is a strict ``<``, as in Naeem et al.'s ``prdc`` package, whose matrix-product distances
    can differ from these exact ones by round-off where features are duplicated (0 apart here, ~1e-8
    there). The [N, M] distances are never held at once: they come in blocks of rows
    of at most 8 Mi float64 entries (64 MiB; 10,000 x 10,000 features of 128 add about 200 MB at the peak).
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    real = _check_features(real, "real", min_rows=k + 1)
    fake = _check_features(fake, "fake", min_rows=k + 1, features=real.shape[1])
    r_real, r_fake = _knn_radii(real, k), _knn_radii(fake, k)  # [N], [M]
    in_real_balls = torch.zeros(fake.shape[0], dtype=torch.int64)  # [M] real balls holding each fake
    recalled = torch.zeros(real.shape[0], dtype=torch.bool)  # [N]
    covered = torch.zeros(real.shape[0], dtype=torch.bool)  # [N]
    step = _block_rows(fake.shape[0])
    for start in range(0, real.shape[0], step):
        d = _distances(real[start : start + step], fake)  # [b, M]
        inside = d < r_real[start : start + step, None]  # [b, M] fake_j in B(real_i)
        in_real_balls += inside.sum(dim=0)
        covered[start : start + step] = inside.any(dim=1)
        recalled[start : start + step] = (d < r_fake[None, :]).any(dim=1)
    return {
        "precision": float((in_real_balls > 0).double().mean()),
        "recall": float(recalled.double().mean()),
        "density": float(in_real_balls.double().sum() / (k * fake.shape[0])),
        "coverage": float(covered.double().mean()),
    }


# ----------------------------------------------------------------------------- the classifier's labels


def label_entropy(probs: Tensor) -> dict[str, float]:
    """Entropies of class probabilities [M, C], in nats.

    mean_entropy = mean_j H(p(y|x_j)) (low: each sample looks like one class);
    marginal_entropy = H(mean_j p(y|x_j)) (high, up to log C: the samples spread over the classes).
    H(p) = -Σ_c p_c log p_c with 0 log 0 = 0   (Salimans et al. 2016, sec. 4: the two terms of the Inception score)
    """
    p = _check_probs(probs)  # [M, C]

    def entropy(q: Tensor) -> Tensor:  # [..., C] -> [...]
        return -torch.where(q > 0, q * q.log(), torch.zeros_like(q)).sum(dim=-1)

    return {"mean_entropy": float(entropy(p).mean()), "marginal_entropy": float(entropy(p.mean(dim=0)))}


def class_shares(probs: Tensor) -> Tensor:
    """Share of samples whose most probable class is c, for probs [M, C] -> [C] float64 summing to 1.

    Ties go to the lowest class index (``argmax``).
    """
    p = _check_probs(probs)  # [M, C]
    counts = torch.bincount(p.argmax(dim=1), minlength=p.shape[1])  # [C]
    return counts.double() / p.shape[0]


# ----------------------------------------------------------------------------- everything at once


def sample_quality(
    real_features: Tensor,
    fake_features: Tensor,
    fake_probs: Tensor | None = None,
    *,
    extractor: str = "unnamed features",
    k: int = PRDC_K,
    kid_subsets: int = KID_SUBSETS,
    kid_subset_size: int | None = None,
    seed: int = 0,
) -> dict:
    """Every sample-quality figure of fake [M, F] against real [N, F] features, with the sample sizes.

    Returns a dict: ``fd``, ``kid``, ``kid_se``, ``precision``, ``recall``, ``density``, ``coverage``,
    ``mean_entropy``, ``marginal_entropy`` (nats) and ``class_shares`` (a list of C floats) -- the last
    three None when ``fake_probs`` [M, C] is None -- and ``n_real``, ``n_fake``, ``feature_size``, ``k``,
    ``kid_subsets``, ``kid_subset_size`` and ``extractor`` (the features' name, e.g. "classifier
    trained on mnist, test accuracy 99.2%", to be shown with every figure).
    """
    real = _check_features(real_features, "real_features", min_rows=k + 1)
    fake = _check_features(fake_features, "fake_features", min_rows=k + 1, features=real.shape[1])
    if fake_probs is not None and (not isinstance(fake_probs, Tensor) or fake_probs.ndim != 2 or fake_probs.shape[0] != fake.shape[0]):
        raise ValueError(
            f"fake_probs must be a tensor [M, C] with M={fake.shape[0]} rows like fake_features, "
            f"got {type(fake_probs).__name__} {tuple(getattr(fake_probs, 'shape', ()))}"
        )
    subset_size = min(KID_SUBSET_SIZE, real.shape[0], fake.shape[0]) if kid_subset_size is None else kid_subset_size
    kid_mean, kid_se = kid(real, fake, kid_subsets, subset_size, seed)
    out = {
        "extractor": str(extractor),
        "n_real": real.shape[0],
        "n_fake": fake.shape[0],
        "feature_size": real.shape[1],
        "fd": frechet_distance(real, fake),
        "kid": kid_mean,
        "kid_se": kid_se,
        "kid_subsets": kid_subsets,
        "kid_subset_size": subset_size,
        "k": k,
        **prdc(real, fake, k),
        "mean_entropy": None,
        "marginal_entropy": None,
        "class_shares": None,
    }
    if fake_probs is not None:
        out.update(label_entropy(fake_probs), class_shares=class_shares(fake_probs).tolist())
    return out


def describe(result: dict, fd_name: str = "FD-classifier") -> str:
    """A few lines for people: each figure with its n and the features' name (never "FID")."""
    n = f"n_real={result['n_real']:,}, n_fake={result['n_fake']:,}"
    lines = [
        f"features: {result['extractor']} ({result['feature_size']} features)",
        f"{fd_name} {result['fd']:.4g} ({n})",
        f"KID {result['kid']:.4g} ± {result['kid_se']:.2g} (standard error; {result['kid_subsets']} subsets of "
        f"{result['kid_subset_size']:,}; {n})",
        f"precision {result['precision']:.3f}, recall {result['recall']:.3f}, density {result['density']:.3f}, "
        f"coverage {result['coverage']:.3f} (k={result['k']}; {n})",
    ]
    if result.get("mean_entropy") is not None:
        shares = ", ".join(f"{s:.3f}" for s in result["class_shares"])
        lines.append(
            f"label entropy: per sample {result['mean_entropy']:.3f} nats, marginal {result['marginal_entropy']:.3f} nats "
            f"(n_fake={result['n_fake']:,}); class shares [{shares}]"
        )
    else:
        lines.append("label entropy and class shares: not available (the features have no classifier)")
    return "\n".join(lines)
