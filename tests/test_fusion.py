"""The fused log p(x|z) (decoder and likelihood under torch.compile): the same estimates as a quadrature and as
eager mode, a snapshot that follows new weights, the padded last passes, and the eager fallback when compiling
fails or disagrees."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Bernoulli, Normal

from vaekit import VAE, evaluate, log_likelihood
from vaekit.config import ModelConfig
from vaekit.distributions import log_bernoulli
from vaekit.fusion import CHECK_ATOL, CHECK_RTOL, FUSE_MIN_DECODES, FusedLogPx, fusion_refusal, should_fuse
from vaekit.model import build_model

D_SHAPE = (1, 2, 3)
D = 6
CPU = torch.device("cpu")


def _mlp(seed=0):
    torch.manual_seed(seed)
    return build_model(ModelConfig(arch="mlp", latent_dim=2, likelihood="bernoulli", posterior="diagonal", hidden="8"), (1, 4, 4))


def _binary(n, shape=(1, 4, 4), seed=1):
    return torch.bernoulli(torch.full((n, *shape), 0.4), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def compiler():
    """Skip where torch.compile cannot compile here (no C++ compiler, a Python dynamo does not support)."""
    try:
        torch.compile(lambda t: t * 2 + 1)(torch.ones(3))
    except Exception as exc:  # noqa: BLE001 - depends on the machine
        pytest.skip(f"torch.compile does not work here: {type(exc).__name__}")


def _no_fallback(fn):
    """fn()'s result, failing if the fused path gave up (its warning)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn()
    assert not [w for w in caught if "fused evaluation off" in str(w.message)], [str(w.message) for w in caught]
    return out


def test_fused_bernoulli_log_likelihood_matches_numerical_integration(compiler):
    # K=1, logits = w z + c: p(x) = int prod_d Bern(x_d; sigmoid(w_d z + c_d)) N(z) dz by quadrature
    torch.manual_seed(0)
    w, c = torch.randn(D) * 2, torch.randn(D)

    class CrudeEncoder(nn.Module):  # q(z|x) = N(0.3 sum(x) - 0.9, 0.8^2)
        def forward(self, x):
            flat = x.reshape(x.shape[0], -1)
            return torch.stack([0.3 * flat.sum(1) - 0.9, torch.full_like(flat[:, 0], math.log(0.8))], dim=1)

    class LinearLogits(nn.Module):
        def __init__(self):
            super().__init__()
            self.w, self.c = nn.Parameter(w.clone()), nn.Parameter(c.clone())

        def forward(self, z):  # [M, 1] -> [M, C, H, W]
            return (z[:, :, None] * self.w + self.c).reshape(z.shape[0], *D_SHAPE)

    model = VAE(CrudeEncoder(), LinearLogits(), 1, likelihood="bernoulli", image_shape=D_SHAPE)
    x = torch.bernoulli(torch.full((8, *D_SHAPE), 0.5), generator=torch.Generator().manual_seed(2))
    z = torch.linspace(-12, 12, 48001, dtype=torch.float64)
    log_lik = Bernoulli(logits=z[:, None] * w.double() + c.double()).log_prob(x.double().reshape(8, 1, D)).sum(-1)  # [8, G]
    exact = torch.logsumexp(log_lik + Normal(0.0, 1.0).log_prob(z), dim=1) + math.log(z[1] - z[0])  # [8]
    fused = FusedLogPx(model)
    # 8 images x 20,000 samples in passes of 256 samples: the last pass (32) is padded to the compiled shape
    est = _no_fallback(lambda: log_likelihood(model, x, k=20000, seed=0, fuse=fused))
    assert fused.checked and fused.shape == (8, 256)
    torch.testing.assert_close(est, exact, rtol=0, atol=0.05)
    torch.testing.assert_close(est, log_likelihood(model, x, k=20000, seed=0, fuse=False), rtol=0, atol=1e-4)


