"""Latent-space tools (PCA, the latent grid, posterior means, reconstructions, interpolation), each against
an independent reference: numpy, the standard library, or the model's own networks."""

import math
import statistics

import numpy as np
import pytest
import torch

from vaekit.latents import interpolate, latent_grid, pca, posterior_means, reconstruct

from helpers import SIZE, grey_images, rand, tiny


def numpy_pca(points):
    """Centered SVD: directions (rows, largest |component| positive), std along each."""
    x = points.double().numpy()
    xc = x - x.mean(0)
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    for i in range(len(vt)):
        if vt[i, np.argmax(np.abs(vt[i]))] < 0:
            vt[i] = -vt[i]
    return x.mean(0), vt, s / math.sqrt(len(x) - 1)


def test_pca_matches_numpy_svd():
    gen = torch.Generator().manual_seed(15)
    q, _ = torch.linalg.qr(torch.randn(4, 4, generator=gen, dtype=torch.float64))
    points = (torch.randn(300, 4, generator=gen, dtype=torch.float64) * torch.tensor([3.0, 1.5, 0.6, 0.2])) @ q.T
    points = (points + torch.tensor([1.0, -2.0, 0.5, 4.0])).float()
    center, dirs, std = pca(points, 3)
    assert center.shape == (4,) and dirs.shape == (3, 4) and std.shape == (3,)
    c_ref, d_ref, s_ref = numpy_pca(points)
    np.testing.assert_allclose(center.numpy(), c_ref, rtol=1e-5, atol=1e-5)
    # equal up to sign, and the sign is the one that makes the largest |component| positive
    np.testing.assert_allclose(np.abs(np.sum(dirs.numpy() * d_ref[:3], axis=1)), 1.0, atol=1e-5)
    np.testing.assert_allclose(dirs.numpy(), d_ref[:3], atol=1e-5)
    d = dirs.double().numpy()
    assert (d[np.arange(3), np.abs(d).argmax(1)] > 0).all()
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(std.numpy(), s_ref[:3], rtol=1e-5)
    # the std is the sample std of the projections
    proj = (points.double().numpy() - c_ref) @ d.T
    np.testing.assert_allclose(std.numpy(), proj.std(axis=0, ddof=1), rtol=1e-5)
    assert (np.diff(std.numpy()) < 0).all()


def test_pca_pads_missing_directions_with_zeros():
    points = rand(50, 2, seed=16).float()
    center, dirs, std = pca(points, 3)
    assert dirs.shape == (3, 2) and std.shape == (3,)
    assert torch.equal(dirs[2], torch.zeros(2)) and std[2].item() == 0.0
    _, d_ref, s_ref = numpy_pca(points)
    np.testing.assert_allclose(dirs[:2].numpy(), d_ref, atol=1e-5)
    np.testing.assert_allclose(std[:2].numpy(), s_ref, rtol=1e-5)


def decode_points(model, z):
    """mean images [P, C, H, W] of latents [P, K], in eval mode."""
    with torch.no_grad():
        return model.eval().mean_image(torch.as_tensor(np.asarray(z), dtype=torch.float32)[:, None, :])[:, 0]


@pytest.mark.parametrize("likelihood", ["gaussian", "bernoulli"])
def test_latent_grid_k2_decodes_the_prior_quantiles(likelihood):
    model = tiny(likelihood=likelihood)
    n = 5
    images, what = latent_grid(model, n)
    assert images.shape == (n * n, 1, SIZE, SIZE) and isinstance(what, str) and what
    q = [statistics.NormalDist().inv_cdf((i + 0.5) / n) for i in range(n)]  # increasing
    # cell (row r, col c): z_0 = q[c] (left = smallest), z_1 = q[n-1-r] (top = largest)
    cells = {(0, 0): (q[0], q[-1]), (n - 1, n - 1): (q[-1], q[0]), (1, 3): (q[3], q[n - 2]), (2, 2): (q[2], q[2])}
    ref = decode_points(model, [z for z in cells.values()])
    for j, (r, c) in enumerate(cells):
        torch.testing.assert_close(images[r * n + c], ref[j], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(images[0], images[-1])
    if likelihood == "bernoulli":
        assert ((images > 0) & (images < 1)).all()


def test_latent_grid_k3_is_centered_on_the_mean_of_means():
    model = tiny(K=3)
    gen = torch.Generator().manual_seed(17)
    means = torch.randn(40, 3, generator=gen) * torch.tensor([2.0, 1.0, 0.3]) + torch.tensor([0.5, -1.0, 2.0])
    n, span = 5, 2.0
    images, _ = latent_grid(model, n, means=means, span=span)
    assert images.shape == (n * n, 1, SIZE, SIZE)
    c_ref, d_ref, s_ref = numpy_pca(means)
    torch.testing.assert_close(images[n * n // 2], decode_points(model, [c_ref])[0], rtol=1e-5, atol=1e-5)
    # top-left: +span std along the 2nd direction (rows go down it), -span std along the 1st (columns)
    top_left = c_ref + span * s_ref[1] * d_ref[1] - span * s_ref[0] * d_ref[0]
    torch.testing.assert_close(images[0], decode_points(model, [top_left])[0], rtol=1e-4, atol=1e-4)


def test_latent_grid_k3_needs_means():
    with pytest.raises(ValueError, match="means"):
        latent_grid(tiny(K=3), 3)


@pytest.mark.parametrize("posterior", ["isotropic", "diagonal"])
def test_posterior_means_and_reconstruct(posterior):
    model = tiny(K=3, posterior=posterior, likelihood="bernoulli")
    model.train()
    x = grey_images(7, seed=18)
    got = posterior_means(model, x, batch_size=3)  # chunks of 3, 3 and 1
    with torch.no_grad():
        ref = model.encoder(x)[:, :3]
    assert got.shape == (7, 3)
    torch.testing.assert_close(got, ref)
    recon = reconstruct(model, x)
    with torch.no_grad():
        logits = model.decoder(ref)  # [M, 1, H, W]
    torch.testing.assert_close(recon, torch.sigmoid(logits), rtol=1e-5, atol=1e-6)
    assert model.training  # mode restored


def test_interpolate_endpoints_and_midpoint():
    model = tiny(K=2)
    a, b = grey_images(3, seed=19), grey_images(3, seed=20)
    strips = interpolate(model, a, b, steps=5)
    assert strips.shape == (3, 5, 1, SIZE, SIZE)
    with torch.no_grad():
        za, zb = model.encoder(a)[:, :2], model.encoder(b)[:, :2]
    torch.testing.assert_close(strips[:, 0], decode_points(model, za), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(strips[:, -1], decode_points(model, zb), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(strips[:, 2], decode_points(model, (za + zb) / 2), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(strips[:, 0], model.mean_image(posterior_means(model, a)[:, None])[:, 0].detach())


@pytest.mark.parametrize(
    "a_shape,b_shape,steps", [((2, 1, SIZE, SIZE), (3, 1, SIZE, SIZE), 4), ((2, 1, SIZE, SIZE), (2, 1, SIZE, SIZE), 1)]
)
def test_interpolate_rejects_bad_shapes_and_steps(a_shape, b_shape, steps):
    with pytest.raises(ValueError, match="steps" if steps < 2 else "same shape"):
        interpolate(tiny(), torch.rand(a_shape), torch.rand(b_shape), steps=steps)
