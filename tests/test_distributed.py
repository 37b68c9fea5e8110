"""Data-parallel training (torchrun + DDP, gloo on the CPU), against one process as the reference.

The end-to-end tests launch real processes: ``vaekit train --distributed`` and
``python -m torch.distributed.run ... -m vaekit train``. The data set has 97 training
images, so with 8 images per rank (global batch 16) the last global batch of every
epoch holds 1 image: rank 0 gets it and rank 1 an empty shard.

In CI (not slow): the in-process pieces and one 1-process and one 2-process run (~35 s on
the 2-core CPU). ``-m slow`` adds the interrupt / kill / resume test (~30 s more).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest
import torch

from vaekit import SimpleVAE, TrainConfig, fit, rsample, set_seed
from vaekit.checkpoint import load_checkpoint, load_weights
from vaekit.cli import default_nproc, main, relaunch_command
from vaekit.distributed import BatchShard, shard_bounds
from vaekit.objectives import make_objective
from vaekit.runfolder import RUN_FILES

from helpers import wait_for_checkpoint, write_idx

N_TRAIN, PER_RANK, WORLD = 97, 8, 2
# float32 sums taken in another order (two shards, then DDP's average, vs one mean) differ by
# ~1e-7 relative per step; over the 28 steps here the weights differ by <= 6e-8 (measured).
# A real difference (another batch, other noise, another weighting of the images) moves
# weights by ~lr = 1.5e-3 per step, four orders of magnitude above this tolerance.
RTOL, ATOL = 1e-4, 1e-5


# ----------------------------------------------------------------------------- pieces, in-process


@pytest.mark.parametrize("size", [0, 1, 2, 7, 16, 97])
@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_shard_bounds_split_a_batch_into_contiguous_balanced_slices(size, world):
    bounds = [shard_bounds(size, world, r) for r in range(world)]
    assert bounds[0][0] == 0 and bounds[-1][1] == size
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))  # contiguous, in rank order
    sizes = [stop - start for start, stop in bounds]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def test_shard_bounds_reject_bad_arguments():
    with pytest.raises(ValueError, match="rank=2, world_size=2"):
        shard_bounds(4, 2, 2)


def test_shards_of_a_global_draw_are_the_columns_one_process_draws():
    torch.manual_seed(0)
    ref = torch.empty(3, 10, 2).normal_()  # [N, B, K]: what one process draws for the batch
    parts = []
    for r in range(3):
        torch.manual_seed(0)  # every rank's generator is in the same state
        start, stop = shard_bounds(10, 3, r)
        shard = BatchShard(10, start, stop, 3)
        parts.append(shard.draw(lambda b: torch.empty(3, b, 2).normal_(), dim=1))
    assert [p.shape[1] for p in parts] == [4, 3, 3]
    assert torch.equal(torch.cat(parts, dim=1), ref)
    with pytest.raises(ValueError, match="expected the global batch size 10"):
        BatchShard(10, 0, 5, 2).take(torch.zeros(9))


def test_rsample_with_given_noise_and_its_shape_check():
    params = torch.randn(4, 3)  # [B, K+1]
    torch.manual_seed(1)
    drawn = rsample(params, 5)
    torch.manual_seed(1)
    eps = torch.empty(5, 4, 2).normal_()  # [N, B, K]
    assert torch.equal(rsample(params, 5, eps), drawn)
    with pytest.raises(ValueError, match=r"eps must have shape \[N=5, B=4, K=2\], got \[5, 4, 3\]"):
        rsample(params, 5, torch.zeros(5, 4, 3))


@pytest.mark.parametrize("calibrated", [False, True])
def test_elbo_with_the_noise_of_a_whole_shard_is_the_plain_one(calibrated):
    """One process is a data-parallel run of size one: the noise drawn through its shard is the plain draw."""
    set_seed(0)
    model = SimpleVAE(num_filters=4)
    x = torch.rand(6, 1, 28, 28)
    torch.manual_seed(2)
    plain = make_objective("elbo", {"samples": 3})(model, x, calibrated=calibrated)
    torch.manual_seed(2)
    shard = BatchShard.whole(6)
    eps = shard.draw(lambda b: torch.randn(3, b, 2), dim=1)
    sharded = make_objective("elbo", {"samples": 3})(model, x, calibrated=calibrated, eps=eps, batch_mean=shard.mean)
    for a, b in zip(plain[:5], sharded[:5]):  # loss, elbo, rec, kl, log_sig_x
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match=r"eps must have shape \[N=3, B=6, K=2\], got \[3, 3, 2\]"):
        make_objective("elbo", {"samples": 3})(model, x, eps=torch.zeros(3, 3, 2))


def test_empty_batch_gives_empty_terms():
    """A rank's shard of the last global batch may be empty; the model must take it."""
    model = SimpleVAE(num_filters=4).to(memory_format=torch.channels_last)
    terms = make_objective("elbo", {"samples": 2})(model, torch.rand(0, 1, 28, 28))
    assert terms.loss.shape == (0,)
    terms.loss.sum().backward()  # zero gradients, no error
    assert float(model.decoder[0].weight.grad.abs().sum()) == 0.0


