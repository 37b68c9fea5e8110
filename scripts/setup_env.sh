#!/usr/bin/env bash
# Create or update ./.venv with vaekit installed (editable). Sourced by quickstart.sh and test.sh.
# Usage: source scripts/setup_env.sh [EXTRAS]   e.g. EXTRAS=test
# Env: PYTHON (default python3), VAEKIT_TORCH (torch requirement to install first when no
# NVIDIA GPU is present; default torch==2.13.0, a small CPU build on the project's machines).
set -euo pipefail
_extras="${1:-}"
_py="${PYTHON:-python3}"
_venv=".venv"
if [ ! -x "$_venv/bin/python" ]; then
    echo "[setup] creating $_venv with $($_py --version 2>&1)"
    "$_py" -m venv "$_venv"
fi
_pip() { "$_venv/bin/python" -m pip "$@" 2>&1 | grep -v "^WARNING: Location" || true; }
if ! "$_venv/bin/python" -c "import torch" >/dev/null 2>&1; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        echo "[setup] NVIDIA GPU found: installing torch from the package index (CUDA build)"
        _pip install -q "torch>=2.4"
    else
        echo "[setup] no NVIDIA GPU: installing ${VAEKIT_TORCH:-torch==2.13.0} first (CPU build where available)"
        _pip install -q "${VAEKIT_TORCH:-torch==2.13.0}" numpy
    fi
    "$_venv/bin/python" -c "import torch" || { echo "[setup] torch failed to install" >&2; exit 1; }
fi
# (re)install vaekit only when pyproject.toml or the extras changed
_stamp="$_venv/.vaekit-stamp"
_want="$(cat pyproject.toml | "$_venv/bin/python" -c 'import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())') [$_extras]"
if [ ! -f "$_stamp" ] || [ "$(cat "$_stamp")" != "$_want" ]; then
    echo "[setup] installing vaekit${_extras:+[$_extras]} (editable)"
    _pip install -q -e ".${_extras:+[$_extras]}"
    "$_venv/bin/python" -c "import vaekit" || { echo "[setup] vaekit failed to install" >&2; exit 1; }
    echo "$_want" > "$_stamp"
fi
export PATH="$PWD/$_venv/bin:$PATH"
