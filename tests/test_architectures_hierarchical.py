"""--arch hvae: Burda et al.'s two-layer network by default (the paper's numbers), the latent-variable interface
against torch.distributions, the exact log p(x) of a linear-Gaussian two-layer model recovered by the importance-
sampled estimator, ancestral samples against that model's closed-form moments, the top layer's view (posterior
means, mean images, the explorer's decoder run in Node), and train -> eval -> sample -> report end to end."""

from __future__ import annotations

import json
import math
import shutil
import subprocess

import pytest
import torch
from torch import nn
from torch.distributions import MultivariateNormal, Normal

from vaekit import latent_stats, log_likelihood, posterior_means
from vaekit.architectures.hierarchical import HierarchicalVAE
from vaekit.cli import main
from vaekit.config import ModelConfig
from vaekit.explorer import explorer_html
from vaekit.model import build_model
from vaekit.objectives import make_objective
from vaekit.runfolder import load_run


def hvae(latent_dim=2, lower="3", hidden="5;4", posterior="diagonal", likelihood="bernoulli", shape=(1, 4, 4), seed=0, **options):
    torch.manual_seed(seed)
    cfg = ModelConfig(arch="hvae", latent_dim=latent_dim, likelihood=likelihood, posterior=posterior,
                      options={"lower_layers": lower, "hidden": hidden, **options})
    return build_model(cfg, shape).double()


def linears(module):
    return [(m.in_features, m.out_features) for m in module.modules() if isinstance(m, nn.Linear)]


def test_defaults_are_burda_et_als_two_layer_network():
    """Sec. 5.1: stochastic layers of 100 and 50 units; two deterministic layers of 200 units between x and h1 and
    two of 100 between h1 and h2; tanh; diagonal Gaussians (a mean and an exp'd std each); the generative side mirrors."""
    model = build_model(ModelConfig(arch="hvae", latent_dim=50, likelihood="bernoulli", posterior="diagonal"), (1, 28, 28))
    assert isinstance(model, HierarchicalVAE) and model.layer_sizes == (100, 50) and model.latent_dim == 150 and model.K == 50
    assert linears(model.encoder) == [(784, 200), (200, 200), (200, 200)]  # q(z1|x): 100 means and 100 log stds
    assert linears(model.q_nets[0]) == [(100, 100), (100, 100), (100, 100)]  # q(z2|z1): 50 + 50
    p = model.p_layers[0]  # p(z1|z2)
    assert linears(p.trunk) == [(50, 100), (100, 100)] and linears(p.mean) == [(100, 100)] and linears(p.log_std) == [(100, 100)]
    assert linears(model.decoder) == [(100, 200), (200, 200), (200, 784)]  # p(x|z1): Bernoulli logits
    kinds = {type(m) for m in model.modules() if not list(m.children()) and m is not model.prior} - {nn.Linear, nn.Flatten, nn.Unflatten}
    assert kinds == {nn.Tanh}
    assert sum(p.numel() for p in model.parameters()) == (
        784 * 200 + 200 + 200 * 200 + 200 + 200 * 200 + 200  # q(z1|x)
        + 3 * (100 * 100 + 100)  # q(z2|z1)
        + 50 * 100 + 100 + 100 * 100 + 100 + 2 * (100 * 100 + 100)  # p(z1|z2)
        + 100 * 200 + 200 + 200 * 200 + 200 + 200 * 784 + 784  # p(x|z1)
        + 1  # log_sig_x (unused by the Bernoulli likelihood)
    )


@pytest.mark.parametrize("options,match", [
    ({"lower_layers": "100,x"}, "lower_layers must be comma-separated positive layer sizes"),
    ({"lower_layers": "0"}, "lower_layers must be comma-separated positive layer sizes"),
    ({"hidden": "200;100;50"}, "hidden has 3 groups of widths .* but the model has 2 stochastic layers"),
    ({"hidden": "200,-1;100"}, "hidden must be comma-separated positive widths"),
])
def test_bad_options_are_refused_naming_them(options, match):
    with pytest.raises(ValueError, match=match):
        build_model(ModelConfig(arch="hvae", latent_dim=5, options=options), (1, 28, 28))


def gaussian(phi, k, posterior):
    """(mean, std) of a Gaussian from its packed parameters [M, P], written out for the test."""
    if posterior == "diagonal":
        return phi[:, :k], phi[:, k:].exp()
    return phi[:, :k], phi[:, k:].exp().expand(-1, k)


