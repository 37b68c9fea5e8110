"""The README's Python example runs as written."""

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(capsys):
    from vaekit.architectures import ARCHITECTURES
    from vaekit.likelihoods import LIKELIHOODS
    from vaekit.objectives import OBJECTIVES

    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README has no python example"
    namespace: dict = {}
    registries = [(r, dict(r)) for r in (ARCHITECTURES, LIKELIHOODS, OBJECTIVES)]
    try:  # "Extending vaekit" registers new parts: leave the registries as they were
        for code in blocks:
            exec(compile(code, str(README), "exec"), namespace)
    finally:
        for registry, saved in registries:
            registry.clear()
            registry.update(saved)
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
