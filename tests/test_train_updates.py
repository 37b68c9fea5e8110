"""Update hooks (vaekit.train.updates): gradient clipping (--grad-clip) against closed forms and against a plain
training loop that calls torch.nn.utils.clip_grad_norm_ itself; the per-tensor gradient normalization
(--grad-normalize) against a closed form and against Tomczak & Welling's AdamNormGrad written out by hand;
both off by default."""

import math

import pytest
import torch

from vaekit import TrainConfig, fit
from vaekit.config import validate
from vaekit.objectives import make_objective
from vaekit.train.updates import GradClip, GradNormalize, update_hooks

from helpers import grey_images, tiny


def test_gradients_above_the_norm_are_scaled_to_it_and_below_it_left_alone():
    g = torch.Generator().manual_seed(0)
    params = [torch.zeros(3, 4, requires_grad=True), torch.zeros(5, requires_grad=True)]
    grads = [torch.randn(3, 4, generator=g) * 10, torch.randn(5, generator=g) * 10]
    norm = math.sqrt(sum(float((v.double() ** 2).sum()) for v in grads))  # the global norm, by hand in float64
    for p, v in zip(params, grads):
        p.grad = v.clone()
    clip = GradClip(1.5)
    clip.before_update(params)
    assert float(clip.last_norm) == pytest.approx(norm, rel=1e-6)
    for p, v in zip(params, grads):
        assert torch.allclose(p.grad.double(), v.double() * 1.5 / (norm + 1e-6), rtol=1e-6, atol=0)
    assert math.sqrt(sum(float((p.grad.double() ** 2).sum()) for p in params)) == pytest.approx(1.5, rel=1e-5)
    for p, v in zip(params, grads):
        p.grad = v.clone()
    GradClip(norm * 2).before_update(params)  # under the limit: untouched
    assert all(torch.equal(p.grad, v) for p, v in zip(params, grads))


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf"), float("nan")])
def test_a_bad_limit_is_one_clear_error(bad):
    with pytest.raises(ValueError, match=rf"grad_clip must be a finite number > 0 \(or None for no clipping\), got {bad}"):
        GradClip(bad)


def test_each_tensors_gradient_is_divided_by_its_own_norm():
    g = torch.Generator().manual_seed(1)
    params = [torch.zeros(3, 4, requires_grad=True), torch.zeros(5, requires_grad=True), torch.zeros(2, requires_grad=True)]
    grads = [torch.randn(3, 4, generator=g) * 100, torch.randn(5, generator=g) * 1e-3]
    for p, v in zip(params, grads):
        p.grad = v.clone()
    GradNormalize().before_update(params)
    for p, v in zip(params, grads):
        norm = math.sqrt(float((v.double() ** 2).sum()))  # by hand, in float64
        assert torch.allclose(p.grad.double(), v.double() / (norm + 1e-7), rtol=1e-6, atol=0)
        assert float(p.grad.double().norm()) == pytest.approx(norm / (norm + 1e-7), rel=1e-6)  # ~1 for both scales
    assert params[2].grad is None  # a parameter without a gradient is left alone
    zero = torch.zeros(4, requires_grad=True)
    zero.grad = torch.zeros(4)
    GradNormalize().before_update([zero])
    assert torch.equal(zero.grad, torch.zeros(4))  # a zero gradient stays zero (no 0/0)


def test_normalize_acts_before_clip():
    hooks = update_hooks(TrainConfig(grad_normalize=True, grad_clip=0.5))
    assert [type(h) for h in hooks] == [GradNormalize, GradClip]
    params = [torch.zeros(3, requires_grad=True), torch.zeros(4, requires_grad=True)]
    for p in params:
        p.grad = torch.full_like(p, 7.0)
    for hook in hooks:
        hook.before_update(params)
    assert float(hooks[1].last_norm) == pytest.approx(math.sqrt(2), rel=1e-6)  # two unit tensors, then clipped
    assert math.sqrt(sum(float((p.grad.double() ** 2).sum()) for p in params)) == pytest.approx(0.5, rel=1e-5)


