"""The README's Python example runs as written."""

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README has no python example"
    namespace: dict = {}
    for code in blocks:
        exec(compile(code, str(README), "exec"), namespace)
    assert namespace["images"].shape == (9, 1, 28, 28)
    assert torch.isfinite(torch.tensor(namespace["elbos"])).all()
    out = capsys.readouterr().out
    assert "torch.Size([60000, 1, 28, 28])" in out and "ELBO of the last batch" in out
    assert namespace["ll"].shape == (100,) and namespace["ll"].dtype == torch.float64
    assert namespace["result"]["log_likelihood"] >= namespace["result"]["elbo"] - 3 * namespace["result"]["elbo_se"]
    assert "active units" in out
