"""Sample-quality metrics (vaekit.sample_quality) against closed forms, torchmetrics, prdc and hand-computed values."""

import math

import numpy as np
import pytest
import torch

from vaekit import sample_quality as sq
from vaekit.sample_quality import (
    class_shares,
    describe,
    frechet_distance,
    frechet_distance_from_moments,
    kid,
    kid_subsets,
    label_entropy,
    prdc,
    sample_quality,
)

torchmetrics_fid = pytest.importorskip("torchmetrics.image.fid")
torchmetrics_kid = pytest.importorskip("torchmetrics.image.kid")
prdc_reference = pytest.importorskip("prdc")
scipy_linalg = pytest.importorskip("scipy.linalg")


def _spd(f, seed, scale=1.0):
    """A random symmetric positive definite matrix [F, F] (float64)."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(f, f, generator=g, dtype=torch.float64)
    return scale * (a @ a.T / f + 0.1 * torch.eye(f, dtype=torch.float64))


def _reference_fd(mu1, s1, mu2, s2):
    """torchmetrics' FID formula: tr sqrt(s1 s2) from the general (non-symmetric) eigenvalues of s1 s2."""
    return float(torchmetrics_fid._compute_fid(mu1, s1, mu2, s2))


# ----------------------------------------------------------------------------- Fréchet distance


def test_fd_of_moments_matches_hand_closed_forms():
    # 1-d: (m1 - m2)^2 + (s1 - s2)^2
    one = frechet_distance_from_moments(torch.tensor([1.0]), torch.tensor([[4.0]]), torch.tensor([-2.0]), torch.tensor([[9.0]]))
    assert one == pytest.approx(3.0**2 + (2.0 - 3.0) ** 2, abs=1e-12)
    # commuting (diagonal) covariances: ||m1 - m2||^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2
    a, b = torch.tensor([1.0, 4.0, 0.25, 9.0], dtype=torch.float64), torch.tensor([2.0, 1.0, 1.0, 16.0], dtype=torch.float64)
    mu1, mu2 = torch.tensor([0.0, 1.0, 2.0, 3.0], dtype=torch.float64), torch.tensor([1.0, 1.0, 0.0, 3.0], dtype=torch.float64)
    expected = float((mu1 - mu2).pow(2).sum() + (a.sqrt() - b.sqrt()).pow(2).sum())
    assert frechet_distance_from_moments(mu1, torch.diag(a), mu2, torch.diag(b)) == pytest.approx(expected, abs=1e-12)
    # identity against s2 = R diag(l) R^T: sum_i (1 - sqrt(l_i))^2, whatever the rotation
    theta = 0.7
    r = torch.tensor([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]], dtype=torch.float64)
    lam = torch.tensor([0.5, 3.0], dtype=torch.float64)
    s2 = r @ torch.diag(lam) @ r.T
    z = torch.zeros(2, dtype=torch.float64)
    got = frechet_distance_from_moments(z, torch.eye(2, dtype=torch.float64), z, s2)
    assert got == pytest.approx(float((1 - lam.sqrt()).pow(2).sum()), abs=1e-12)


@pytest.mark.parametrize("f", [2, 7, 40])
def test_fd_of_moments_matches_torchmetrics_and_scipy_sqrtm(f):
    g = torch.Generator().manual_seed(f)
    mu1, mu2 = torch.randn(f, generator=g, dtype=torch.float64), torch.randn(f, generator=g, dtype=torch.float64)
    s1, s2 = _spd(f, 1), _spd(f, 2, scale=3.0)
    ours = frechet_distance_from_moments(mu1, s1, mu2, s2)
    assert ours == pytest.approx(_reference_fd(mu1, s1, mu2, s2), rel=1e-9)
    # Heusel et al.'s reference code: scipy's Schur-based sqrtm of the product s1 s2
    covmean = scipy_linalg.sqrtm(s1.numpy() @ s2.numpy()).real
    heusel = float((mu1 - mu2).pow(2).sum()) + np.trace(s1.numpy()) + np.trace(s2.numpy()) - 2 * np.trace(covmean)
    assert ours == pytest.approx(heusel, rel=1e-8)


