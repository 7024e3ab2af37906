"""colab/explore.ipynb runs top to bottom offline (issue 5, item 4), and what it prints agrees with closed forms.

The notebook is executed with nbclient in the QUICK setting (CONSISTENCY_NOTEBOOK_QUICK=1), from the repository root.
Its last cell prints ``SUMMARY {json}``; the checks below read it:

* the PF-ODE endpoints of the exact mog1d denoiser (Heun, 128 Karras points, 2000 paths) have the mixture's exact mean 0
  and std √(0.1² + 0.5²) = 0.5099 (TOY_STD);
* the exact-teacher Heun samples (35 NFE) score like real data: SW1 within 2× the noise floor, in-mode fraction within
  0.03 of the floor's;
* CD's loss falls; the run written by train_and_evaluate loads back with its method and step and samples the right
  shape;
* every metric line of section 3 is printed with its noise floor, and the figures are rendered (image/png outputs).

nbclient, nbformat and ipykernel come with the ``test`` extra of setup.py; a missing one fails the test with a message
(no silent skip).
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import time

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(REPO_ROOT, "colab", "explore.ipynb")
GENERATOR = os.path.join(REPO_ROOT, "colab", "make_notebook.py")
CELL_TIMEOUT_S = 600
LOOP_STEPS_QUICK = 40  # the notebook's LOOP_STEPS when QUICK
NUM_SAMPLES_QUICK = 1000  # the notebook's NUM_SAMPLES when QUICK


def _require(module: str):
    try:
        return __import__(module)
    except ImportError as e:
        pytest.fail(f"{module} is needed to execute colab/explore.ipynb ({e}); install the test extra: "
                    "pip install -e '.[test]'")


def _ensure_python3_kernelspec() -> None:
    """nbclient starts the kernel named in the notebook ('python3'); install ipykernel's spec when none exists."""
    from jupyter_client.kernelspec import KernelSpecManager
    if "python3" not in KernelSpecManager().find_kernel_specs():
        import ipykernel.kernelspec
        ipykernel.kernelspec.install(user=True)


def _load_generator():
    spec = importlib.util.spec_from_file_location("colab_make_notebook", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _text_outputs(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            parts.append(out.get("text", ""))
        elif "data" in out and "text/plain" in out["data"]:
            parts.append(out["data"]["text/plain"])
    return "".join(parts)


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    nbformat = _require("nbformat")
    nbclient = _require("nbclient")
    _require("ipykernel")
    _ensure_python3_kernelspec()
    nb = nbformat.read(NOTEBOOK, as_version=4)
    old = {k: os.environ.get(k) for k in ("CONSISTENCY_NOTEBOOK_QUICK", "TMPDIR")}
    os.environ["CONSISTENCY_NOTEBOOK_QUICK"] = "1"  # the kernel inherits this process's environment
    os.environ["TMPDIR"] = str(tmp_path_factory.mktemp("notebook_tmp"))  # the notebook's workdir goes here
    try:
        client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                                         resources={"metadata": {"path": REPO_ROOT}})
        start = time.perf_counter()
        client.execute()  # raises CellExecutionError (with the cell and traceback) when a cell fails
        seconds = time.perf_counter() - start
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    print(f"\ncolab/explore.ipynb executed (QUICK) in {seconds:.1f} s")
    text = "\n".join(_text_outputs(c) for c in nb.cells if c.cell_type == "code")
    match = re.search(r"^SUMMARY (\{.*\})$", text, re.MULTILINE)
    assert match, "the last cell did not print its SUMMARY line"
    return nb, text, json.loads(match.group(1))


def test_committed_notebook_is_generated_and_has_no_outputs():
    nbformat = _require("nbformat")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{cell.id} has outputs: commit it clean"
    assert _load_generator().main(["--check"]) == 0, "explore.ipynb differs from make_notebook.py: regenerate it"


@pytest.mark.slow
def test_notebook_runs_and_pf_ode_endpoints_match_the_exact_mixture(executed):
    _, text, summary = executed
    assert "QUICK=True" in text
    pf = summary["pf_ode"]
    # 2000 endpoints of ½N(−0.5, 0.1²) + ½N(0.5, 0.1²): the sample mean has std 0.51/√2000 ≈ 0.011 and the
    # sample std ≈ 0.002; 0.04 / 0.02 leave room for Heun's discretisation error only.
    assert pf["exact_std"] == pytest.approx((0.1 ** 2 + 0.5 ** 2) ** 0.5, rel=1e-6)
    assert abs(pf["mean"]) < 0.04, pf
    assert pf["std"] == pytest.approx(pf["exact_std"], abs=0.02), pf


@pytest.mark.slow   # executes the notebook (≈ 36 s, shared by the module's slow tests)
def test_exact_teacher_samples_score_like_real_data(executed):
    _, _, summary = executed
    teacher = summary["metrics"]["Heun teacher 35"]
    assert teacher["swd"] < 2.0 * teacher["swd_floor"], teacher
    assert teacher["high_quality"] > teacher["high_quality_floor"] - 0.03, teacher
    assert teacher["mode_coverage"] == 1.0, teacher
    data = summary["metrics"]["data 0"]  # a third independent real draw: at the floor by construction
    assert data["swd"] < 2.0 * data["swd_floor"], data


@pytest.mark.slow   # executes the notebook (≈ 36 s, shared by the module's slow tests)
def test_metric_lines_have_noise_floors_and_figures_render(executed):
    nb, text, summary = executed
    for name in ("CD", "CT"):
        for nfe in (1, 2, 4):
            line = re.search(rf"^{name}\s+{nfe} NFE\s+SW1 (\S+) \(floor (\S+)\)\s+modes (\S+) \(floor (\S+)\)",
                             text, re.MULTILINE)
            assert line, f"no metric line for {name} {nfe} NFE"
            values = [float(v) for v in line.groups()]
            assert all(v == v for v in values), line.group(0)  # not NaN
            assert float(line.group(1)) == pytest.approx(summary["metrics"][f"{name} {nfe}"]["swd"], abs=1e-4)
    images = sum(1 for c in nb.cells if c.cell_type == "code" for o in c.outputs
                 if "image/png" in o.get("data", {}))
    assert images >= 5, f"expected the 4 figures and the loop's sample picture, got {images} images"


@pytest.mark.slow   # executes the notebook (≈ 36 s, shared by the module's slow tests)
def test_cd_loss_falls_and_the_workdir_loads_back(executed):
    _, _, summary = executed
    first, last = summary["loss"]["cd"]
    assert last < first, summary["loss"]
    loaded = summary["loaded"]
    assert loaded["method"] == "cd" and loaded["step"] == LOOP_STEPS_QUICK, loaded
    assert loaded["shape"] == [NUM_SAMPLES_QUICK, 2] and loaded["finite"], loaded
    files = summary["workdir_files"]
    for expected in ("config.json", "checkpoints", "samples", "eval"):
        assert expected in files, files
    assert any(f.startswith("events.out.tfevents") for f in files), files