def test_relaunch_command_and_default_process_count():
    cmd = relaunch_command(["train", "--distributed", "--epochs", "1"], 3)
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert "--standalone" in cmd and "--nproc-per-node=3" in cmd
    assert cmd[-5:] == ["vaekit", "train", "--distributed", "--epochs", "1"]
    assert default_nproc("cpu") == 2
    if not torch.cuda.is_available():
        assert default_nproc("auto") == 2


def test_nproc_per_node_needs_distributed(capsys):
    assert main(["train", "--nproc-per-node", "2", "--epochs", "1"]) == 2
    assert "--nproc-per-node 2 is only used with --distributed" in capsys.readouterr().err


def test_resume_on_another_number_of_processes_is_refused():
    x = torch.rand(32, 1, 28, 28)
    cfg = TrainConfig(epochs=1, batch_size=16, samples=1, device="cpu", max_steps=1)
    states = []
    model = SimpleVAE(num_filters=4)
    fit(model, x, cfg, progress=False, on_checkpoint=states.append)
    states[0].world_size = 2  # as if written by a 2-process run
    with pytest.raises(ValueError, match=r"written by a run on 2 process\(es\) .* got 1; e.g. torchrun --nproc-per-node=2"):
        fit(model, x, cfg, progress=False, resume=states[0])


# ----------------------------------------------------------------------------- real processes


@pytest.fixture(scope="module")
def odd_dataset_dir(tmp_path_factory, mnist):
    """97 training images (6 global batches of 16, then 1) and 64 test images."""
    folder = tmp_path_factory.mktemp("odd-mnist")
    for split, n, images, labels in (
        ("train", N_TRAIN, mnist.train_images, mnist.train_labels),
        ("t10k", 64, mnist.test_images, mnist.test_labels),
    ):
        write_idx(folder / f"{split}-images-idx3-ubyte", (images[:n, 0] * 255).round().numpy())
        write_idx(folder / f"{split}-labels-idx1-ubyte", labels[:n].numpy())
    return folder


# Loaded at start-up by every Python process of the runs below (via PYTHONPATH): records each
# file vaekit writes, with the writing process's RANK, to $VAEKIT_WRITE_LOG.<pid>.
SITECUSTOMIZE = textwrap.dedent('''
    import os
    if os.environ.get("VAEKIT_WRITE_LOG"):
        import vaekit.checkpoint as _c, vaekit.commands.train as _e

        def _log(kind, path):
            with open(f"{os.environ['VAEKIT_WRITE_LOG']}.{os.getpid()}", "a") as f:
                f.write(f"{os.environ.get('RANK', '-')} {kind} {path}\\n")

        def _wrap(mod, name, kind):
            orig = getattr(mod, name)
            def wrapped(path, *args, **kw):
                _log(kind, path)
                return orig(path, *args, **kw)
            setattr(mod, name, wrapped)

        _wrap(_c, "atomic_write", "write")
        _wrap(_e, "_make_out_dir", "mkdir")
''')


@pytest.fixture(scope="module")
def spy_env(tmp_path_factory):
    folder = tmp_path_factory.mktemp("spy")
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    src = os.path.dirname(os.path.dirname(os.path.abspath(__import__("vaekit").__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(folder), src, os.environ.get("PYTHONPATH", "")]))
    env.pop("VAEKIT_DEBUG", None)
    return env, folder


def written(log_prefix):
    """(rank, kind, path) of every write recorded by the spy."""
    rows = []
    for f in log_prefix.parent.glob(log_prefix.name + ".*"):
        rows += [tuple(line.split(" ", 2)) for line in f.read_text().splitlines()]
    return rows


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_args(dataset, out, batch_size, extra=()):
    return ["train", "--dataset", str(dataset), "--out", str(out), "--epochs", "4", "--batch-size", str(batch_size),
            "--samples", "2", "--num-filters", "4", "--eval-samples", "2", "--checkpoint-every", "2",
            "--device", "cpu", "--precision", "fp32", "--seed", "5", "--no-progress", *extra]  # fp32: the tolerances are fp32's


def torchrun(args, env=None):
    """``python -m torch.distributed.run`` on 2 local processes, static rendezvous on a free port."""
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={WORLD}", "--master-addr=127.0.0.1",
           f"--master-port={free_port()}", "-m", "vaekit", *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def finish(p, timeout=300):
    stdout, stderr = p.communicate(timeout=timeout)
    assert p.returncode == 0, stderr
    return stdout, stderr


