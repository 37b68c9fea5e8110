"""SimpleVAE, generation and training."""

import pytest
import torch
from torch import nn
from torch.distributions import Normal, kl_divergence

from vaekit import SimpleVAE, TrainConfig, evaluate_elbo, fit, generate_images, set_seed, train_vae
from vaekit.checkpoint import load_weights, save_weights
from vaekit.objectives import elbo as elbo_objective

ASSIGNMENT_KEYS = [
    "log_sig_x",
    "encoder.0.weight", "encoder.0.bias", "encoder.2.weight", "encoder.2.bias", "encoder.5.weight", "encoder.5.bias",
    "decoder.0.weight", "decoder.0.bias", "decoder.3.weight", "decoder.3.bias", "decoder.5.weight", "decoder.5.bias",
]


class AssignmentVAE(nn.Module):
    """The assignment's layer layout, written out independently of vaekit."""

    def __init__(self, K=2, F=32):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(1, F, 5), nn.ReLU(), nn.Conv2d(F, F, 5), nn.ReLU(), nn.Flatten(), nn.Linear(F * 20 * 20, K + 1)
        )
        self.decoder = nn.Sequential(
            nn.Linear(K, F * 20 * 20), nn.Unflatten(1, (F, 20, 20)), nn.ReLU(),
            nn.ConvTranspose2d(F, F, 5), nn.ReLU(), nn.ConvTranspose2d(F, 1, 5),
        )
        self.log_sig_x = nn.Parameter(torch.zeros(()))


def test_shapes():
    m = SimpleVAE(K=3, num_filters=8)
    x = torch.rand(5, 1, 28, 28)
    assert m.encode(x).shape == (5, 4)
    assert m.decode(torch.randn(5, 7, 3)).shape == (5, 7, 1, 28, 28)
    assert m(x, 2).shape == (5, 2, 1, 28, 28)
    assert m.elbo(x, 2).shape == ()
    assert m.loss(x, 2).shape == (5,)


def test_parameter_names_are_the_assignments():
    assert sorted(SimpleVAE().state_dict()) == sorted(ASSIGNMENT_KEYS)


def test_assignment_state_dict_loads_and_computes_the_same():
    torch.manual_seed(0)
    ref = AssignmentVAE()
    with torch.no_grad():
        ref.log_sig_x.fill_(-1.3)
    m = SimpleVAE()
    m.load_state_dict(ref.state_dict(), strict=True)
    x = torch.rand(4, 1, 28, 28)
    z = torch.randn(4, 3, 2)
    torch.testing.assert_close(m.encode(x), ref.encoder(x))
    torch.testing.assert_close(m.decode(z), ref.decoder(z.reshape(12, 2)).reshape(4, 3, 1, 28, 28))


def test_state_dict_round_trip_through_safetensors(tmp_path):
    torch.manual_seed(0)
    m = SimpleVAE()
    save_weights(tmp_path / "m.safetensors", m.state_dict())
    tensors, _ = load_weights(tmp_path / "m.safetensors")
    m2 = SimpleVAE()
    m2.load_state_dict(tensors)
    for k, v in m.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k]), k


def test_model_elbo_matches_reference():
    torch.manual_seed(0)
    m = SimpleVAE(K=2, num_filters=4).double()
    with torch.no_grad():
        m.log_sig_x.fill_(-0.5)
    x = torch.rand(3, 1, 28, 28, dtype=torch.float64)
    torch.manual_seed(11)
    got = m.elbo(x, 5)
    torch.manual_seed(11)
    phi = m.encoder(x)
    q = Normal(phi[:, :-1], phi[:, -1:].exp())
    z = q.rsample([5]).permute(1, 0, 2)  # [B, N, K]
    mu = m.decoder(z.reshape(15, 2)).reshape(3, 5, 784)
    rec = Normal(mu, m.log_sig_x.exp()).log_prob(x.reshape(3, 1, 784)).sum(-1).mean(1)
    kl = kl_divergence(q, Normal(torch.zeros_like(q.loc), torch.ones_like(q.loc))).sum(-1)
    torch.testing.assert_close(got, (rec - kl).mean())


def test_calibrated_sigma_is_the_optimum():
    torch.manual_seed(0)
    m = SimpleVAE(num_filters=4).double()
    x = torch.rand(6, 1, 28, 28, dtype=torch.float64)
    torch.manual_seed(1)
    terms = elbo_objective(m, x, samples=3, calibrated=True)
    torch.manual_seed(1)
    mu = m(x, 3)  # the same z, so the same reconstructions
    mse = (mu - x[:, None]).pow(2).mean()
    torch.testing.assert_close(terms.log_sig_x, 0.5 * mse.log())
    # the reconstruction term is largest at that sigma
    for factor in (0.9, 1.1):
        with torch.no_grad():
            m.log_sig_x.fill_(terms.log_sig_x.item() + torch.tensor(factor).log().item())
        torch.manual_seed(1)
        assert elbo_objective(m, x, samples=3).rec.sum() < terms.rec.sum()


def test_generate_images_is_deterministic_under_a_seed():
    m = SimpleVAE(num_filters=4)
    set_seed(5)
    a = generate_images(m, K=2, n_images=9)
    set_seed(5)
    b = generate_images(m, n_images=9)
    set_seed(6)
    c = generate_images(m, n_images=9)
    assert a.shape == (9, 1, 28, 28)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    with pytest.raises(ValueError, match="K=3"):
        generate_images(m, K=3)


