"""A prior over a VQ-VAE's grid of codes, fitted to the frozen encoder's codes (van den Oord et al. 2017, sec. 4):
two autoregressive networks over the h x w grid in raster order, their fit, NLL and samples, and the
bits/dim of images under the VQ-VAE with such a prior.

* ``GatedPixelCNN``: the gated PixelCNN (van den Oord et al. 2016, "Conditional Image Generation with PixelCNN
  Decoders"): a vertical stack that sees the rows above and a horizontal stack that sees the pixels to the
  left, gated tanh x sigmoid units, residual connections in the horizontal stack; no blind spot.
* ``CodeTransformer``: a small decoder-only transformer over the h w codes, each predicted from a start token
  and the codes before it (causal self-attention, learned positions).

Both map a grid of codes [B, h, w] to logits [B, M, h, w] in one pass, the logits at (i, j) depending only on
the codes before (i, j) in raster order; ``log_prob`` sums log p(c_ij | c_<ij) (in float64, through
log_softmax) and ``sample`` draws the codes one position at a time. ``fit_code_prior`` trains one with Adam;
``save_code_prior`` / ``load_code_prior`` keep it as safetensors with its settings in the metadata.

``vq_bits_per_dim``: the data's bits/dim under the VQ-VAE with the fitted prior, as in the paper: with q
one-hot (no entropy term), -log2 P(x) <= [-E_u log p(x + u | z_q(x)) - log p(z_q(x))] / (D ln 2) + 8 for 8-bit
images dequantized by u ~ U[0, 1/256)^D (Theis et al. 2016), the decoder's likelihood plus the prior's NLL of
the image's codes.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checkpoint import CheckpointError, load_weights, save_weights
from .data import to_float

__all__ = [
    "CodePrior", "GatedPixelCNN", "CodeTransformer", "PRIOR_NETS", "make_code_prior", "fit_code_prior", "code_nll",
    "save_code_prior", "load_code_prior", "vq_bits_per_dim", "FORMAT",
]

FORMAT = "vaekit-code-prior-1"


class CodePrior(nn.Module):
    """p(c) over grids of codes c [B, h, w] in 0..M-1, autoregressive in raster order."""

    kind = ""

    def __init__(self, codebook_size: int, grid: tuple[int, int], width: int, layers: int):
        super().__init__()
        self.codebook_size, self.grid, self.width, self.layers = int(codebook_size), (int(grid[0]), int(grid[1])), int(width), int(layers)

    def settings(self) -> dict[str, Any]:
        return {"kind": self.kind, "codebook_size": self.codebook_size, "grid": list(self.grid), "width": self.width, "layers": self.layers}

    def _check(self, codes: Tensor) -> None:
        if not isinstance(codes, Tensor) or codes.ndim != 3 or tuple(codes.shape[1:]) != self.grid or codes.dtype != torch.int64:
            got = f"{list(codes.shape)} {codes.dtype}" if isinstance(codes, Tensor) else type(codes).__name__
            raise ValueError(f"codes must be int64 of shape [B, {self.grid[0]}, {self.grid[1]}], got {got}")

    def logits(self, codes: Tensor) -> Tensor:
        """[B, M, h, w]: the logits of p(c_ij | c_<ij) at every position, from the grid codes [B, h, w]."""
        raise NotImplementedError

    def log_prob(self, codes: Tensor) -> Tensor:
        """log p(c) [B] in nats (float64): sum_ij log softmax(logits)_{c_ij}."""
        self._check(codes)
        logp = F.log_softmax(self.logits(codes).double(), dim=1)  # [B, M, h, w]
        return logp.gather(1, codes[:, None]).flatten(1).sum(1)  # [B]

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n grids [n, h, w] (int64), position by position in raster order; ``generator`` (CPU) seeds the draws."""
        device = next(self.parameters()).device
        codes = torch.zeros(n, *self.grid, dtype=torch.int64, device=device)
        was = self.training
        self.eval()
        try:
            for i in range(self.grid[0]):
                for j in range(self.grid[1]):
                    probs = F.softmax(self.logits(codes)[:, :, i, j].double(), dim=1)  # [n, M]
                    codes[:, i, j] = torch.multinomial(probs.cpu(), 1, generator=generator)[:, 0].to(device)
        finally:
            self.train(was)
        return codes


