#!/usr/bin/env bash
# Command 2 of the quick start: set everything up with the test extras, lint, and run the tests.
# Extra arguments go to pytest (e.g. -m slow for the slow tests, -k NAME).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh test
python -m ruff check --quiet src tests benchmarks  # the linter (its rules: pyproject.toml's [tool.ruff])
exec python -m pytest "$@"
