"""Training throughput of the assignment's recipe: vaekit's trainer against the straightforward loop.

Recipe: SimpleVAE K=2, batch 256, 10 samples of z per image, Adam 1e-3, on MNIST.
Both run in this process, on the same data and seed: (a) the reference loop written the
straightforward way (benchmarks/common.py), (b) vaekit's trainer (``vaekit.fit``).
vaekit runs in fp32 and with ``--precision auto`` (bf16 autocast where the CPU or GPU does
bf16 natively; on other machines auto is fp32 and runs once). Prints images/s and peak
memory of each, ``ratio_fp32=``, then ``ratio=`` (vaekit with auto / reference) last.

    python benchmarks/train_throughput.py [--steps 8] [--warmup 2] [--device auto]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from vaekit import SimpleVAE, TrainConfig, fit, load_dataset, resolve_device, set_seed
from vaekit.config import PRESETS, resolve_precision

from common import PeakRSS, machine, reference_batches, reference_step


def peak_memory(device: torch.device, rss: PeakRSS) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.max_memory_allocated() / 2**20:.0f} MiB GPU"
    return f"{rss.peak:.0f} MiB RSS"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=8, help="timed steps of each (default 8)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    device = resolve_device(args.device)
    cfg = dataclasses.replace(TrainConfig(), **PRESETS["assignment"], device=str(device), seed=args.seed)
    bs, n = cfg.batch_size, cfg.options["samples"]  # the ELBO objective's samples of z
    data = load_dataset("mnist")
    print(f"machine: {machine()}")
    print(f"recipe: batch {bs}, {n} samples of z, Adam {cfg.lr}, device {device}; {args.warmup} warm-up + {args.steps} timed steps")

    # (a) the straightforward reference loop
    set_seed(args.seed)
    model = SimpleVAE().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    batches = reference_batches(data.train_images, data.train_labels, bs, args.seed)
    for _ in range(args.warmup):
        reference_step(model, opt, next(batches)[0].to(device), n)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    with PeakRSS() as rss_ref:
        t0 = time.perf_counter()
        for _ in range(args.steps):
            x, _ = next(batches)
            reference_step(model, opt, x.to(device), n)
        ref_s = time.perf_counter() - t0
    ref_ips = args.steps * bs / ref_s
    print(f"reference: {ref_ips:7.1f} images/s  ({ref_s / args.steps:.3f} s/step, peak {peak_memory(device, rss_ref)})")
    del model, opt, batches

    # (b) vaekit's trainer in fp32 and with --precision auto (the same run when auto picks fp32);
    # each warm-up is a separate short run on the same model
    auto_dtype, why = resolve_precision("auto", device)
    auto_name = "bf16" if auto_dtype is not None else "fp32"
    print(f"precision auto: {auto_name} ({why})")
    ips = {}
    for precision in ("fp32", "bf16") if auto_name == "bf16" else ("fp32",):
        set_seed(args.seed)
        model = SimpleVAE()
        run_cfg = dataclasses.replace(cfg, precision=precision)
        fit(model, data.train_images, dataclasses.replace(run_cfg, max_steps=args.warmup), progress=False)
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        with PeakRSS() as rss_vk:
            t0 = time.perf_counter()
            result = fit(model, data.train_images, dataclasses.replace(run_cfg, max_steps=args.steps), progress=False)
            if device.type == "cuda":
                torch.cuda.synchronize()
            vk_s = time.perf_counter() - t0
        assert result.steps == args.steps
        ips[precision] = args.steps * bs / vk_s
        print(f"vaekit {precision}: {ips[precision]:7.1f} images/s  ({vk_s / args.steps:.3f} s/step, peak {peak_memory(device, rss_vk)})")
    print(f"ratio_fp32={ips['fp32'] / ref_ips:.2f}")
    print(f"ratio={ips[auto_name] / ref_ips:.2f}  (vaekit --precision auto = {auto_name} / reference)")

if __name__ == "__main__":
    main()
