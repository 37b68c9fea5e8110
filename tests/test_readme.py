"""The README's Python example runs as written."""

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(capsys):
    from vaekit.registry import discover

    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README has no python example"
    namespace: dict = {}
    saved = {reg: dict(reg._parts) for reg in discover().values()}
    try:  # "Extending vaekit" registers new parts: leave the registries as they were
        for code in blocks:
            exec(compile(code, str(README), "exec"), namespace)
        added = {reg.kind: set(reg._parts) - set(parts) for reg, parts in saved.items()}
    finally:
        for reg, parts in saved.items():
            reg._parts = parts
    assert {k: v for k, v in added.items() if v} == {
        "arch": {"linear"}, "likelihood": {"laplace"}, "prior": {"wide"}, "posterior": {"fixed"}, "objective": {"free-nats"},
        "condition": {"parity"},
    }
    assert namespace["images"].shape == (9, 1, 28, 28)
    assert torch.isfinite(torch.tensor(namespace["elbos"])).all()
    out = capsys.readouterr().out
    assert "torch.Size([60000, 1, 28, 28])" in out and "ELBO of the last batch" in out
    assert namespace["ll"].shape == (100,) and namespace["ll"].dtype == torch.float64
    assert namespace["result"]["log_likelihood"] >= namespace["result"]["elbo"] - 3 * namespace["result"]["elbo_se"]
    assert "active units" in out and "my VAE: ELBO" in out


def test_readme_code_fences_stand_on_lines_of_their_own():
    """A fence with text after it (e.g. "``` `--tensorboard` also ...") does not close its block on GitHub: the rest
    of the section would render as code. Every fence is a line of its own (with a language when it opens), and they pair up."""
    fences = [(number, line) for number, line in enumerate(README.read_text().splitlines(), start=1) if "```" in line]
    bad = [(number, line) for number, line in fences if not re.fullmatch(r"```[\w+-]*", line)]
    assert not bad, bad
    closing = fences[1::2]
    assert len(fences) % 2 == 0 and all(line == "```" for _, line in closing), closing
