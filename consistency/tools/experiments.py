"""One-command method comparison (issue 5): teacher + CD / CT / iCT / ECT students, evaluated at 1, 2 and 4 steps
next to the teacher at 35 NFE, written to ``docs/results.md`` with pictures.

    python -m consistency.tools.experiments --workroot=workdirs/compare --out=docs/results.md
    python -m consistency.tools.experiments --teacher=workdirs/digits_edm      # reuse a trained digits teacher
    python -m consistency.tools.experiments --suite=toy                        # only the 2-D mixture (exact teacher)

Run from the repository root (it reads ``configs/``). Every run lives in ``<workroot>/<suite>_<method>`` and resumes or
is reused when it already finished, so re-running only re-evaluates (evaluation is idempotent). Each digits metric is
the Fréchet distance / KID / precision-recall in the feature space of the in-project digits classifier ("FD on an
in-project classifier", not FID), always printed with its noise floor (two disjoint real draws of the same size).
"""
from __future__ import annotations

import json
import os
import shutil
import time

from absl import app, flags, logging

from consistency.tools.recipes import ensure_ode_pairs, load_config_file, scaled_recipe as _scaled  # noqa: F401

_WORKROOT = None
_OUT = None
_TEACHER = None
_SUITES = None
_METHODS = None
_STEPS = None


def define_flags() -> None:
    """The command's absl flags, defined only when it runs as a program (importing the module defines none,
    so tests and other programs can import it beside scripts with flags of the same names)."""
    global _WORKROOT, _OUT, _TEACHER, _SUITES, _METHODS, _STEPS
    _WORKROOT = flags.DEFINE_string("workroot", "workdirs/compare", "Folder holding one workdir per run.")
    _OUT = flags.DEFINE_string("out", "docs/results.md", "Markdown report to write (pictures go beside it).")
    _TEACHER = flags.DEFINE_string("teacher", "", "An existing digits EDM workdir to reuse instead of training one.")
    _SUITES = flags.DEFINE_list("suite", ["toy", "digits"], "Which suites: toy (2-D mixture, exact teacher), digits.")
    _METHODS = flags.DEFINE_list("methods", ["cd", "ct", "ict", "ecm"], "Students to train.")
    _STEPS = flags.DEFINE_float("steps_scale", 1.0, "Multiply every run's num_steps (e.g. 0.05 for a smoke run).")


# Context only: CIFAR-10 FID from the papers (docs/methods.md §16); our digits numbers are not comparable to these.
PAPER_CIFAR10 = {"edm": "1.97 @ 35 NFE", "cd": "3.55 / 2.93 (LPIPS)", "ct": "8.70 / 5.83", "ict": "2.83 / 2.46",
                 "ecm": "3.60 / 2.11", "dmd": "3.77 (1 step)", "dmd2": "c 2.13 (1 step)", "sid": "1.92 (1 step)",
                 "add": "—", "ctm": "1.98 / 1.87", "mcm_vp": "— (ImageNet-64 1.4 @ 8)", "mcm_ve": "—"}


def run_one(config, workdir: str) -> dict:
    """Train (or resume / reuse) and evaluate one run; returns its eval report and wall time."""
    from consistency import api
    from consistency.run import reports, train
    start = time.time()
    train.train_and_evaluate(config, workdir)
    loaded = api.load(workdir)
    report = reports.evaluate_state(config, loaded.method, loaded.state, loaded.dataset, loaded.step, workdir)
    return {"report": report, "seconds": time.time() - start, "workdir": workdir}


def suite_runs(suite: str, scale: float):
    """(name, config) pairs of one suite, teacher first."""
    prefix = "configs/toy_" if suite == "toy" else "configs/digits_"
    runs = []
    runs.append(("edm", _scaled(load_config_file(prefix + "edm.py"), scale)))
    for method in _METHODS.value:
        runs.append((method, _scaled(load_config_file(f"{prefix}{method}.py"), scale)))
    return runs


METRIC_COLUMNS = {
    "toy": [("swd", "sliced W1"), ("mmd", "MMD²"), ("energy", "energy"), ("mode_coverage", "modes"),
            ("high_quality", "within 3σ"), ("log_likelihood", "log-lik")],
    "digits": [("fd", "FD"), ("kid", "KID"), ("precision", "precision"), ("recall", "recall"),
               ("pixel_swd", "pixel SW1")],
}


def _metric(metrics: dict, key: str):
    for name in (key, f"{key}_mean"):
        if name in metrics:
            return metrics[name], metrics.get(f"{key}_floor", metrics.get(f"{name}_floor"))
    return None, None


def markdown_table(suite: str, results: dict) -> list[str]:
    columns = METRIC_COLUMNS[suite]
    lines = ["| run | steps | NFE | " + " | ".join(label for _, label in columns) + " | paper (CIFAR-10 FID) |",
             "|---|---|---|" + "---|" * len(columns) + "---|"]
    floor_row = None
    for name, res in results.items():
        report = res["report"]
        for nfe in report["nfes"]:
            metrics = report[f"nfe_{nfe}"]
            cells = []
            for key, _ in columns:
                value, floor = _metric(metrics, key)
                cells.append("—" if value is None else f"{value:.4g}")
                if floor is not None and floor_row is None:
                    floor_row = {}
                if floor is not None:
                    floor_row.setdefault(key, floor)
            paper = PAPER_CIFAR10.get(name, "") if suite == "digits" else ""
            lines.append(f"| {name} | {report['step']} | {nfe} | " + " | ".join(cells) + f" | {paper} |")
    if floor_row:
        cells = ["—" if floor_row.get(k) is None else f"{floor_row[k]:.4g}" for k, _ in columns]
        lines.append("| *noise floor (real vs real)* | — | — | " + " | ".join(cells) + " | |")
    return lines


