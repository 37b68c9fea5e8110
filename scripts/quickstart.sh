#!/usr/bin/env bash
# Command 1 of the quick start: set everything up, train a VAE on the shipped MNIST,
# evaluate it, and write samples, figures, metrics and a report to runs/quickstart/.
# Extra arguments go to `vaekit train`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh ""  # no extras (and not this script's arguments, which go to vaekit train)
out="runs/quickstart"
vaekit train --out "$out" --overwrite "$@"
# log p(x) with k=1000 importance samples on the first 300 test images (~1.5 min on a 2-core CPU)
vaekit eval "$out" --k 1000 --limit 300 --no-progress
vaekit figures "$out"   # the math figures, the run's figures again, and the report with the evaluation
echo
echo "Outputs are in $PWD/$out:"
echo "  report.html      everything below on one page (open it in a browser; works offline)"
echo "  samples.png      new digits decoded from z ~ N(0, I)"
echo "  elbo_curve.png   the training curve (train per batch, train/test per epoch)"
echo "  reconstructions.png, latent_map.png, latent_scatter.png, interpolations.png"
echo "                   what the model learned: reconstructions, the digit manifold, the latent space"
echo "  kl_mc_vs_exact.png, rsample_hist.png   the math: MC-vs-exact KL error, rsample histograms"
echo "  metrics.jsonl    per-epoch train/test ELBO (nats per image), sigma_x, seconds"
echo "  eval_test.json   test ELBO, log p(x) (k=1000), bits/dim, latent diagnostics"
echo "  model.safetensors, config.json   the trained model and how it was made"