def test_bad_inputs():
    m = SimpleVAE(num_filters=4)
    with pytest.raises(ValueError, match=r"\[B, 1, 28, 28\]"):
        m.elbo(torch.rand(2, 28, 28))
    with pytest.raises(ValueError, match="samples_z"):
        m.decode(torch.randn(2, 3))
    with pytest.raises(ValueError, match="K"):
        SimpleVAE(K=0)


def test_training_raises_the_elbo_on_mnist(mnist):
    x = mnist.train_images[:1024]
    set_seed(0)
    m = SimpleVAE(num_filters=8)
    before = evaluate_elbo(m, x, n_samples=2)["elbo"]
    cfg = TrainConfig(epochs=2, batch_size=64, samples=1, lr=2e-3, calibrated=False, lr_schedule="constant", device="cpu")
    result = fit(m, x, cfg, progress=False)
    after = evaluate_elbo(m, x, n_samples=2)["elbo"]
    assert result.steps == 32
    assert after > before + 50, (before, after)


def test_train_vae_reproducible_and_accepts_datasets(capsys):
    x = torch.rand(96, 1, 28, 28)
    runs = []
    for dataset in (x, torch.utils.data.TensorDataset(x, torch.zeros(96)), [(img, 0) for img in x]):
        set_seed(3)
        m = SimpleVAE(num_filters=4)
        vals = train_vae(m, dataset, epochs=2, n_samples=2, batch_size=32, seed=3, device="cpu", progress=False)
        runs.append((vals, m.state_dict()))
    assert len(runs[0][0]) == 6 and all(isinstance(v, float) for v in runs[0][0])
    for vals, state in runs[1:]:
        assert vals == runs[0][0]
        for k in state:
            assert torch.equal(state[k], runs[0][1][k])
    assert "learned sigma_x" in capsys.readouterr().out


def test_train_vae_rejects_bad_data():
    m = SimpleVAE(num_filters=4)
    with pytest.raises(ValueError, match="batch_size=64"):
        train_vae(m, torch.rand(10, 1, 28, 28), epochs=1, batch_size=64, progress=False, device="cpu")
    with pytest.raises(ValueError, match="floating-point images in \\[0, 1\\] or uint8 pixels in 0..255, got dtype torch.int64"):
        train_vae(m, torch.zeros(10, 1, 28, 28, dtype=torch.int64), epochs=1, batch_size=5, progress=False, device="cpu")


def test_channels_last_decoder_computes_the_same():
    torch.manual_seed(0)
    m = SimpleVAE(K=3, num_filters=6).double()
    z = torch.randn(4, 5, 3, dtype=torch.float64)
    ref = m.decode(z)
    m.to(memory_format=torch.channels_last)
    assert m.decoder[3].weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(m.decode(z), ref)
    # and the state_dict is unchanged by the layout
    m2 = SimpleVAE(K=3, num_filters=6).double()
    m2.load_state_dict(m.state_dict())
    torch.testing.assert_close(m2.decode(z), ref)


def test_time_budget_stops_training_and_reports_the_partial_epoch():
    x = torch.rand(4096, 1, 28, 28)
    seen = []
    cfg = TrainConfig(epochs=50, batch_size=16, samples=1, time_budget=0.5 / 60, device="cpu")
    result = fit(SimpleVAE(num_filters=4), x, cfg, progress=False, on_epoch_end=lambda e, s: seen.append((e, s)))
    assert result.stopped_by == "time_budget"
    assert 0 < result.steps < 50 * 256
    assert len(seen) == result.epochs_done >= 1
    assert seen[-1][1]["steps"] == result.steps
    assert 0.5 <= seen[-1][1]["seconds"] < 5


def test_max_steps_stops_mid_epoch():
    x = torch.rand(64, 1, 28, 28)
    m = SimpleVAE(num_filters=4)
    cfg = TrainConfig(epochs=10, batch_size=16, samples=1, max_steps=6, lr_schedule="cosine", device="cpu")
    result = fit(m, x, cfg, progress=False)
    assert result.steps == 6 and result.stopped_by == "max_steps" and result.epochs_done == 2


@pytest.mark.parametrize(
    "schedule,frac,expected",
    [
        ("constant", 0.7, 1.0),
        ("cosine", 0.0, 1.0), ("cosine", 0.5, 0.5), ("cosine", 1.0, 0.0),
        ("anneal", 0.0, 1.0), ("anneal", 0.8, 1.0), ("anneal", 0.9, 0.5), ("anneal", 1.0, 0.0), ("anneal", 1.5, 0.0),
    ],
)
def test_lr_schedules(schedule, frac, expected):
    from vaekit.train import lr_factor

    assert lr_factor(schedule, frac) == pytest.approx(expected, abs=1e-12)


def test_elbo_objective_under_bf16_autocast_keep_the_data_dtype():
    torch.manual_seed(0)
    m = SimpleVAE(num_filters=4)
    x = torch.rand(8, 1, 28, 28)
    for calibrated in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            terms = elbo_objective(m, x, samples=2, calibrated=calibrated)
        assert terms.loss.dtype == torch.float32 and torch.isfinite(terms.loss).all()
        terms.loss.mean().backward()
        assert all(p.grad is None or torch.isfinite(p.grad).all() for p in m.parameters())