@pytest.mark.parametrize("posterior", ["diagonal", "isotropic"])
def test_sampling_and_densities_against_torch_distributions(posterior):
    model = hvae(latent_dim=2, lower="3,2", hidden="5;4;3", posterior=posterior)
    x = torch.rand(4, 1, 4, 4, dtype=torch.float64).round()
    eps = torch.randn(5, 4, 7, dtype=torch.float64)  # [k, B, 3 + 2 + 2]
    phi = model.encode(x)
    z = model.rsample_z(phi, 5, eps)
    assert z.shape == (4, 5, 7)
    # the chain by hand: z_l = mean + std * eps_l, the parameters of q(z_l|z_{l-1}) from the previous sample
    samples, below, ref_log_q = [], None, 0
    for layer, (size, e) in enumerate(zip((3, 2, 2), eps.split([3, 2, 2], dim=-1))):
        params = phi[:, None, :].expand(-1, 5, -1) if layer == 0 else model.q_nets[layer - 1](below)  # [B, 5, P]
        mu, sd = gaussian(params.reshape(20, -1), size, posterior)
        zl = (mu + sd * e.permute(1, 0, 2).reshape(20, -1)).reshape(4, 5, size)
        ref_log_q = ref_log_q + Normal(mu, sd).log_prob(zl.reshape(20, -1)).sum(-1).reshape(4, 5)
        below = zl
        samples.append(zl)
    torch.testing.assert_close(z, torch.cat(samples, -1), rtol=0, atol=1e-12)
    torch.testing.assert_close(model.log_q(z, phi), ref_log_q, rtol=0, atol=1e-10)
    z1, z2, z3 = z.split([3, 2, 2], dim=-1)
    ref_log_p = Normal(0.0, 1.0).log_prob(z3).sum(-1)  # p(z_3) = N(0, I)
    for zl, above, layer in ((z1, z2, model.p_layers[0]), (z2, z3, model.p_layers[1])):
        mu, log_sd = layer(above)
        ref_log_p = ref_log_p + Normal(mu, log_sd.exp()).log_prob(zl).sum(-1)
    torch.testing.assert_close(model.log_p_z(z), ref_log_p, rtol=0, atol=1e-10)
    assert model.kl(phi) is None
    with pytest.raises(ValueError, match=r"eps must have shape \[k=5, B=4, K=7\]"):
        model.rsample_z(phi, 5, eps[..., :3])


def linear_gaussian_two_layer(sigma=0.5):
    """z_2 ~ N(0, 1); z_1 = A z_2 + a + S e_1 (2 units); x = W z_1 + b + sigma e (3 pixels): log p(x) in closed form.
    q(z_2|z_1) is the exact p(z_2|z_1); q(z_1|x) the exact posterior's mean with 1.3 x its marginal stds."""
    g = torch.Generator().manual_seed(7)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)
    A, a, S, W, b = r(2, 1), r(2), torch.tensor([0.6, 0.9], dtype=torch.float64), r(3, 2), r(3)
    model = hvae(latent_dim=1, lower="2", hidden=";", posterior="diagonal", likelihood="gaussian", shape=(1, 1, 3))
    C1 = A @ A.T + torch.diag(S**2)  # Cov z_1
    P = torch.linalg.inv(torch.linalg.inv(C1) + W.T @ W / sigma**2)  # Cov(z_1 | x)
    G, gb = P @ W.T / sigma**2, P @ (torch.linalg.inv(C1) @ a - W.T @ b / sigma**2)  # E[z_1|x] = G x + gb
    v = 1.0 / (1.0 + (A[:, 0] ** 2 / S**2).sum())  # Var(z_2 | z_1)
    H = v * (A[:, 0] / S**2)  # E[z_2|z_1] = H (z_1 - a)
    with torch.no_grad():
        enc, q2, p1, dec = model.encoder[1], model.q_nets[0][0], model.p_layers[0], model.decoder.net[0]
        enc.weight.copy_(torch.cat([G, torch.zeros(2, 3, dtype=torch.float64)]))
        enc.bias.copy_(torch.cat([gb, torch.log(1.3 * torch.diagonal(P).sqrt())]))
        q2.weight.copy_(torch.stack([H, torch.zeros(2, dtype=torch.float64)]))
        q2.bias.copy_(torch.stack([-(H * a).sum(), 0.5 * torch.log(v)]))
        p1.mean.weight.copy_(A), p1.mean.bias.copy_(a), p1.log_std.weight.zero_(), p1.log_std.bias.copy_(S.log())
        dec.weight.copy_(W), dec.bias.copy_(b)
        model.log_sig_x.fill_(math.log(sigma))
    marginal = MultivariateNormal(W @ a + b, W @ C1 @ W.T + sigma**2 * torch.eye(3, dtype=torch.float64))
    return model, marginal, (A, a, S)


