"""The importance-sampled evaluator's log p(x|z), fused: the decoder and the likelihood compiled together with
``torch.compile`` (inductor) on the CPU.

In eager mode each per-pixel step of a pass (the hidden layers' tanh, the Bernoulli's -softplus((1 - 2x) l), the
sum over the pixels) is a separate loop over a [M, D] tensor: about 40% of a pass for the paper's MLP
(benchmarks/README.md, "Evaluation on the full test set"). Compiled, those steps run as fused loops around the
matrix products, and with inductor's *freezing* the weights are constants of the compiled graph (its generated
code holds them as ``_frozen_param``s; tests/test_fusion.py checks). The Bernoulli likelihood takes its general form there, with no host-side check
of x (``distributions.log_bernoulli``), so the decoder and log p(x|z) are one graph.

**Frozen weights are a snapshot.** ``FusedLogPx`` compiles a private copy of the decoder, taken when it is made:
training the model afterwards does not change it (make a new one per evaluation, as ``log_likelihood`` does), and
a new one resets torch.compile's caches (``torch.compiler.reset()``), so no compiled graph of an earlier copy, with
its frozen weights, can be reused for it.

**Where and when.** Only where it can be right and pays: an unconditional model with the standard ``decode``, on
the CPU, with float32 networks and no autocast, for an evaluation of at least ``FUSE_MIN_DECODES`` decodes (compiling costs
10-45 s). The first pass is checked against the eager computation; a compiler that fails or disagrees gives a
warning and the eager path for the rest of the evaluation (the numbers are then the eager ones).
"""

from __future__ import annotations

import contextlib
import copy
import time
import warnings
import weakref
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .model import VAE, param_device

__all__ = ["FUSE_MIN_DECODES", "FusedLogPx", "fused_for", "fusion_refusal", "should_fuse"]

#: decodes (images x importance samples) from which ``fuse=None`` compiles: about 80 s of eager decoding of the
#: paper's MLP on a 2-core CPU, against 10-45 s of compiling
FUSE_MIN_DECODES = 10_000_000

#: the fused pass must give the eager log p(x|z) [nats] within these (float32 sums over D pixels in another order)
CHECK_RTOL, CHECK_ATOL = 1e-5, 1e-3


def fusion_refusal(model: Any, device: torch.device, autocast_dtype: torch.dtype | None) -> str | None:
    """Why log p(x|z) of ``model`` cannot be fused here, or None if it can."""
    if device.type != "cpu":
        return f"fusing is for the CPU (here: {device.type})"
    if autocast_dtype is not None:
        return "fusing is for fp32 (here: autocast)"
    if getattr(model, "condition", None) is not None:
        return "a conditional model's decoder reads the held condition"
    if not isinstance(model, VAE) or type(model).decode is not VAE.decode or "decode" in vars(model):
        return f"{type(model).__name__} decodes its own way"
    dtype = param_device(model)[1]
    if dtype != torch.float32:
        return f"fusing is for float32 networks (here: {dtype})"
    if not hasattr(torch, "compile"):
        return "this torch has no torch.compile"
    return None


def should_fuse(fuse: bool | None, decodes: int, model: Any, device: torch.device, autocast_dtype: torch.dtype | None) -> bool:
    """``fuse`` True/False as asked (True where ``fusion_refusal`` allows, else a warning and False);
    None: where allowed and the job has at least ``FUSE_MIN_DECODES`` decodes."""
    if fuse is False:
        return False
    refusal = fusion_refusal(model, device, autocast_dtype)
    if refusal is not None:
        if fuse:
            warnings.warn(f"fuse=True ignored: {refusal}; evaluating in eager mode", stacklevel=3)
        return False
    return bool(fuse) or decodes >= FUSE_MIN_DECODES


def fused_for(model: Any, decodes: int, fuse: bool | None = None, autocast_dtype: torch.dtype | None = None) -> FusedLogPx | None:
    """A ``FusedLogPx`` of ``model`` for a job of ``decodes`` decodes where ``should_fuse`` (on the model's device) says so, else None."""
    return FusedLogPx(model) if should_fuse(fuse, decodes, model, param_device(model)[0], autocast_dtype) else None


