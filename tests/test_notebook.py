"""examples/walkthrough.ipynb stays valid and runs top to bottom, so it never goes stale.

Two tests:

* ``test_notebook_is_valid`` (cheap, always): the file is valid nbformat 4, every code cell
  compiles (IPython magics stripped), the committed outputs hold no error, every check the
  notebook printed passed, and the file stays small enough to read on GitHub.
* ``test_notebook_executes``: a real Jupyter kernel running *this* interpreter executes the
  notebook in fast mode (``VAEKIT_NOTEBOOK_FAST=1``: 2,048 training images, one epoch, 50
  images evaluated) with nbclient, and the outputs are checked: every printed check says OK,
  the figures are there, training showed its progress bars. Skipped, with the reason, where
  nbclient, nbformat or ipykernel is not installed.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "walkthrough.ipynb"
MAX_BYTES = 1_500_000  # committed with outputs; keep it light enough for GitHub's viewer
CELL_TIMEOUT_S = 300

# what the notebook checks against torch.distributions (and more), in the order it prints them
CHECKS = [
    "log_prob == Independent(Normal).log_prob",
    "kl_q_p_exact == torch.distributions.kl_divergence",
    "kl_q_p_mc == mean of log q - log p (torch.distributions)",
    "the MC error falls like 1/sqrt(N) (slope -0.5 +- 0.1)",
    "rsample == Normal.rsample under the same seed",
    "gradients reach mu and log sigma",
    "sample moments match mu and sigma (within 0.02)",
    "elbo == -mean log p(x|z) + KL(q || N(0, I)) (torch.distributions)",
    "SimpleVAE.elbo(x) == -elbo(...).mean()",
]
MIN_FIGURES = 6  # KL error, rsample histogram, ELBO curve, samples, reconstructions, latent map + scatter


def _source(cell: dict) -> str:
    src = cell["source"]
    return "".join(src) if isinstance(src, list) else src


def _python_only(src: str) -> str:
    """Blank out IPython-only lines (%magics, !shell commands) so the cell compiles as Python."""
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in src.splitlines())


def _stream_text(cells: list[dict], name: str) -> str:
    out = []
    for cell in cells:
        for o in cell.get("outputs", []):
            if o.get("output_type") == "stream" and o.get("name") == name:
                out.append(_source({"source": o["text"]}))
    return "".join(out)


def _check_lines(stdout: str) -> dict[str, str]:
    return dict(re.findall(r"^check (.+): (OK|FAILED)$", stdout, flags=re.M))


def _assert_checks_passed(stdout: str) -> None:
    results = _check_lines(stdout)
    missing = [c for c in CHECKS if c not in results]
    failed = [c for c, r in results.items() if r != "OK"]
    assert not missing, f"checks not printed: {missing}"
    assert not failed, f"checks failed: {failed}"


def _figures(cells: list[dict]) -> int:
    return sum(
        "image/png" in o.get("data", {})
        for cell in cells
        for o in cell.get("outputs", [])
        if o.get("output_type") in ("display_data", "execute_result")
    )


def test_notebook_is_valid():
    raw = NOTEBOOK.read_bytes()
    assert len(raw) < MAX_BYTES, f"{NOTEBOOK.name} is {len(raw):,} bytes; keep it under {MAX_BYTES:,} (lower the dpi)"
    nb = json.loads(raw)
    assert nb["nbformat"] == 4
    try:
        import nbformat
    except ImportError:
        pass  # the structural checks below still run
    else:
        nbformat.validate(nbformat.reads(raw.decode(), as_version=4))

    cells = nb["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    assert code, "the notebook has no code cell"
    for i, cell in enumerate(code):
        compile(_python_only(_source(cell)), f"{NOTEBOOK.name}, code cell {i + 1}", "exec")

    # the first code cell is the budget: fast mode is what the execution test runs
    assert 'os.environ.get("VAEKIT_NOTEBOOK_FAST"' in _source(code[0])

    # the committed outputs are a clean run that reads well
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"the committed notebook holds an error output: {errors[0].get('ename')}"
    assert all(c.get("execution_count") for c in code), "the committed notebook is not fully executed"
    _assert_checks_passed(_stream_text(code, "stdout"))
    assert _figures(code) >= MIN_FIGURES


@pytest.fixture
def kernel_manager(tmp_path):
    """A kernel manager whose "python3" kernel is this very interpreter (not whatever is on PATH)."""
    pytest.importorskip("nbformat", reason="executing the notebook needs nbformat (the test extra)")
    pytest.importorskip("nbclient", reason="executing the notebook needs nbclient (the test extra)")
    pytest.importorskip("ipykernel", reason="executing the notebook needs ipykernel (the test extra)")
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    spec_dir = tmp_path / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "Python 3 (vaekit tests)",
                "language": "python",
            }
        )
    )
    specs = KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")], ensure_native_kernel=False)
    return KernelManager(kernel_name="python3", kernel_spec_manager=specs)


def test_notebook_executes(tmp_path, kernel_manager):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    env = dict(os.environ)
    env["VAEKIT_NOTEBOOK_FAST"] = "1"
    env["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"  # quiet debugpy's frozen-modules warning
    env.pop("MPLBACKEND", None)  # the notebook's %matplotlib inline decides
    client = NotebookClient(
        nb,
        km=kernel_manager,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        record_timing=False,
        resources={"metadata": {"path": str(tmp_path)}},  # the kernel's working directory
    )
    client.execute(env=env)  # raises CellExecutionError (with the cell and traceback) on any error

    code = [c for c in nb.cells if c.cell_type == "code"]
    stdout = _stream_text(code, "stdout")
    assert "FAST = True" in stdout, "the kernel did not see VAEKIT_NOTEBOOK_FAST=1"
    m = re.search(r"^python: .* \(prefix (.*)\)$", stdout, flags=re.M)
    assert m and os.path.realpath(m.group(1)) == os.path.realpath(sys.prefix), (
        f"the kernel ran another Python: {m.group(0) if m else 'nothing printed'} (tests run in {sys.prefix})"
    )
    _assert_checks_passed(stdout)
    assert _figures(code) >= MIN_FIGURES
    # training drew tqdm bars: text bars on stderr, or widgets where ipywidgets is installed
    widgets = [
        o for c in code for o in c.outputs
        if o.output_type == "display_data" and "application/vnd.jupyter.widget-view+json" in o.data
    ]
    assert widgets or "epochs" in _stream_text(code, "stderr"), "train_vae showed no progress bars"
    assert "learned sigma_x" in stdout and "log p(x), k=50" in stdout