def test_importance_sampled_log_likelihood_of_a_linear_gaussian_two_layer_model_is_exact():
    model, marginal, _ = linear_gaussian_two_layer()
    x = torch.stack([marginal.mean + 0.8 * torch.randn(3, dtype=torch.float64, generator=torch.Generator().manual_seed(i))
                     for i in range(3)]).reshape(3, 1, 1, 3)
    exact = marginal.log_prob(x.reshape(3, 3))  # [3]
    est = log_likelihood(model, x, k=100_000, seed=3)  # [3] float64; its noise here: about 1e-3 nats
    torch.testing.assert_close(est, exact, rtol=0, atol=5e-3)
    elbo = make_objective("elbo", {"samples": 2000})(model, x).elbo.detach()
    assert (elbo < exact - 1e-3).all()  # q(z_1|x) is not the posterior: the ELBO is strictly below


def test_ancestral_samples_have_the_models_moments():
    model, _, (A, a, S) = linear_gaussian_two_layer()
    torch.manual_seed(0)
    z = model.sample_z(100_000)  # [n, 3]: z_1 (2 units), then z_2
    assert z.shape == (100_000, 3)
    z1, z2 = z[:, :2], z[:, 2:]
    n = z.shape[0]
    torch.testing.assert_close(z2.mean(0), torch.zeros(1, dtype=torch.float64), rtol=0, atol=5 / math.sqrt(n))
    torch.testing.assert_close(z1.mean(0), a, rtol=0, atol=5 * math.sqrt((A[:, 0] ** 2 + S**2).max().item() / n))
    cov = torch.cov(z.T)  # [3, 3] against [[A A^T + S^2, A], [A^T, 1]]
    want = torch.zeros(3, 3, dtype=torch.float64)
    want[:2, :2], want[:2, 2:], want[2:, :2], want[2, 2] = A @ A.T + torch.diag(S**2), A, A.T, 1.0
    torch.testing.assert_close(cov, want, rtol=0, atol=0.03)


def test_top_layer_view_is_the_mean_path():
    model = hvae(latent_dim=2, lower="3", hidden="5;4")
    x = torch.rand(6, 1, 4, 4, dtype=torch.float64).round()
    phi = model.encoder(x)
    mu2 = model.q_nets[0](phi[:, :3])[:, :2]  # q(z_2|z_1 = E[z_1|x])'s mean
    torch.testing.assert_close(posterior_means(model, x), mu2.float(), rtol=0, atol=1e-6)
    top = torch.randn(6, 1, 2, dtype=torch.float64)
    layer = model.p_layers[0]
    want = torch.sigmoid(model.decoder.net(layer.mean(layer.trunk(top[:, 0])))).reshape(6, 1, 1, 4, 4)
    torch.testing.assert_close(model.mean_image(top), want, rtol=0, atol=1e-12)
    z = model.rsample_z(model.encode(x), 2)  # every layer: decoded from z_1, whatever z_2 is
    moved = torch.cat([z[..., :3], z[..., 3:] + 5.0], dim=-1)
    torch.testing.assert_close(model.mean_image(z), model.mean_image(moved), rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"latents must have shape \[B, N, K=5\] \(every layer\) or \[B, N, K_L=2\]"):
        model.mean_image(z[..., :3])


def test_latent_stats_count_active_units_per_layer_and_estimate_the_kl():
    model, marginal, _ = linear_gaussian_two_layer()
    x = (marginal.mean + torch.randn(400, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))).reshape(400, 1, 1, 3)
    stats = latent_stats(model, x)
    assert len(stats["kl_per_dim"]) == 3 and len(stats["posterior_mean_var"]) == 3
    assert sum(stats["active_units_per_layer"]) == stats["active_units"] and len(stats["active_units_per_layer"]) == 2
    # the summed per-dimension KLs estimate KL(q(z|x) || p(z)) = E_q[log q - log p], here by 2000 samples per image
    torch.manual_seed(0)
    kl = make_objective("elbo", {"samples": 2000})(model, x[:50]).kl.detach()
    sub = latent_stats(model, x[:50])
    assert sum(sub["kl_per_dim"]) == pytest.approx(kl.mean().item(), abs=0.1)