class _DecodeLogPx(nn.Module):
    """log p(x|z) [b, c] for latents z [b*c, K] and each of several flat images xs [b, D] (x and a dequantized x + u):
    the decoder, run once, and the likelihood in one module."""

    def __init__(self, decoder: nn.Module, likelihood: Any, log_sig_x: Tensor):
        super().__init__()
        self.decoder, self.likelihood = decoder, likelihood
        self.register_buffer("log_sig_x", log_sig_x.detach().clone())

    def forward(self, z: Tensor, xs: list[Tensor]) -> list[Tensor]:  # z [b*c, K], each x [b, D] -> each [b, c]
        b = xs[0].shape[0]
        out = self.decoder(z).reshape(b, z.shape[0] // b, -1)  # [b, c, D]
        return [self.likelihood.log_prob(x[:, None, :].expand_as(out), out, self.log_sig_x) for x in xs]  # each [b, c]


class FusedLogPx:
    """log p(x|z) of a snapshot of ``model``'s decoder, compiled with frozen weights; eager if that fails or disagrees.

    Making one calls ``torch.compiler.reset()`` at its first pass: process-wide, so other functions compiled in
    this process (a ``--compile`` training step in the same notebook) compile again at their next call."""

    def __init__(self, model: Any):
        decoder = copy.deepcopy(model.decoder).eval().requires_grad_(False)  # the snapshot: frozen into the graph
        self.eager = _DecodeLogPx(decoder, model.likelihood, model.log_sig_x)
        self.model = weakref.ref(model)
        self.compiled: Any = None
        self.checked = False
        self.shape: tuple[int, int] | None = None  # the compiled [b, c]
        self.first_pass_seconds = 0.0  # compiling and the check against eager mode
        self.failed: str | None = None  # why the compiled path was given up, if it was

    def check_model(self, model: Any) -> None:
        """ValueError unless this is a snapshot of ``model`` as its weights are now."""
        if self.model() is not model:
            raise ValueError("fuse: this FusedLogPx was made for another model; make one for this model")
        if not _same_weights(self.eager, model):
            raise ValueError("fuse: the model's decoder changed since this FusedLogPx was made (its weights are a snapshot); make a new one")

    def __call__(self, z: Tensor, xs: list[Tensor]) -> list[Tensor]:
        """log p(x|z) [b, c] for z [b, c, K] in the decoder's dtype and each of the flat images xs [b, D].

        The first call's [b, c] is the compiled shape; any other pass runs as tiles of that shape, the last ones
        padded with zeros and cut out again, so the evaluator compiles once (each row of a tile is computed alone)."""
        b, c = z.shape[:2]
        self.shape = self.shape or (b, c)
        b0, c0 = self.shape
        if self.failed is not None:
            return self.eager(z.reshape(b * c, -1), xs)
        if (b, c) == (b0, c0):
            return self._compiled(z, xs)
        rows = []
        for i in range(0, b, b0):
            tiles = []
            for j in range(0, c, c0):
                zt = z[i : i + b0, j : j + c0]  # [<= b0, <= c0, K]
                bt, ct = zt.shape[:2]
                zt = F.pad(zt, (0, 0, 0, c0 - ct, 0, b0 - bt))  # [b0, c0, K]
                tiles.append([out[:bt, :ct] for out in self._compiled(zt, [F.pad(x[i : i + b0], (0, 0, 0, b0 - bt)) for x in xs])])
            rows.append([torch.cat([t[n] for t in tiles], dim=1) for n in range(len(xs))])  # each [<= b0, c]
        return [torch.cat([r[n] for r in rows], dim=0) for n in range(len(xs))]  # each [b, c]

    def _compiled(self, z: Tensor, xs: list[Tensor]) -> list[Tensor]:
        """The compiled module on one pass of the compiled shape (checked against eager mode the first time)."""
        flat = z.reshape(-1, z.shape[-1])  # [b0*c0, K]
        if self.failed is not None:
            return self.eager(flat, xs)
        t0 = time.perf_counter()
        try:
            if self.compiled is None:
                torch.compiler.reset()  # no graph of an earlier snapshot (its frozen weights) may serve this one
                self.compiled = torch.compile(self.eager, options={"freezing": True})
            with _freezing():  # dynamo reads it while tracing: the weights become the graph's constants
                got = self.compiled(flat, xs)
            if self.checked:
                return got
            want = self.eager(flat, xs)
            self.first_pass_seconds = time.perf_counter() - t0
            if all(torch.allclose(g, w, rtol=CHECK_RTOL, atol=CHECK_ATOL) for g, w in zip(got, want)):
                self.checked = True
                return got
            err = max((g - w).abs().max().item() for g, w in zip(got, want))
            self._give_up(f"the compiled log p(x|z) differs from eager mode by up to {err:.3g} nats")
            return want
        except Exception as exc:  # noqa: BLE001 - no C++ compiler, an unsupported op, an old torch: eager mode
            self._give_up(f"torch.compile failed ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})")
        return self.eager(flat, xs)

    def _give_up(self, why: str) -> None:
        self.failed = why
        warnings.warn(f"fused evaluation off: {why}; evaluating in eager mode", stacklevel=4)


def _same_weights(snapshot: _DecodeLogPx, model: Any) -> bool:
    """Whether the model's decoder (parameters and buffers) and log_sig_x hold the snapshot's values, compared by value:
    fused optimizers (``torch.optim.Adam(fused=True)``, the trainer's) change weights without bumping their versions."""
    mine = [*snapshot.decoder.parameters(), *snapshot.decoder.buffers(), snapshot.log_sig_x]
    theirs = [*model.decoder.parameters(), *model.decoder.buffers(), model.log_sig_x]
    return len(mine) == len(theirs) and all(
        a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b.detach().to(a.device)) for a, b in zip(mine, theirs)
    )


def _freezing() -> Any:
    """inductor's freezing on while a call traces (torch's private config; a no-op context where it is missing)."""
    try:
        from torch._inductor import config

        return config.patch(freezing=True)
    except Exception:  # noqa: BLE001 - a torch without this private config
        return contextlib.nullcontext()