def children(pid):
    """Processes started by ``pid``, recursively (torchrun's workers live in their own sessions)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = [int(c) for c in f.read().split()]
    except OSError:
        return []
    return kids + [g for k in kids for g in children(k)]


def rank_of(pid):
    with open(f"/proc/{pid}/environ", "rb") as f:
        env = dict(item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item)
    return int(env.get(b"RANK", b"-1"))


@pytest.fixture(scope="module")
def runs(odd_dataset_dir, tmp_path_factory, spy_env):
    """One process with batch 16, and `vaekit train --distributed` on 2 processes with 8 each."""
    env, spy = spy_env
    base = tmp_path_factory.mktemp("runs")
    one = subprocess.Popen([sys.executable, "-m", "vaekit", *train_args(odd_dataset_dir, base / "one", PER_RANK * WORLD)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    finish(one)
    env = dict(env, VAEKIT_WRITE_LOG=str(spy / "writes"))
    two = subprocess.Popen([sys.executable, "-m", "vaekit", *train_args(odd_dataset_dir, base / "two", PER_RANK),
                            "--distributed", "--nproc-per-node", str(WORLD)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    stdout, stderr = finish(two)
    return base / "one", base / "two", stdout, written(spy / "writes")


def metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_reach_the_weights_and_metrics_of_one_process_with_the_same_global_batch(runs):
    one, two, _, _ = runs
    a, _ = load_weights(one / "model.safetensors")
    b, _ = load_weights(two / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=RTOL, atol=ATOL), (k, (a[k] - b[k]).abs().max())
    # Adam's moments are proportional to the gradients (its update is not): a wrongly scaled
    # gradient (e.g. missing the x world_size / global-batch factor) shows here
    _, s1, _ = load_checkpoint(one)
    _, s2, _ = load_checkpoint(two)
    assert s1.step == s2.step == 4 * 7 and s2.world_size == WORLD and s1.world_size == 1
    for idx, st in s1.optimizer["state"].items():
        for key in ("exp_avg", "exp_avg_sq"):
            ref, got = st[key], s2.optimizer["state"][idx][key]
            assert torch.allclose(ref, got, rtol=1e-3, atol=1e-7 * float(ref.abs().max())), (idx, key)
    # the all-reduced per-step train ELBO (nats per image of the global batch) and the test ELBO
    assert torch.allclose(s1.elbos, s2.elbos, rtol=1e-5, atol=1e-3)
    m1, m2 = metrics(one), metrics(two)
    assert [r["steps"] for r in m2] == [7, 14, 21, 28]
    for r1, r2 in zip(m1, m2):
        for key in ("train_elbo", "test_elbo", "test_elbo_se", "test_rec", "test_kl", "sigma_x"):
            assert r2[key] == pytest.approx(r1[key], rel=1e-5, abs=1e-3), key
    cfg = json.loads((two / "config.json").read_text())
    assert cfg["distributed"] == {"world_size": WORLD, "backend": "gloo", "global_batch_size": PER_RANK * WORLD}
    assert cfg["train"]["batch_size"] == PER_RANK


def test_only_rank_0_writes_and_prints(runs):
    one, two, stdout, writes = runs
    assert writes, "the spy recorded nothing: the test would prove nothing"
    assert {rank for rank, _, _ in writes} == {"0"}
    assert {os.path.basename(p) for _, kind, p in writes if kind == "write"} == set(RUN_FILES)
    listing = lambda run: sorted(p.name for p in run.iterdir() if p.name != ".vaekit.lock")
    assert listing(two) == listing(one) == sorted(RUN_FILES)
    assert stdout.count("done in") == 1 and stdout.count("vaekit train: preset") == 1
    assert "2 processes (gloo), global batch 16" in stdout


@pytest.mark.slow  # three more 2-process launches: ~30 s on the 2-core CPU, which would take CI's DDP share past a minute
def test_interrupted_and_killed_two_process_run_resumes_to_the_uninterrupted_weights(odd_dataset_dir, tmp_path, runs):
    _, uninterrupted, _, _ = runs
    out = tmp_path / "run"
    # SIGTERM to rank 1 alone: both ranks agree to stop at the same step, rank 0 checkpoints
    p = torchrun(train_args(odd_dataset_dir, out, PER_RANK))
    wait_for_checkpoint(out, p, step_at_least=3)
    workers = [pid for pid in children(p.pid) if rank_of(pid) >= 0]
    assert sorted(rank_of(pid) for pid in workers) == [0, 1]
    os.kill(next(pid for pid in workers if rank_of(pid) == 1), signal.SIGTERM)
    _, stderr = p.communicate(timeout=120)
    assert p.returncode != 0
    assert "SIGTERM received" in stderr and f"--nproc-per-node=2 -m vaekit train --resume {out}" in stderr
    _, state, _ = load_checkpoint(out)
    assert 3 <= state.step < 28 and not state.finished
    # resumed, then SIGKILLed with all its processes between checkpoints (a crash)
    p = torchrun(["train", "--resume", str(out)])
    wait_for_checkpoint(out, p, step_at_least=state.step + 4)
    for pid in [*children(p.pid), p.pid]:
        os.kill(pid, signal.SIGKILL)
    p.communicate()
    _, state2, _ = load_checkpoint(out)
    assert state.step < state2.step < 28 and not state2.finished
    finish(torchrun(["train", "--resume", str(out)]))
    a, _ = load_weights(out / "model.safetensors")
    b, _ = load_weights(uninterrupted / "model.safetensors")
    for k in a:  # same ranks, same reduction order: identical, as for a resumed single process
        assert torch.equal(a[k], b[k]), k
    assert [r["test_elbo"] for r in metrics(out)] == [r["test_elbo"] for r in metrics(uninterrupted)]