def test_fd_of_samples_is_within_sampling_error_of_the_closed_form():
    f, n, repeats = 3, 20_000, 10
    mu1, mu2 = torch.tensor([0.0, 1.0, -1.0], dtype=torch.float64), torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64)
    s1, s2 = _spd(f, 3), _spd(f, 4, scale=2.0)
    truth = _reference_fd(mu1, s1, mu2, s2)
    # the sample means add (tr s1 + tr s2) / n to E||m1 - m2||^2; the covariances' error is smaller than that
    bias = float(torch.trace(s1) + torch.trace(s2)) / n
    p = torch.distributions.MultivariateNormal(mu1, s1)
    q = torch.distributions.MultivariateNormal(mu2, s2)
    torch.manual_seed(0)
    estimates = torch.tensor([frechet_distance(p.sample((n,)), q.sample((n,))) for _ in range(repeats)])
    se = float(estimates.std()) / math.sqrt(repeats)
    assert abs(float(estimates.mean()) - (truth + bias)) < 4 * se + 2 * bias, (estimates, truth)
    assert float(estimates.std()) < 0.05 * truth  # each single estimate is close too


def test_fd_is_symmetric_and_zero_for_identical_sets():
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(500, 16, generator=g), torch.randn(400, 16, generator=g) * 1.5 + 0.3
    assert frechet_distance(x, y) == pytest.approx(frechet_distance(y, x), rel=1e-10)
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(x, y) > 1.0


def test_fd_with_singular_covariances_equals_the_fd_of_the_live_subspace():
    # 3-d data embedded in 50 dims by an orthonormal map (a rank-3 covariance, as from dead units or
    # N < F) has the 3-d FD: FD is invariant under isometries; the reference runs on the 3-d moments
    g = torch.Generator().manual_seed(6)
    x = torch.randn(30, 3, generator=g, dtype=torch.float64) @ _spd(3, 7)
    y = torch.randn(40, 3, generator=g, dtype=torch.float64) + torch.tensor([1.0, 0.0, -0.5], dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(50, 3, generator=g, dtype=torch.float64))  # [50, 3] orthonormal columns
    embedded = frechet_distance(x @ q.T, y @ q.T)  # covariances [50, 50] of rank 3
    expected = _reference_fd(x.mean(0), torch.cov(x.T), y.mean(0), torch.cov(y.T))
    assert embedded == pytest.approx(expected, rel=1e-8)
    # dead units: constant columns in both sets
    pad = torch.zeros(30, 5, dtype=torch.float64), torch.zeros(40, 5, dtype=torch.float64)
    assert frechet_distance(torch.cat([x, pad[0]], 1), torch.cat([y, pad[1]], 1)) == pytest.approx(expected, rel=1e-8)


# ----------------------------------------------------------------------------- KID


