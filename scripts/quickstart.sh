#!/usr/bin/env bash
# Command 1 of the quick start: set everything up, train a VAE on the shipped MNIST,
# write samples, figures and metrics to runs/quickstart/. Extra arguments go to `vaekit train`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh
out="runs/quickstart"
vaekit train --out "$out" --overwrite "$@"
vaekit figures --out "$out/figures"
echo
echo "Outputs are in $PWD/$out:"
echo "  samples.png      new digits decoded from z ~ N(0, I)"
echo "  elbo_curve.png   the training curve (train per batch, train/test per epoch)"
echo "  metrics.jsonl    per-epoch train/test ELBO (nats per image), sigma_x, seconds"
echo "  model.safetensors, config.json   the trained model and how it was made"
echo "  figures/         MC-vs-exact KL error and rsample histograms"
