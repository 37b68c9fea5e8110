"""The importance-sampled evaluator's log p(x|z), fused: the decoder and the likelihood compiled together with
``torch.compile`` (inductor) on the CPU.

In eager mode each per-pixel step of a pass (the hidden layers' tanh, the Bernoulli's -softplus((1 - 2x) l), the
sum over the pixels) is a separate loop over a [M, D] tensor: about 40% of a pass for the paper's MLP
(benchmarks/README.md, "Evaluation on the full test set"). Compiled, those steps run as fused loops, and with
inductor's *freezing* the weights are constants of the compiled graph, so its linear layers become oneDNN's with
their bias and activation fused in.

**Frozen weights are a snapshot.** ``FusedLogPx`` compiles a private copy of the decoder, taken when it is made:
training the model afterwards does not change it (make a new one per evaluation, as ``log_likelihood`` does), and
a new one resets torch.compile's caches (``torch.compiler.reset()``), so no compiled graph of an earlier copy, with
its frozen weights, can be reused for it.

**Where and when.** Only where it can be right and pays: an unconditional model with the standard ``decode``, on
the CPU, in fp32 (no autocast), for an evaluation of at least ``FUSE_MIN_DECODES`` decodes (compiling costs
10-45 s). The first pass is checked against the eager computation; a compiler that fails or disagrees gives a
warning and the eager path for the rest of the evaluation (the numbers are then the eager ones).
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import torch
from torch import Tensor, nn

from .model import VAE

__all__ = ["FUSE_MIN_DECODES", "FusedLogPx", "fusion_refusal", "should_fuse"]

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
    if not isinstance(model, VAE) or type(model).decode is not VAE.decode:
        return f"{type(model).__name__} decodes its own way"
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
    """log p(x|z) of a snapshot of ``model``'s decoder, compiled with frozen weights; eager if that fails or disagrees."""

    def __init__(self, model: Any):
        decoder = copy.deepcopy(model.decoder).eval().requires_grad_(False)  # the snapshot: frozen into the graph
        self.eager = _DecodeLogPx(decoder, model.likelihood, model.log_sig_x)
        self.compiled: Any = None
        self.checked = False
        self.shape: tuple[int, int] | None = None  # the compiled [b, c]
        self.failed: str | None = None  # why the compiled path was given up, if it was

    def __call__(self, z: Tensor, xs: list[Tensor]) -> list[Tensor]:
        """log p(x|z) [b, c] for z [b, c, K] in the decoder's dtype and each of the flat images xs [b, D].

        The first call's [b, c] is the compiled shape: a smaller pass (the last images, the last samples) is padded
        to it with zeros and its rows cut out, so the evaluator compiles once."""
        b, c = z.shape[:2]
        if self.failed is None and self.shape is not None and b <= self.shape[0] and c <= self.shape[1] and (b, c) != self.shape:
            z = torch.nn.functional.pad(z, (0, 0, 0, self.shape[1] - c, 0, self.shape[0] - b))  # [b0, c0, K]
            xs = [torch.nn.functional.pad(x, (0, 0, 0, self.shape[0] - b)) for x in xs]  # each [b0, D]
            return [out[:b, :c] for out in self(z, xs)]
        self.shape = self.shape or (b, c)
        flat = z.reshape(-1, z.shape[-1])  # [b*c, K]
        if self.failed is None:
            try:
                if self.compiled is None:
                    torch.compiler.reset()  # no graph of an earlier snapshot (its frozen weights) may serve this one
                    self.compiled = torch.compile(self.eager, options={"freezing": True})
                got = self.compiled(flat, xs)
                if self.checked:
                    return got
                want = self.eager(flat, xs)
                if all(torch.allclose(g, w, rtol=CHECK_RTOL, atol=CHECK_ATOL) for g, w in zip(got, want)):
                    self.checked = True
                    return got
                err = max((g - w).abs().max().item() for g, w in zip(got, want))
                self._give_up(f"the compiled log p(x|z) differs from eager mode by up to {err:.3g} nats")
                return want
            except Exception as exc:  # no C++ compiler, an unsupported op, an old torch: eager mode
                self._give_up(f"torch.compile failed ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})")
        return self.eager(flat, xs)

    def _give_up(self, why: str) -> None:
        self.failed = why
        warnings.warn(f"fused evaluation off: {why}; evaluating in eager mode", stacklevel=3)