def test_off_by_default_and_the_config_field_is_checked():
    assert TrainConfig().grad_clip is None and TrainConfig().grad_normalize is False and update_hooks(TrainConfig()) == []
    hooks = update_hooks(TrainConfig(grad_clip=2.0))
    assert len(hooks) == 1 and isinstance(hooks[0], GradClip) and hooks[0].max_norm == 2.0
    with pytest.raises(ValueError, match="grad_clip must be > 0.0, got -1.0"):
        validate(TrainConfig(grad_clip=-1.0))


def adam_norm_grad(params, state, lr, step, betas=(0.9, 0.999), eps=1e-8):
    """Tomczak & Welling's AdamNormGrad (vae_vampprior, utils/optimizer.py), written out: each tensor's gradient
    divided by its norm + 1e-7, then Adam's moments, bias corrections and step."""
    with torch.no_grad():
        for i, p in enumerate(params):
            grad = p.grad / (p.grad.norm() + 1e-7)
            m, v = state.setdefault(i, (torch.zeros_like(p), torch.zeros_like(p)))
            m.mul_(betas[0]).add_(grad, alpha=1 - betas[0])
            v.mul_(betas[1]).addcmul_(grad, grad, value=1 - betas[1])
            denom = (v / (1 - betas[1] ** step)).sqrt() + eps
            p.sub_(lr * (m / (1 - betas[0] ** step)) / denom)


def plain_training(images, cfg, clip, norm_grad=False):
    """The same recipe written the straightforward way: the documented data order, the noise from the global RNG,
    Adam, and torch.nn.utils.clip_grad_norm_ before each step. Returns the weights and the norms seen."""
    model = tiny()
    model.to(memory_format=torch.channels_last)  # as the trainer does on the CPU (the same convolution kernels)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    params, state, step = list(model.parameters()), {}, 0
    samples = cfg.options["samples"]
    objective = make_objective("elbo", {"samples": samples})
    torch.manual_seed(123)
    norms = []
    for epoch in range(cfg.epochs):
        perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch))
        for i in range(0, len(images), cfg.batch_size):
            x = images[perm[i : i + cfg.batch_size]]
            eps = torch.randn(samples, len(x), model.latent_dim)  # [N, B, K]
            loss = objective(model, x, eps=eps).loss.mean()
            opt.zero_grad()
            loss.backward()
            if clip is not None:
                norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), clip)))
            if norm_grad:
                step += 1
                adam_norm_grad(params, state, cfg.lr, step)
            else:
                opt.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, norms


def trained(images, cfg):
    model = tiny()
    torch.manual_seed(123)
    fit(model, images, cfg, progress=False)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def max_diff(a, b):
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def test_clipping_in_training_matches_the_plain_loop():
    images = grey_images(48, seed=2)
    cfg = TrainConfig(epochs=2, batch_size=16, samples=2, lr=3e-3, lr_schedule="constant", calibrated=False, device="cpu", seed=4,
                      precision="fp32")  # the plain loop's arithmetic
    clipped_ref, norms = plain_training(images, cfg, clip=5.0)
    assert min(norms) > 5.0  # every step was clipped: the test compares something
    unclipped_ref, _ = plain_training(images, cfg, clip=None)
    assert max_diff(clipped_ref, unclipped_ref) > 1e-4  # Adam undoes a constant scale, not a varying one
    # off: the trainer is the plain loop; on: the plain loop with clip_grad_norm_ (Adam's kernels round differently)
    assert max_diff(trained(images, cfg), unclipped_ref) < 1e-6
    clipped = trained(images, TrainConfig(**{**cfg.__dict__, "grad_clip": 5.0}))
    assert max_diff(clipped, clipped_ref) < 1e-6


def test_normalized_training_matches_adam_norm_grad_written_out():
    images = grey_images(48, seed=3)
    cfg = TrainConfig(epochs=2, batch_size=16, samples=2, lr=3e-3, lr_schedule="constant", calibrated=False, device="cpu", seed=5,
                      precision="fp32")
    ref, _ = plain_training(images, cfg, clip=None, norm_grad=True)
    plain, _ = plain_training(images, cfg, clip=None)
    assert max_diff(ref, plain) > 1e-4  # the normalization changes the run: the test compares something
    assert max_diff(trained(images, TrainConfig(**{**cfg.__dict__, "grad_normalize": True})), ref) < 1e-5