def main(argv):
    del argv
    import jax
    if jax.default_backend() == "cpu":
        jax.config.update("jax_threefry_partitionable", False)
    out_dir = os.path.dirname(os.path.abspath(_OUT.value))
    pictures = os.path.join(out_dir, picture_folder())
    os.makedirs(pictures, exist_ok=True)
    total_start = time.time()
    sections = []
    for suite in _SUITES.value:
        teacher = _TEACHER.value if suite == "digits" else ""
        results = {}
        for name, config in suite_runs(suite, _STEPS.value):
            workdir = os.path.join(_WORKROOT.value, f"{suite}_{name}")
            if suite == "digits":  # the teacher run: reused (and only evaluated) when --teacher names one
                teacher_dir = teacher or os.path.join(_WORKROOT.value, "digits_edm")
                if name == "edm":
                    workdir = teacher_dir
                    if teacher:  # a given teacher is evaluated as it was trained, not re-configured
                        from consistency.config import load_run_config
                        config = load_run_config(teacher_dir)
                elif config.teacher.workdir:
                    config.teacher.workdir = teacher_dir
            if suite == "digits" and name == "dmd":
                config.dmd.pairs = os.path.join(teacher_dir, "ode_pairs.npz")
            ensure_ode_pairs(config)
            logging.info("experiments: %s / %s → %s", suite, name, workdir)
            results[name] = run_one(config, workdir)
            for nfe in results[name]["report"]["nfes"]:
                src = os.path.join(workdir, "samples", f"eval_{results[name]['report']['step']}_nfe{nfe}.png")
                if os.path.exists(src):
                    shutil.copy(src, os.path.join(pictures, f"{suite}_{name}_nfe{nfe}.png"))
        sections.append((suite, results))
    write_report(sections, time.time() - total_start)


def picture_folder() -> str:
    """Pictures of ``--out=docs/<name>.md`` go to ``docs/<name>/`` (so that two reports never overwrite each other's)."""
    return os.path.splitext(os.path.basename(_OUT.value))[0]


def write_report(sections, total_seconds: float):
    lines = ["# Results", "",
             "Produced by `python -m consistency.tools.experiments` "
             f"(flags: --suite={','.join(_SUITES.value)} --methods={','.join(_METHODS.value)} "
             f"--steps_scale={_STEPS.value}{' --teacher=' + _TEACHER.value if _TEACHER.value else ''}) "
             f"in {total_seconds / 60:.1f} min on this machine (2 CPU cores; runs that had already finished in "
             "the workroot are reused and only evaluated, so this is the time of this invocation; the steps column "
             "gives the steps each run actually trained).", "",
             "Each run here has its config's own recipe and budget, one training seed and no interval. To compare "
             "methods, read docs/benchmark.md: one shared teacher, one budget, several seeds and 95 % intervals.", "",
             "Every metric sits next to its noise floor: the same metric between two disjoint real draws of the same "
             "size — the best a perfect sampler can score with this many samples. Lower is better except modes, "
             "log-likelihood, precision and recall.", ""]
    for suite, results in sections:
        if suite == "toy":
            lines += ["## 2-D mixture of 8 Gaussians (exact metrics)", "",
                      "Methods with a teacher (CD, MCM, CTM, DMD, DMD2, ADD, SiD) distil the *exact* mixture denoiser "
                      "(no teacher error); CT/iCT/ECT train from data. The "
                      "EDM row is a trained diffusion model sampled with Heun at 35 NFE.", ""]
        else:
            lines += ["## sklearn digits (8×8), held-out split of 297 images", "",
                      "FD / KID / precision / recall are computed in the feature space of the in-project digits "
                      "classifier (held-out accuracy 0.983), not Inception: they rank samples like FID does but are "
                      "not FID. The paper column gives CIFAR-10 FIDs (1 / 2 steps) for context only.", ""]
        lines += markdown_table(suite, results) + [""]
        for name, res in results.items():
            pics = [f"![{suite} {name} {nfe}]({picture_folder()}/{suite}_{name}_nfe{nfe}.png)"
                    for nfe in res["report"]["nfes"]]
            lines.append(f"**{name}** ({', '.join(f'NFE {n}' for n in res['report']['nfes'])}): " + " ".join(pics))
            lines.append("")
    lines += ["## Raw reports", "", "```json",
              json.dumps({f"{s}/{n}": r["report"] for s, res in sections for n, r in res.items()}, indent=1,
                         sort_keys=True, default=float)[:20000], "```", ""]
    with open(_OUT.value, "w") as f:
        f.write("\n".join(lines))
    logging.info("wrote %s", _OUT.value)


if __name__ == "__main__":
    define_flags()
    app.run(main)
