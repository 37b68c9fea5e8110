"""The latent Gaussian mixture (vaekit.gmm): known answers, torch.distributions as the reference."""

import math

import pytest
import torch
from torch.distributions import Categorical, MixtureSameFamily, MultivariateNormal

from vaekit.checkpoint import CheckpointError
from vaekit.gmm import GMM, fit_gmm, load_gmm, save_gmm, standard_normal_log_prob

TRUE_W = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
TRUE_MU = torch.tensor([[-3.0, 0.0], [2.0, 2.5], [2.5, -2.5]], dtype=torch.float64)
TRUE_COV = torch.tensor([
    [[0.6, 0.2], [0.2, 0.4]],
    [[0.3, -0.1], [-0.1, 0.5]],
    [[0.8, 0.0], [0.0, 0.2]],
], dtype=torch.float64)


def _reference(gmm: GMM) -> MixtureSameFamily:
    return MixtureSameFamily(Categorical(probs=gmm.weights), MultivariateNormal(gmm.means, covariance_matrix=gmm.covariances))


@pytest.fixture(scope="module")
def data():
    gen = torch.Generator().manual_seed(7)
    truth = GMM(TRUE_W, TRUE_MU, TRUE_COV)
    return truth.sample(20_000, gen)  # [20000, 2]


@pytest.fixture(scope="module")
def fitted(data):
    return fit_gmm(data, components=3, seed=0)


def test_fit_recovers_a_known_mixture(fitted):
    order = torch.cdist(TRUE_MU, fitted.means).argmin(dim=1)  # the fitted component nearest each true one
    assert sorted(order.tolist()) == [0, 1, 2]
    w, mu, cov = fitted.weights[order], fitted.means[order], fitted.covariances[order]
    assert torch.allclose(w, TRUE_W, atol=0.015), w
    assert torch.allclose(mu, TRUE_MU, atol=0.05), mu
    assert torch.allclose(cov, TRUE_COV, atol=0.05), cov
    assert fitted.info["converged"] and fitted.info["components"] == 3


def test_log_prob_matches_torch_distributions_and_brute_force(fitted, data):
    x = torch.cat([data[:500], torch.tensor([[0.0, 0.0], [10.0, -10.0], [-4.0, 4.0]], dtype=torch.float64)])
    ours = fitted.log_prob(x)
    assert ours.dtype == torch.float64 and ours.shape == (x.shape[0],)
    assert torch.allclose(ours, _reference(fitted).log_prob(x), rtol=0, atol=1e-9)
    # brute force: log sum_c w_c N(x; mu_c, Sigma_c), each density written out
    brute = torch.zeros(x.shape[0], dtype=torch.float64)
    for c in range(fitted.components):
        s = fitted.covariances[c]
        d = x - fitted.means[c]
        maha = (d @ torch.linalg.inv(s) * d).sum(dim=1)
        brute += fitted.weights[c] * torch.exp(-0.5 * maha) / torch.sqrt((2 * math.pi) ** 2 * torch.linalg.det(s))
    assert torch.allclose(ours, torch.log(brute), rtol=0, atol=1e-9)


def test_log_prob_in_higher_dimension_matches_torch():
    gen = torch.Generator().manual_seed(3)
    k, c = 6, 4
    a = torch.randn(c, k, k, generator=gen, dtype=torch.float64)
    gmm = GMM(torch.softmax(torch.randn(c, generator=gen, dtype=torch.float64), 0), torch.randn(c, k, generator=gen, dtype=torch.float64) * 3,
              a @ a.transpose(1, 2) + 0.1 * torch.eye(k, dtype=torch.float64))
    x = torch.randn(300, k, generator=gen, dtype=torch.float64) * 3
    assert torch.allclose(gmm.log_prob(x), _reference(gmm).log_prob(x), rtol=0, atol=1e-9)
    ref = MultivariateNormal(torch.zeros(k, dtype=torch.float64), torch.eye(k, dtype=torch.float64))
    assert torch.allclose(standard_normal_log_prob(x), ref.log_prob(x), atol=1e-9)


def test_sampling_matches_the_moments():
    truth = GMM(TRUE_W, TRUE_MU, TRUE_COV)
    z = truth.sample(200_000, torch.Generator().manual_seed(1))
    mean = (TRUE_W[:, None] * TRUE_MU).sum(0)
    second = (TRUE_W[:, None, None] * (TRUE_COV + TRUE_MU[:, :, None] * TRUE_MU[:, None, :])).sum(0)
    cov = second - mean[:, None] * mean[None, :]
    assert torch.allclose(z.mean(0), mean, atol=0.02)
    assert torch.allclose(torch.cov(z.T), cov, atol=0.05)
    # and each draw lands in its component's region in the right proportion
    nearest = torch.cdist(z, TRUE_MU).argmin(dim=1)
    assert torch.allclose(torch.bincount(nearest, minlength=3).double() / len(z), TRUE_W, atol=0.01)