def _features(seed, n, f, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    # positive and skewed like image features, without the exact ties (duplicate rows) that a ReLU makes
    return torch.nn.functional.softplus(torch.randn(n, f, generator=g, dtype=torch.float64)) + shift


@pytest.mark.filterwarnings("ignore:Metric `Kernel Inception Distance` will save all extracted features")
def test_kid_matches_torchmetrics_on_the_same_subsets():
    real, fake = _features(1, 300, 16), _features(2, 250, 16, shift=0.2)
    metric = torchmetrics_kid.KernelInceptionDistance(feature=torch.nn.Identity(), subsets=20, subset_size=100)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    torch.manual_seed(123)  # torchmetrics draws its subsets from the global generator, in the same order as kid_subsets
    ref_mean, ref_std = metric.compute()
    mean, se = kid(real, fake, subsets=20, subset_size=100, seed=123)
    assert mean == pytest.approx(float(ref_mean), rel=1e-9)
    # torchmetrics returns the population std over subsets; ours is the standard error std_(n-1) / sqrt(subsets)
    assert se * math.sqrt(20) * math.sqrt(19 / 20) == pytest.approx(float(ref_std), rel=1e-6)
    assert mean > 4 * se  # different distributions: clearly positive


def test_kid_subsets_average_torchmetrics_poly_mmd():
    real, fake = _features(3, 200, 8), _features(4, 180, 8)
    pairs = kid_subsets(200, 180, subsets=5, subset_size=60, seed=9)
    assert all(len(i) == 60 and len(set(i.tolist())) == 60 for pair in pairs for i in pair)
    reference = [float(torchmetrics_kid.poly_mmd(real[i], fake[j])) for i, j in pairs]
    mean, se = kid(real, fake, subsets=5, subset_size=60, seed=9)
    assert mean == pytest.approx(np.mean(reference), rel=1e-9, abs=1e-12)
    assert se == pytest.approx(np.std(reference, ddof=1) / math.sqrt(5), rel=1e-6)
    # the same distribution: KID is unbiased, so it is near zero (within a few standard errors)
    assert abs(mean) < 4 * se + 1e-3


def test_kid_on_all_rows_is_the_full_unbiased_mmd():
    real, fake = _features(5, 50, 4), _features(6, 50, 4, shift=0.5)
    mean, se = kid(real, fake, subsets=3, subset_size=50, seed=0)  # every subset is the whole set, permuted
    assert mean == pytest.approx(float(torchmetrics_kid.poly_mmd(real, fake)), rel=1e-10)
    assert se == pytest.approx(0.0, abs=1e-10)


# ----------------------------------------------------------------------------- PRDC


@pytest.mark.parametrize("shift", [0.0, 0.7])
def test_prdc_matches_the_prdc_package(shift, capsys):
    real, fake = _features(7, 300, 8), _features(8, 260, 8, shift=shift)
    ours = prdc(real, fake, k=5)
    ref = prdc_reference.compute_prdc(real.numpy(), fake.numpy(), nearest_k=5)
    for key in ("precision", "recall", "density", "coverage"):
        assert ours[key] == pytest.approx(float(ref[key]), abs=1e-12), key
    if shift:
        assert ours["precision"] < 0.9 and ours["coverage"] < 0.9


def test_prdc_in_small_blocks_matches_the_prdc_package(monkeypatch, capsys):
    blocks = []
    real_distances = sq._distances

    def recording(a, b):
        blocks.append(a.shape[0] * b.shape[0])
        return real_distances(a, b)

    monkeypatch.setattr(sq, "_BLOCK_ENTRIES", 1000)
    monkeypatch.setattr(sq, "_distances", recording)
    real, fake = _features(9, 170, 6), _features(10, 130, 6, shift=0.3)
    ours = prdc(real, fake, k=3)
    ref = prdc_reference.compute_prdc(real.numpy(), fake.numpy(), nearest_k=3)
    for key in ("precision", "recall", "density", "coverage"):
        assert ours[key] == pytest.approx(float(ref[key]), abs=1e-12), key
    assert len(blocks) > 3 and max(blocks) <= 1000  # the [N, M] distances were never held at once


def test_prdc_of_a_set_against_itself_with_duplicates_brute_force():
    x = _features(11, 100, 5)
    x = torch.cat([x, x[:4], x[:2]])  # [106, 5] with duplicated rows: ties at distance exactly 0
    # every point lies in its own ball (distance 0 < its k-NN radius): all four are 1 except density,
    # which counts, per point, the reals whose balls hold it, over k; that count is brute-forced here
    out = prdc(x, x, k=5)
    assert out["precision"] == out["recall"] == out["coverage"] == 1.0
    d = (x[:, None, :] - x[None, :, :]).pow(2).sum(dim=-1).sqrt()  # [106, 106], exactly 0 between duplicates
    radii = d.sort(dim=1).values[:, 5]  # [N] 5th nearest other point (column 0 is the point itself)
    brute = sum(int(d[i, j] < radii[i]) for i in range(106) for j in range(106)) / (5 * 106)
    assert out["density"] == pytest.approx(brute, abs=1e-12)
    assert brute != 1.0  # a duplicate's ball holds its copies too: the ties at 0 count


# ----------------------------------------------------------------------------- label statistics


def test_label_entropy_and_class_shares_by_hand():
    probs = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    out = label_entropy(probs)
    assert out["mean_entropy"] == pytest.approx(math.log(2) / 2, abs=1e-12)
    assert out["marginal_entropy"] == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)), abs=1e-12)
    uniform = label_entropy(torch.full((4, 10), 0.1))
    assert uniform["mean_entropy"] == pytest.approx(math.log(10), abs=1e-6)
    p = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.6, 0.3, 0.1], [0.1, 0.2, 0.7]])
    assert class_shares(p).tolist() == pytest.approx([0.5, 0.25, 0.25])
    assert class_shares(torch.tensor([[0.2, 0.8, 0.0]])).tolist() == [0.0, 1.0, 0.0]