NODE_HARNESS = r"""
const fs = require("fs");
const html = fs.readFileSync(process.argv[1], "utf8");  // node -e: the arguments start at argv[1]
const script = html.match(/<script>([\s\S]*?)<\/script>/)[1];
function stub() {  // a DOM that absorbs every call: enough for the explorer to start outside a browser
  return new Proxy(function () {}, {
    get: (t, p) => (p === Symbol.toPrimitive ? () => 0 : p === "then" ? undefined : stub()),
    set: () => true, apply: () => stub(), construct: () => stub(),
  });
}
global.window = { addEventListener() {} }; global.location = { hash: "" }; global.document = stub();
global.performance = { now: () => 0 }; global.requestAnimationFrame = () => 0;
(0, eval)(script);
const zs = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
window.vaekitExplorer.ready.then(
  (api) => process.stdout.write(JSON.stringify({ K: api.K, images: zs.map((z) => Array.from(api.decode(z))) })),
  (e) => { process.stderr.write("failed: " + e.message); process.exit(1); });
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
@pytest.mark.parametrize("latent_dim", [2, 3])
def test_explorer_decodes_the_top_layer_like_the_model(tmp_path, latent_dim):
    """The report's explorer, run in Node: its sliders are z_L's, and its image for z_L is the model's mean image of
    those top-layer latents (the mean path of p(z_1|z_2), then p(x|z_1))."""
    model = hvae(latent_dim=latent_dim, lower="6", hidden="12;7", shape=(1, 5, 4)).float()
    x = torch.rand(40, 1, 5, 4).round()
    page = tmp_path / "page.html"
    page.write_text(f"<html><body>{explorer_html(model, posterior_means(model, x), None)}</body></html>")
    zs = torch.randn(5, latent_dim, generator=torch.Generator().manual_seed(2)) * 1.5
    (tmp_path / "z.json").write_text(json.dumps(zs.tolist()))
    out = subprocess.run(["node", "-e", NODE_HARNESS, str(page), str(tmp_path / "z.json")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["K"] == latent_dim
    page_images = torch.tensor(result["images"])  # [5, C*H*W]
    with torch.no_grad():
        want = model.mean_image(zs[:, None, :])[:, 0].reshape(5, -1)
    torch.testing.assert_close(page_images, want, rtol=1e-5, atol=1e-6)


def test_train_eval_sample_report_end_to_end(tmp_path, tiny_dataset_dir, capsys):
    """hvae + VampPrior + DReG: 5 steps of `vaekit train`, then eval, sample (prior and GMM) and report, in process."""
    run = tmp_path / "run"
    assert main(["train", "--dataset", str(tiny_dataset_dir), "--out", str(run), "--arch", "hvae", "--latent-dim", "3",
                 "--lower-layers", "6", "--hidden", "16;8", "--prior", "vamp", "--pseudo-inputs", "8", "--objective", "dreg",
                 "--iw-samples", "3", "--likelihood", "bernoulli", "--binarize", "dynamic", "--posterior", "diagonal",
                 "--max-steps", "5", "--batch-size", "32", "--eval-samples", "1", "--device", "cpu", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["eval", str(run), "--k", "20", "--limit", "16", "--samples", "2"]) == 0
    result = json.loads((run / "eval_test.json").read_text())
    assert len(result["active_units_per_layer"]) == 2 and len(result["kl_per_dim"]) == 9
    assert f"per layer, bottom first: {result['active_units_per_layer'][0]}+{result['active_units_per_layer'][1]}" in capsys.readouterr().out
    assert result["log_likelihood"] < 0 and math.isfinite(result["log_likelihood"])
    assert main(["sample", str(run), "--n", "4"]) == 0 and (run / "samples_seed0.png").exists()
    assert main(["sample", str(run), "--n", "4", "--sampler", "gmm", "--components", "2"]) == 0
    assert json.loads((run / "gmm.json").read_text())["latent_dim"] == 3  # fitted to the top layer's means
    assert main(["report", str(run)]) == 0
    html = (run / "report.html").read_text()
    assert 'id="vx-plane"' in html and "The latent explorer is not shown" not in html
    model, meta = load_run(run)
    assert isinstance(model, HierarchicalVAE) and model.prior.name == "vamp" and model.prior.pseudo.shape == (8, 1, 28, 28)
    assert meta["model"]["options"] == {"lower_layers": "6", "hidden": "16;8", "activation": "tanh", "log_std_min": None,
                                       "log_std_max": None, "pseudo_inputs": 8}