class _CausalConv(nn.Conv2d):
    """A conv over the rows above (``vertical``: kernel (k//2 + 1) x k, the last kernel row on the input's own row)
    or over the pixels to the left (horizontal: 1 x (k//2 + 1), the last column on the input's own pixel), padded
    so that the output has the input's size. ``first``: the kernel's part on the own row (vertical) or pixel
    (horizontal) is masked out, so that output (i, j) never sees input (i, j)."""

    def __init__(self, cin: int, cout: int, k: int, vertical: bool, first: bool):
        kernel = (k // 2 + 1, k) if vertical else (1, k // 2 + 1)
        super().__init__(cin, cout, kernel)
        self.pad = (k // 2, k // 2, k // 2, 0) if vertical else (k // 2, 0, 0, 0)  # (left, right, top, bottom)
        mask = torch.ones(kernel)
        if first:  # the own row (vertical) or the own pixel (horizontal): the last kernel row or column
            mask[-1, -1 if not vertical else slice(None)] = 0
        self.register_buffer("mask", mask[None, None], persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(F.pad(x, self.pad), self.weight * self.mask, self.bias)


class _GatedLayer(nn.Module):
    """One gated layer (van den Oord et al. 2016, fig. 2): y = tanh(W_f * x) . sigmoid(W_g * x) on both stacks, the
    vertical stack feeding the horizontal one (1x1), a residual 1x1 on the horizontal stack after the first layer.

    Invariants, by induction over the layers: the vertical stack's output at row i depends on the codes of the rows
    above i only (the first layer masks the own row out; later ones read row i of features that hold rows < i), so
    it may feed the horizontal stack at (i, j) as it is; the horizontal stack's output at (i, j) depends on the
    codes before (i, j) in raster order only."""

    def __init__(self, width: int, k: int, first: bool):
        super().__init__()
        self.first = first
        self.v = _CausalConv(width, 2 * width, k, vertical=True, first=first)
        self.h = _CausalConv(width, 2 * width, k, vertical=False, first=first)
        self.v2h = nn.Conv2d(2 * width, 2 * width, 1)
        self.out = nn.Conv2d(width, width, 1)

    @staticmethod
    def gate(t: Tensor) -> Tensor:
        a, b = t.chunk(2, dim=1)
        return torch.tanh(a) * torch.sigmoid(b)

    def forward(self, xv: Tensor, xh: Tensor) -> tuple[Tensor, Tensor]:
        hv = self.v(xv)  # [B, 2W, h, w]
        out = self.out(self.gate(self.h(xh) + self.v2h(hv)))  # [B, W, h, w]
        return self.gate(hv), out if self.first else out + xh


class GatedPixelCNN(CodePrior):
    """The gated PixelCNN over the code grid: an embedding of the codes, ``layers`` gated layers of ``width``
    channels (5x5 kernels), then 1x1 -> ReLU -> 1x1 to the M logits."""

    kind = "pixelcnn"

    def __init__(self, codebook_size: int, grid: tuple[int, int], width: int = 64, layers: int = 6, kernel: int = 5):
        super().__init__(codebook_size, grid, width, layers)
        self.embed = nn.Embedding(codebook_size, width)
        self.stack = nn.ModuleList([_GatedLayer(width, kernel, first=i == 0) for i in range(layers)])
        self.head = nn.Sequential(nn.Conv2d(width, 2 * width, 1), nn.ReLU(), nn.Conv2d(2 * width, codebook_size, 1))

    def logits(self, codes: Tensor) -> Tensor:
        self._check(codes)
        x = self.embed(codes).permute(0, 3, 1, 2)  # [B, W, h, w]
        xv = xh = x
        for layer in self.stack:
            xv, xh = layer(xv, xh)
        return self.head(xh)  # [B, M, h, w]


class CodeTransformer(CodePrior):
    """A decoder-only transformer over the h w codes in raster order: token and learned position embeddings,
    ``layers`` pre-norm blocks of causal self-attention (4 heads) and a 4x MLP, a linear head to the M logits."""

    kind = "transformer"

    def __init__(self, codebook_size: int, grid: tuple[int, int], width: int = 64, layers: int = 4, heads: int = 4):
        super().__init__(codebook_size, grid, width, layers)
        n = self.grid[0] * self.grid[1]
        self.embed = nn.Embedding(codebook_size + 1, width)  # the last token is the start token
        self.pos = nn.Parameter(torch.randn(n, width) * 0.02)
        block = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, codebook_size)
        self.register_buffer("causal", nn.Transformer.generate_square_subsequent_mask(n), persistent=False)

    def logits(self, codes: Tensor) -> Tensor:
        self._check(codes)
        b, (h, w) = codes.shape[0], self.grid
        seq = codes.reshape(b, h * w)
        start = torch.full((b, 1), self.codebook_size, dtype=torch.int64, device=codes.device)
        tokens = torch.cat([start, seq[:, :-1]], dim=1)  # [B, n]: position t sees the start token and c_<t
        y = self.blocks(self.embed(tokens) + self.pos, mask=self.causal, is_causal=True)  # [B, n, W]
        return self.head(self.norm(y)).transpose(1, 2).reshape(b, self.codebook_size, h, w)


PRIOR_NETS: dict[str, type[CodePrior]] = {"pixelcnn": GatedPixelCNN, "transformer": CodeTransformer}


def make_code_prior(kind: str, codebook_size: int, grid: tuple[int, int], width: int = 64, layers: int = 6) -> CodePrior:
    if kind not in PRIOR_NETS:
        raise ValueError(f"the code prior must be one of {', '.join(PRIOR_NETS)}, got {kind!r}")
    return PRIOR_NETS[kind](codebook_size, grid, width=width, layers=layers)


def _batches(n: int, size: int, gen: torch.Generator) -> Iterator[Tensor]:
    perm = torch.randperm(n, generator=gen)
    for start in range(0, n, size):
        yield perm[start : start + size]


def fit_code_prior(
    prior: CodePrior, codes: Tensor, *, epochs: int = 2, minutes: float | None = None, batch_size: int = 128, lr: float = 1e-3,
    seed: int = 0, progress: bool = False, clock: Callable[[], float] = time.perf_counter,
) -> dict[str, Any]:
    """Train ``prior`` on grids ``codes`` [N, h, w] by maximum likelihood (Adam, ``lr`` held, then linearly to 0 over
    the last 20% of the steps), for ``epochs`` or until ``minutes`` of training pass on ``clock`` (wall time; e.g.
    ``time.process_time`` for this process's CPU time); returns what was done: steps, epochs, seconds (on the
    clock) and the mean training NLL (nats per grid) of the last epoch."""
    from tqdm.auto import tqdm

    prior._check(codes)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    device = next(prior.parameters()).device
    opt = torch.optim.Adam(prior.parameters(), lr=lr)
    steps_per_epoch = math.ceil(codes.shape[0] / batch_size)
    total = epochs * steps_per_epoch
    step, t0, last, done = 0, clock(), [], 0
    prior.train()
    bar = tqdm(total=total, desc="code prior", disable=not progress, dynamic_ncols=True)
    for epoch in range(epochs):
        last = []
        for idx in _batches(codes.shape[0], batch_size, gen):
            frac = step / max(1, total)
            if minutes is not None:
                frac = max(frac, (clock() - t0) / (60 * minutes))
                if frac >= 1:
                    break
            for g in opt.param_groups:
                g["lr"] = lr * min(1.0, (1.0 - frac) / 0.2)
            loss = -prior.log_prob(codes[idx].to(device)).float().mean()  # nats per grid
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            last.append(loss.item())
            step += 1
            bar.update(1)
        done = epoch + 1
        if minutes is not None and clock() - t0 >= 60 * minutes:
            break
    bar.close()
    prior.eval()
    return {"steps": step, "epochs": done, "seconds": clock() - t0, "train_nll": sum(last) / max(1, len(last)),
            "batch_size": batch_size, "lr": lr, "seed": seed}


@torch.no_grad()
def code_nll(prior: CodePrior, codes: Tensor, batch_size: int = 500) -> Tensor:
    """-log p(c) [N] (float64, CPU) in nats for grids ``codes`` [N, h, w]."""
    device = next(prior.parameters()).device
    was = prior.training
    prior.eval()
    try:
        out = [-prior.log_prob(codes[s : s + batch_size].to(device)).cpu() for s in range(0, codes.shape[0], batch_size)]
    finally:
        prior.train(was)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


def save_code_prior(path: str | os.PathLike, prior: CodePrior, info: dict[str, Any]) -> None:
    """The prior's weights as safetensors (atomically), its settings and ``info`` as JSON metadata."""
    save_weights(path, prior.state_dict(), {"format": FORMAT, "settings": json.dumps(prior.settings()), "info": json.dumps(info)})


def load_code_prior(path: str | os.PathLike) -> tuple[CodePrior, dict[str, Any]]:
    """(the prior, its info) from a file of ``save_code_prior``; CheckpointError naming the file if it is not one."""
    tensors, meta = load_weights(path)
    try:
        if meta.get("format") != FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT!r}")
        s = json.loads(meta["settings"])
        prior = make_code_prior(s["kind"], s["codebook_size"], tuple(s["grid"]), width=s["width"], layers=s["layers"])
        prior.load_state_dict(tensors)
        info = json.loads(meta.get("info", "{}"))
    except (KeyError, ValueError, RuntimeError, TypeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is not a vaekit code prior: {type(e).__name__}: {e}") from None
    prior.eval()
    return prior, info if isinstance(info, dict) else {}


@torch.no_grad()
def vq_bits_per_dim(model: Any, prior: CodePrior, images: Any, *, seed: int = 0, batch_size: int = 500) -> dict[str, Tensor]:
    """Per image [N] (float64, CPU), for 8-bit ``images`` [N, C, H, W] under the VQ-VAE ``model`` with the code prior:

    * ``decoder_nll``: -log p(x + u | z_q(x)) in nats, u ~ U[0, 1/256)^D drawn once per image (seeded);
    * ``prior_nll``: -log p(z_q(x)) in nats under ``prior``;
    * ``bits_per_dim``: (decoder_nll + prior_nll) / (D ln 2) + 8, an upper bound on -log2 P(x) / D in expectation
      over u (q is one-hot: no entropy term; van den Oord et al. 2017, sec. 4.1; Theis et al. 2016);
    * ``codes``: the codes z_q(x) [N, h, w].
    """
    p = model.log_sig_x
    dec, pri, all_codes = [], [], []
    gen = torch.Generator().manual_seed(seed)
    was = model.training
    model.eval()
    try:
        for start in range(0, images.shape[0], batch_size):
            x = to_float(images[start : start + batch_size])  # [b, C, H, W] on the CPU
            u = torch.rand(x.shape, generator=gen, dtype=x.dtype) / 256.0  # [b, C, H, W] the dequantization noise
            zq, codes = model.quantize(model.encode(x.to(p.device, p.dtype)))  # [b, K], [b, h*w]
            out = model.decode(zq[:, None, :]).flatten(2).to(torch.float64)  # [b, 1, D]
            xu = (x + u).to(p.device, torch.float64).flatten(1)[:, None, :]  # [b, 1, D]
            dec.append(-model.likelihood.log_prob(xu, out, model.log_sig_x.detach().double())[:, 0].cpu())  # [b]
            grid = codes.reshape(-1, *model.grid)
            pri.append(code_nll(prior, grid))
            all_codes.append(grid.cpu())
    finally:
        model.train(was)
    d = images[0].numel()
    decoder_nll, prior_nll = torch.cat(dec), torch.cat(pri)
    bpd = (decoder_nll + prior_nll) / (d * math.log(2.0)) + 8.0
    return {"decoder_nll": decoder_nll, "prior_nll": prior_nll, "bits_per_dim": bpd, "codes": torch.cat(all_codes)}