def test_a_new_snapshot_follows_the_weights_and_an_old_one_keeps_its_own(compiler):
    from torch._inductor.utils import run_and_get_code

    model, x = _mlp(), _binary(5)
    old = FusedLogPx(model)
    before = _no_fallback(lambda: log_likelihood(model, x, k=30, fuse=old))
    torch.testing.assert_close(before, log_likelihood(model, x, k=30, fuse=False), rtol=0, atol=1e-4)
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.add_(0.3)
    with pytest.raises(ValueError, match="the model's decoder changed since this FusedLogPx was made"):
        log_likelihood(model, x, k=30, fuse=old)
    with pytest.raises(ValueError, match="made for another model"):
        log_likelihood(_mlp(), x, k=30, fuse=old)
    fresh = FusedLogPx(model)
    opt = torch.optim.Adam(model.parameters(), lr=0.05, fused=True)  # the trainer's: it leaves version counters alone
    versions = [p._version for p in model.parameters()]
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    assert [p._version for p in model.parameters()] == versions
    with pytest.raises(ValueError, match="the model's decoder changed since this FusedLogPx was made"):
        log_likelihood(model, x, k=30, fuse=fresh)
    eager = log_likelihood(model, x, k=30, fuse=False)
    assert (eager - before).abs().min() > 0.01  # the new weights change every estimate
    new = FusedLogPx(model)
    with torch.no_grad():  # the weights are constants of the compiled code (inductor's freezing)
        z, xs = torch.randn(5, 30, 2), [x.flatten(1)]
        _, code = run_and_get_code(new, z, xs)
    assert "_frozen_param" in "\n".join(code)
    after = _no_fallback(lambda: log_likelihood(model, x, k=30, fuse=new))
    torch.testing.assert_close(after, eager, rtol=0, atol=1e-4)
    with torch.no_grad():  # the old snapshot, compiled again after the reset, still has the old weights
        torch.testing.assert_close(old(z, xs)[0], old.eager(z.reshape(150, 2), xs)[0])
        assert (old(z, xs)[0] - new(z, xs)[0]).abs().mean() > 0.1


def test_passes_of_other_shapes_run_as_tiles_of_the_compiled_one(compiler):
    model = _mlp(seed=3)
    fused = FusedLogPx(model)
    x = _binary(7).flatten(1)  # [7, 16]
    with torch.no_grad():
        for b, c in ((3, 4), (7, 9), (2, 1), (3, 4)):  # the first fixes the compiled shape [3, 4]
            z, xs = torch.randn(b, c, 2), [x[:b], 1 - x[:b]]
            got = _no_fallback(lambda z=z, xs=xs: fused(z, xs))
            want = fused.eager(z.reshape(b * c, 2), xs)
            for g, w in zip(got, want):
                assert g.shape == (b, c)
                torch.testing.assert_close(g, w, rtol=CHECK_RTOL, atol=CHECK_ATOL)
    assert fused.shape == (3, 4) and fused.failed is None


def test_the_compiled_bernoulli_is_the_general_form_for_any_x_in_0_1(compiler):
    """Under torch.compile log_bernoulli skips its host-side binary check: still -BCE for soft x too."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 6, 50, generator=gen) * 8  # confident ones too
    x = torch.rand(4, 1, 50, generator=gen)
    x[:, :, :10] = x[:, :, :10].round()  # some binary pixels
    x = x.expand(4, 6, 50)  # as the evaluator passes x: [B, N, D], N copies
    got = torch.compile(log_bernoulli)(x, logits)
    want = -F.binary_cross_entropy_with_logits(logits.double(), x.double(), reduction="none").sum(-1)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-4)


def test_the_two_layer_model_fuses_like_eager(compiler):
    torch.manual_seed(0)
    cfg = ModelConfig(arch="hvae", latent_dim=3, likelihood="bernoulli", posterior="diagonal", lower_layers="4", hidden="8;6")
    model, x = build_model(cfg, (1, 4, 4)), _binary(6)
    got = _no_fallback(lambda: log_likelihood(model, x, k=40, fuse=True))
    torch.testing.assert_close(got, log_likelihood(model, x, k=40, fuse=False), rtol=0, atol=1e-4)


def test_fused_dequantized_gaussian_evaluation_matches_the_closed_form(compiler):
    """p(x|z) = N(mu, sigma^2 I) whatever z: log p(x) and log p(x + u), for evaluate's own u, are closed forms."""
    mu = torch.rand(1, 4, 4)

    class Zeros(nn.Module):
        def forward(self, x):
            return torch.zeros(x.shape[0], 2)

    class Constant(nn.Module):
        def __init__(self):
            super().__init__()
            self.mu = nn.Parameter(mu.clone())

        def forward(self, z):
            return self.mu.expand(z.shape[0], *mu.shape) + 0 * z.sum(1)[:, None, None, None]

    model = VAE(Zeros(), Constant(), 1, image_shape=(1, 4, 4))
    with torch.no_grad():
        model.log_sig_x.fill_(math.log(0.3))
    images = torch.randint(0, 256, (7, 1, 4, 4)).float() / 255
    result = _no_fallback(lambda: evaluate(model, images, k=3, n_samples=1, fuse=True))
    assert result["fused"] is True
    exact = Normal(mu.flatten().double(), 0.3).log_prob(images.flatten(1).double()).sum(1).mean().item()
    assert abs(result["log_likelihood"] - exact) < 1e-4
    gen = torch.Generator().manual_seed(0 * 100_003 + 0 + 1)  # the u evaluate draws for images 0..99 with seed 0
    u = torch.rand(images.shape, generator=gen) / 256
    log_p = Normal(mu.flatten().double(), 0.3).log_prob((images + u).flatten(1).double()).sum(1)  # [7] nats
    assert abs(result["bits_per_dim_8bit"] - (-log_p / (16 * math.log(2)) + 8).mean().item()) < 1e-5
    assert evaluate(model, images, k=3, n_samples=1)["fused"] is False  # 21 decodes: auto does not compile