def test_same_seed_same_fit_and_different_seed_runs(data):
    a = fit_gmm(data[:1500], components=5, seed=11, iters=60)
    b = fit_gmm(data[:1500], components=5, seed=11, iters=60)
    for key in ("weights", "means", "covariances"):
        assert torch.equal(getattr(a, key), getattr(b, key))
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(a.sample(10, g1), b.sample(10, g2))
    threads = torch.get_num_threads()
    torch.set_num_threads(2 if threads == 1 else 1)  # the fit runs on one thread whatever the caller set
    try:
        d = fit_gmm(data[:1500], components=5, seed=11, iters=60)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(a.means, d.means) and torch.equal(a.covariances, d.covariances)
    assert torch.get_num_threads() == threads
    c = fit_gmm(data[:1500], components=5, seed=12, iters=60)
    assert c.weights.shape == (5,)


def test_fit_beats_the_standard_normal_on_held_out_points(data):
    gmm = fit_gmm(data[:10_000], components=3, seed=0)
    held_out = data[10_000:]
    assert gmm.log_prob(held_out).mean() > standard_normal_log_prob(held_out).mean() + 1.0


def test_save_and_load_round_trip(tmp_path, fitted):
    path = tmp_path / "gmm.safetensors"
    save_gmm(path, fitted)
    back = load_gmm(path)
    for key in ("weights", "means", "covariances"):
        assert torch.equal(getattr(back, key), getattr(fitted, key))
    assert back.info == fitted.info
    (tmp_path / "bad.safetensors").write_bytes(b"nope")
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        load_gmm(tmp_path / "bad.safetensors")


def test_bad_arguments_are_refused():
    x = torch.randn(5, 2)
    with pytest.raises(ValueError, match="components"):
        fit_gmm(x, components=0)
    with pytest.raises(ValueError, match="more than the 5 points"):
        fit_gmm(x, components=6)
    with pytest.raises(ValueError, match="finite"):
        fit_gmm(torch.tensor([[0.0, float("nan")], [1.0, 1.0]]), components=1)
    # duplicated points and a component per point: the ridge keeps every covariance positive definite
    g = fit_gmm(torch.zeros(4, 3), components=2)
    assert torch.isfinite(g.log_prob(torch.zeros(1, 3))).all()


# ---------------------------------------------------------------- vaekit sample --sampler gmm, on a tiny run


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_dataset_dir):
    from vaekit.cli import main

    out = tmp_path_factory.mktemp("runs") / "tiny-gmm"
    args = ["train", "--dataset", str(tiny_dataset_dir), "--num-filters", "4", "--epochs", "1", "--batch-size", "64",
            "--eval-samples", "1", "--seed", "2", "--no-progress", "--out", str(out)]
    assert main(args) == 0
    return out


def test_cli_sample_gmm_fits_saves_measures_and_reports(tiny_run, capsys):
    import json

    from vaekit import load_dataset, load_run
    from vaekit.cli import main
    from vaekit.latents import posterior_means

    capsys.readouterr()
    assert main(["sample", str(tiny_run), "--sampler", "gmm", "--components", "3", "--n", "16"]) == 0
    out = capsys.readouterr().out
    assert "GMM" in out and "N(0, I)" in out and "gain" in out and "samples_gmm.png" in out
    for name in ("gmm.safetensors", "gmm.json", "samples_gmm.png"):
        assert (tiny_run / name).is_file(), name
    info = json.loads((tiny_run / "gmm.json").read_text())
    assert info["components"] == 3 and info["train_points"] == 256 and info["test_points"] == 64
    # the numbers are what they say: mean log-density of the test posterior means, GMM fit on train
    model, meta = load_run(tiny_run)
    data = load_dataset(meta["train"]["dataset"])
    test_means = posterior_means(model, data.test_images)
    gmm = load_gmm(tiny_run / "gmm.safetensors")
    assert info["test_loglik_gmm"] == pytest.approx(float(gmm.log_prob(test_means).mean()), abs=1e-9)
    assert info["test_loglik_prior"] == pytest.approx(float(standard_normal_log_prob(test_means).mean()), abs=1e-9)
    again = fit_gmm(posterior_means(model, data.train_images), components=3, seed=0)
    assert torch.equal(again.means, gmm.means)  # fit on the training split's posterior means, seed 0
    html = (tiny_run / "report.html").read_text()
    assert "samples_gmm.png" in html and "under the GMM" in html and 'id="vx-sample-gmm"' in html
    # a second call with the same components reuses the saved GMM; another count refits
    before = (tiny_run / "gmm.safetensors").read_bytes()
    assert main(["sample", str(tiny_run), "--sampler", "gmm", "--components", "3", "--n", "4", "--out", str(tiny_run / "x.png")]) == 0
    assert (tiny_run / "gmm.safetensors").read_bytes() == before
    assert main(["sample", str(tiny_run), "--sampler", "gmm", "--components", "2", "--n", "4", "--out", str(tiny_run / "y.png")]) == 0
    assert load_gmm(tiny_run / "gmm.safetensors").components == 2


def test_report_command_includes_the_explorer(tiny_run, tmp_path, capsys):
    from vaekit.cli import main

    out = tmp_path / "r.html"
    assert main(["report", str(tiny_run), "--out", str(out)]) == 0
    text = out.read_text()
    assert 'id="vx-plane"' in text and "script-src 'sha256-" in text