# ----------------------------------------------------------------------------- everything at once


def test_sample_quality_reports_every_figure_with_its_n(capsys):
    real, fake = _features(12, 120, 8), _features(13, 90, 8, shift=0.2)
    probs = torch.softmax(_features(14, 90, 3), dim=1)
    out = sample_quality(real, fake, probs, extractor="test features", kid_subsets=10, seed=1)
    assert out["n_real"] == 120 and out["n_fake"] == 90 and out["feature_size"] == 8 and out["extractor"] == "test features"
    assert out["kid_subset_size"] == 90 and out["k"] == 5
    ref = prdc_reference.compute_prdc(real.numpy(), fake.numpy(), nearest_k=5)
    assert all(out[key] == pytest.approx(float(ref[key]), abs=1e-12) for key in ref)
    fd_ref = _reference_fd(real.mean(0), torch.cov(real.T), fake.mean(0), torch.cov(fake.T))
    assert out["fd"] == pytest.approx(fd_ref, rel=1e-8)
    assert len(out["class_shares"]) == 3 and sum(out["class_shares"]) == pytest.approx(1.0)
    text = describe(out)
    assert "FD-classifier" in text and "FID" not in text and "n_real=120, n_fake=90" in text and "test features" in text
    no_labels = sample_quality(real, fake, None, extractor="random conv features (no labels, seed 0)", kid_subsets=10)
    assert no_labels["mean_entropy"] is None and no_labels["class_shares"] is None
    assert "not available" in describe(no_labels, fd_name="FD-random")


# ----------------------------------------------------------------------------- bad input


def test_bad_input_raises_clear_value_errors():
    x = _features(15, 20, 4)
    with pytest.raises(ValueError, match=r"real must be a 2-d tensor .* got shape \(20,\)"):
        frechet_distance(x[:, 0], x)
    with pytest.raises(ValueError, match=r"fake has 3 features .* expected 4"):
        frechet_distance(x, x[:, :3])
    with pytest.raises(ValueError, match=r"real needs at least 2 rows"):
        frechet_distance(x[:1], x)
    with pytest.raises(ValueError, match=r"fake needs at least 6 rows .* got shape \(5, 4\)"):
        prdc(x, x[:5], k=5)
    with pytest.raises(ValueError, match=r"real_features needs at least 6 rows"):
        sample_quality(x[:4], x)
    with pytest.raises(ValueError, match=r"subset_size must be an int in \[2, 20\]"):
        kid(x, x, subsets=10, subset_size=50)
    with pytest.raises(ValueError, match=r"non-finite"):
        frechet_distance(torch.cat([x, torch.full((1, 4), float("nan"))]), x)
    with pytest.raises(ValueError, match=r"each row of probs .* must sum to 1"):
        label_entropy(torch.tensor([[0.5, 0.4]]))
    with pytest.raises(ValueError, match=r"fake_probs must be a tensor \[M, C\] with M=20"):
        sample_quality(x, x, torch.full((19, 2), 0.5))
    with pytest.raises(ValueError, match=r"s2 has shape \(3, 3\), expected \(2, 2\)"):
        frechet_distance_from_moments(torch.zeros(2), torch.eye(2), torch.zeros(2), torch.eye(3))