def test_a_compiler_that_fails_gives_a_warning_and_the_eager_numbers(monkeypatch):
    model, x = _mlp(), _binary(4)

    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler found\nmore detail")

    monkeypatch.setattr(torch, "compile", broken)
    with pytest.warns(UserWarning, match=r"fused evaluation off: torch.compile failed \(RuntimeError: no C\+\+ compiler found\)"):
        got = log_likelihood(model, x, k=20, fuse=True)
    assert torch.equal(got, log_likelihood(model, x, k=20, fuse=False))


def test_a_compiled_result_that_disagrees_is_not_used(monkeypatch):
    model, x = _mlp(), _binary(4)
    monkeypatch.setattr(torch, "compile", lambda module, **kw: (lambda z, xs: [o + 0.5 for o in module(z, xs)]))
    with pytest.warns(UserWarning, match="differs from eager mode by up to 0.5 nats"):
        got = log_likelihood(model, x, k=20, fuse=True)
    assert torch.equal(got, log_likelihood(model, x, k=20, fuse=False))


def test_where_fusing_is_refused_and_when_auto_fuses():
    model = _mlp()
    assert fusion_refusal(model, CPU, None) is None
    assert "CPU" in fusion_refusal(model, torch.device("cuda"), None)
    assert "fp32" in fusion_refusal(model, CPU, torch.bfloat16)
    assert "float32 networks (here: torch.float64)" in fusion_refusal(_mlp().double(), CPU, None)

    class OwnDecode(VAE):
        def decode(self, z):
            return super().decode(z)

    own = OwnDecode(model.encoder, model.decoder, 2, likelihood="bernoulli", posterior="diagonal", image_shape=(1, 4, 4))
    assert "OwnDecode decodes its own way" in fusion_refusal(own, CPU, None)
    patched = _mlp()
    patched.decode = lambda z: VAE.decode(patched, z)  # an instance's own decode (a test's spy)
    assert "decodes its own way" in fusion_refusal(patched, CPU, None)

    class Affine(nn.Module):  # a decoder without parameters: the model's dtype is log_sig_x's
        def forward(self, z):
            return z.sum(1)[:, None, None, None].expand(-1, 1, 4, 4)

    bare = VAE(model.encoder, Affine(), 2, likelihood="bernoulli", posterior="diagonal", image_shape=(1, 4, 4))
    assert fusion_refusal(bare, CPU, None) is None
    model.condition = object()
    assert "conditional" in fusion_refusal(model, CPU, None)
    with pytest.warns(UserWarning, match="fuse=True ignored: a conditional model"):
        assert should_fuse(True, 10**9, model, CPU, None) is False
    del model.condition
    assert should_fuse(None, FUSE_MIN_DECODES, model, CPU, None) is True
    assert should_fuse(None, FUSE_MIN_DECODES - 1, model, CPU, None) is False
    assert should_fuse(True, 1, model, CPU, None) is True
    assert should_fuse(False, 10**9, model, CPU, None) is False
