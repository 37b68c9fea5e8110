"""Time to quality: test ELBO after a fixed wall budget, straightforward recipe vs vaekit's ``quick``.

A third row trains ``quick`` with ``--precision bf16`` (autocast around the networks) for
the same budget (``--no-bf16`` skips it): on a CPU with native bf16 it fits more steps in the
budget; on an AVX2-only CPU, where bf16 is emulated, far fewer. ``quick`` itself runs with
``--precision auto`` (the machine's choice, printed).

Both train SimpleVAE K=2 on MNIST's 60k training images, one after the other, for the
same budget of training wall time (default 10 minutes each). The test ELBO is measured
the same way for both: all 10k test images, 10 samples of z, the model's own sigma_x,
nats per image (higher is better). Evaluations along the way pause the clock.

    python benchmarks/time_to_quality.py [--minutes 10] [--no-bf16] [--out benchmarks/results]

Writes time_to_quality.png (test ELBO against training seconds) and time_to_quality.json
to --out, and prints both final ELBOs, then ``delta=`` (quick minus reference, nats) last.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch
from matplotlib.figure import Figure

from vaekit import SimpleVAE, TrainConfig, evaluate_elbo, fit, load_dataset, resolve_device, set_seed
from vaekit.config import PRESETS, resolve_precision
from vaekit.plots import save_figure

from common import machine, reference_batches, reference_step


def run_reference(data, budget_s: float, eval_every_s: float, seed: int, device) -> list[tuple[float, float]]:
    """The assignment's recipe the straightforward way, with the clock paused for evaluations."""
    cfg = dataclasses.replace(TrainConfig(), **PRESETS["assignment"])
    set_seed(seed)
    model = SimpleVAE().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    batches = reference_batches(data.train_images, data.train_labels, cfg.batch_size, seed)
    curve, trained, next_eval = [], 0.0, eval_every_s
    while trained < budget_s:
        t0 = time.perf_counter()
        reference_step(model, opt, next(batches)[0].to(device), cfg.options["samples"])
        trained += time.perf_counter() - t0
        if trained >= next_eval or trained >= budget_s:
            curve.append((trained, evaluate_elbo(model, data.test_images, 10)["elbo"]))
            print(f"  reference: {trained:6.0f} s  test ELBO {curve[-1][1]:8.1f}", flush=True)
            next_eval += eval_every_s
    return curve


def run_quick(data, budget_s: float, seed: int, device, precision: str = "auto") -> list[tuple[float, float]]:
    """vaekit's trainer with the quick preset; it evaluates at each epoch's end (not timed)."""
    cfg = dataclasses.replace(
        TrainConfig(), **PRESETS["quick"], epochs=1000, time_budget=budget_s / 60, seed=seed, device=str(device), precision=precision,
    )
    name = "quick" if precision == "auto" else f"quick {precision}"
    set_seed(seed)
    model = SimpleVAE()
    curve = []

    def on_epoch_end(epoch, stats):
        curve.append((stats["seconds"], evaluate_elbo(model, data.test_images, 10)["elbo"]))
        print(f"  {name + ':':10s} {stats['seconds']:6.0f} s  test ELBO {curve[-1][1]:8.1f}  (epoch {epoch + 1})", flush=True)

    fit(model, data.train_images, cfg, progress=False, on_epoch_end=on_epoch_end)
    return curve


def plot(ref, quick, minutes: float, device_type: str, path: Path, quick_bf16=None) -> None:
    """Test ELBO against training seconds for every recipe."""
    fig = Figure(figsize=(7, 4.2))
    ax = fig.add_subplot()
    rows = [(quick, "vaekit --preset quick"), (ref, "straightforward (assignment recipe)")]
    if quick_bf16:
        rows.insert(1, (quick_bf16, "vaekit --preset quick --precision bf16"))
    for curve, label in rows:
        ax.plot([t for t, _ in curve], [e for _, e in curve], "o-", label=label)
    ax.set_xlabel("training wall time (s), 2-core CPU" if device_type == "cpu" else "training wall time (s)")
    ax.set_ylabel("test ELBO (nats per image, higher is better)")
    ax.set_title(f"Time to quality: SimpleVAE K=2 on MNIST, {minutes:g} min each")
    ax.grid(alpha=0.3)
    ax.legend(loc="center right")
    save_figure(fig, path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=10.0, help="training budget for each recipe (default 10)")
    p.add_argument("--eval-every", type=float, default=60.0, help="seconds between the reference's evaluations")
    p.add_argument("--device", default="auto")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True, help="also the quick preset in bf16 (default: yes)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    p.add_argument("--replot", type=Path, default=None, metavar="JSON", help="only redraw the PNG from a saved time_to_quality.json")
    args = p.parse_args()
    if args.replot:
        rec = json.loads(args.replot.read_text())
        plot(rec["reference"], rec["quick"], rec["minutes"], "cpu" if "GPU" not in rec["machine"] else "cuda", args.replot.with_suffix(".png"),
             rec.get("quick_bf16"))
        return
    device = resolve_device(args.device)
    data = load_dataset("mnist")
    budget = 60.0 * args.minutes
    print(f"machine: {machine()}")
    print(f"budget: {args.minutes:g} min of training for each recipe, device {device}; quick preset: {PRESETS['quick'] or 'TrainConfig defaults'}")

    ref = run_reference(data, budget, args.eval_every, args.seed, device)
    quick = run_quick(data, budget, args.seed, device)
    quick_bf16 = run_quick(data, budget, args.seed, device, "bf16") if args.bf16 else None

    args.out.mkdir(parents=True, exist_ok=True)
    plot(ref, quick, args.minutes, device.type, args.out / "time_to_quality.png", quick_bf16)
    record = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "minutes": args.minutes,
        "quick_preset": dataclasses.asdict(dataclasses.replace(TrainConfig(), **PRESETS["quick"])),
        "reference": ref,
        "quick": quick,
        "quick_precision": resolve_precision("auto", device),
        "quick_bf16": quick_bf16,
    }
    record["quick_precision"] = f"{'bf16' if record['quick_precision'][0] is not None else 'fp32'} ({record['quick_precision'][1]})"
    (args.out / "time_to_quality.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"reference test ELBO after {args.minutes:g} min: {ref[-1][1]:.1f} nats")
    print(f"quick     test ELBO after {args.minutes:g} min: {quick[-1][1]:.1f} nats ({record['quick_precision']})")
    if quick_bf16:
        print(f"quick bf16 test ELBO after {args.minutes:g} min: {quick_bf16[-1][1]:.1f} nats")
    print(f"delta={quick[-1][1] - ref[-1][1]:.1f}")


if __name__ == "__main__":
    main()
