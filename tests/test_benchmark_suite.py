"""consistency.tools.benchmark (issue 31): the toy suite end to end on two rows, one seed and a few steps — the page's
marked blocks are written, and a second invocation reuses the finished workdirs instead of training or sampling."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from consistency.tools import benchmark
from consistency.metrics import intervals
from consistency.core.errors import ConfigError


def test_rows_cover_every_method_of_the_issue():
    keys = benchmark.method_keys("toy")
    for key in ("teacher", "edm", "cd", "ct", "ict", "ecm", "sct", "scd", "mcm_vp", "mcm_ve", "ctm", "dmd", "dmd2",
                "add", "sid", "pagoda"):
        assert key in keys
    names = [r.name for r in benchmark.suite_rows("toy")]
    assert {"MCM VE T=1", "MCM VE T=8", "MCM VP T=4", "CTM γ=0", "CTM γ=1"} <= set(names)
    assert len({benchmark.row_slug(r) for r in benchmark.suite_rows("toy")}) == len(names)
    digits = benchmark.suite_rows("digits")
    assert [r.name for r in digits if r.shared] == ["EDM teacher"]


def test_matched_budget_scales_the_step_counted_fields(tmp_path):
    rows = {r.name: r for r in benchmark.suite_rows("toy")}
    ecm = benchmark.row_config("toy", rows["ECT"], 3, 1000, 256, str(tmp_path))
    assert (ecm.training.num_steps, ecm.training.batch_size, ecm.seed) == (1000, 256, 3)
    assert ecm.ecm.steps_per_stage == 125                       # 500 of the recipe's 4000 steps
    sct = benchmark.row_config("toy", rows["sCT"], 0, 2000, 256, str(tmp_path))
    assert sct.scm.tangent_warmup_steps == 500                  # 2000 of the recipe's 8000 steps
    mcm = benchmark.row_config("toy", rows["MCM VE T=2"], 0, 2000, 256, str(tmp_path))
    assert mcm.mcm.segments == 2 and tuple(mcm.eval.nfes) == (2,)
    digits = benchmark.suite_rows("digits")
    digits_cd = benchmark.row_config("digits", digits[1], 0, 10, 16, str(tmp_path))
    assert digits_cd.teacher.workdir == benchmark.teacher_dir(str(tmp_path))
    assert (digits_cd.training.ckpt_every, ecm.training.ckpt_every) == (2, 250)   # four checkpoints per run: resumable
    # one network in the digits suite: every row (the teacher included) builds the teacher's model block
    models = {r.name: benchmark.row_config("digits", r, 0, 10, 16, str(tmp_path)).model.to_dict()
              for r in digits if r.key in ("edm", "cd", "ct", "ict", "ecm", "sct", "scd", "ctm", "sid", "dmd2")}
    assert models["iCT"].pop("dropout") == 0.1      # a training regulariser of iCT's recipe, not another network
    for m in models.values():
        m.pop("dropout", None)
    assert all(m == models["EDM teacher"] for m in models.values()), models
    assert models["EDM teacher"]["embedding"] == "positional"


def test_flags_are_checked_in_one_line():
    with pytest.raises(ConfigError, match="--methods: unknown"):
        benchmark.validate_flags("toy", ["cd", "nope"], ["0"])
    with pytest.raises(ConfigError, match="--seeds"):
        benchmark.validate_flags("toy", ["cd"], ["a"])


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _own_config(folder, name: str = "my_ct", changes: str = "c.eval.nfes = (1, 3)") -> str:
    """A config file of "your own method": the toy CT recipe under another name, sampled at 1 and 3 steps."""
    path = os.path.join(str(folder), f"{name}.py")
    with open(path, "w") as f:
        f.write("from consistency.tools.recipes import load_config_file\n\n\ndef get_config():\n"
                f"    c = load_config_file({os.path.join(REPO, 'configs', 'toy_ct.py')!r})\n"
                f"    {changes}\n    return c\n")
    return path


def test_a_config_file_of_your_own_method_is_a_row_of_its_own(tmp_path):
    path = _own_config(tmp_path)
    assert benchmark.validate_flags("toy", ["cd", path], ["0"]) == [0]
    row = benchmark.own_row(path)
    assert (row.name, row.run, row.config, row.nfes) == ("my_ct", "own_my_ct", path, (1, 3))
    config = benchmark.row_config("toy", row, 2, 100, 32, str(tmp_path))
    assert (config.method, config.training.num_steps, config.training.batch_size, config.seed) == ("ct", 100, 32, 2)
    assert tuple(config.eval.nfes) == (1, 3)
    with pytest.raises(ConfigError, match="--methods: no config file"):
        benchmark.validate_flags("toy", [str(tmp_path / "missing.py")], ["0"])
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(ConfigError, match="share a file name"):
        benchmark.validate_flags("toy", [path, _own_config(other)], ["0"])
    with pytest.raises(ConfigError, match="named like a built-in row"):      # CD.py would replace the CD row
        benchmark.validate_flags("toy", [_own_config(other, "CD")], ["0"])


def test_an_own_config_that_cannot_join_the_suite_is_one_line(tmp_path):
    workroot = str(tmp_path / "w")
    path = _own_config(tmp_path)
    benchmark.check_own_configs("toy", [path], workroot)
    cases = {"no_method": ("c.method = 'not_registered'", "not registered; add --imports"),
             "other_data": ("c.data.name = 'toy:swissroll'", "scores against 'toy:8gaussians'"),
             "broken": ("raise ValueError('bad recipe')", "does not load .ValueError: bad recipe")}
    for name, (change, message) in cases.items():
        with pytest.raises(ConfigError, match=message):
            benchmark.check_own_configs("toy", [_own_config(tmp_path, name, change)], workroot)
    # a run in the workroot from the same file name: reused when the recipe is the same (its NFEs may change) ...
    row = benchmark.own_row(path)
    marker = os.path.join(benchmark.run_dir(workroot, "toy", row, 0), "benchmark_train.json")
    os.makedirs(os.path.dirname(marker))
    budget = {"steps": 4, "batch_size": 32}
    old_row = {"name": "my_ct", "config": path, "nfes": [1], "digest": benchmark.own_config_digest(path)}
    with open(marker, "w") as f:
        json.dump({"budget": budget, "cpu_seconds": 1.0, "config": path, "overrides": [], "row": old_row}, f)
    benchmark.check_own_configs("toy", [path], workroot)
    assert benchmark.train_run("toy", row, 0, 4, 32, workroot)["row"]["nfes"] == [1, 3]   # no training: a reuse
    assert [r.nfes for r in benchmark.own_rows_in(workroot, "toy")] == [(1, 3)]
    # ... and refused when the recipe under that name changed
    _own_config(tmp_path, "my_ct", "c.optim.lr = 3e-4")
    with pytest.raises(ConfigError, match="trained from another recipe named 'my_ct'"):
        benchmark.check_own_configs("toy", [path], workroot)


def test_a_missing_import_is_one_line_and_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "consistency.tools.benchmark", "--suite=toy", "--report_only",
                           "--imports=no_such_method_module", f"--workroot={tmp_path}", f"--out={tmp_path / 'b.md'}",
                           "--readme="], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == ("error: --imports: no module named 'no_such_method_module'; "
                                                    "put it on PYTHONPATH")
    assert not os.path.exists(tmp_path / "b.md")


def test_cost_meter_carries_the_cost_of_killed_parts(tmp_path):
    import time
    path = str(tmp_path / "run" / "benchmark_train_cost.json")
    budget = {"steps": 8, "batch_size": 4}
    with pytest.raises(KeyboardInterrupt):
        with benchmark.CostMeter(path, budget, every=0.02):
            time.sleep(0.1)
            assert json.load(open(path))["wall_seconds"] > 0.0    # written while it runs, so a SIGKILL loses little
            raise KeyboardInterrupt                               # a part stopped: its totals stay on disk
    first = json.load(open(path))
    assert 0.1 <= first["wall_seconds"] < 5.0 and first["cpu_seconds"] >= 0.0 and first["parts"] == 1
    with benchmark.CostMeter(path, budget, every=10.0) as meter:   # the rerun part carries them on
        cpu, wall = meter.totals()
    assert cpu >= first["cpu_seconds"] and wall >= first["wall_seconds"] and meter.parts == 2
    with benchmark.CostMeter(path, {"steps": 16, "batch_size": 4}, every=10.0) as other:   # another budget: from 0
        assert other.parts == 1 and other.totals()[1] < first["wall_seconds"]
    with open(path, "w") as f:
        f.write('{"cpu_sec')                                        # cut short by a crash: from 0, no failure
    with benchmark.CostMeter(path, budget, every=10.0) as cut:
        assert cut.parts == 1
    cut.finish()
    cut.finish()                                                    # nothing left to remove: no error
    assert not os.path.exists(path) and os.listdir(tmp_path / "run") == []


def test_a_stopped_part_stops_instead_of_moving_on(tmp_path, monkeypatch):
    from consistency.run.stopping import Stopped
    calls = []

    def preempted(*args, **kwargs):
        calls.append(args[1].name)
        raise Stopped(15, 2, "stopped by SIGTERM after saving step 2")

    monkeypatch.setattr(benchmark, "train_run", preempted)
    with pytest.raises(Stopped):
        benchmark.run("toy", ["cd", "ct"], [0], 4, 32, 64, 5, str(tmp_path))
    assert calls == ["CD"]   # CT was not started


def test_ranking_claims_only_what_the_intervals_separate():
    def entry(row, mean, half):
        return {"row": row, "nfe": 1, "swd": {"mean": mean, "low": mean - half, "high": mean + half, "floor": 0.05}}
    text = benchmark.ranking_sentences("toy", [entry("A", 0.10, 0.02), entry("B", 0.11, 0.02), entry("C", 0.5, 0.1)])
    assert "lowest mean sliced W1 is A" in text and "overlaps B" in text and "better than C (intervals disjoint)" in text
    assert "C" not in text.split("overlaps")[1].split(";")[0]


@pytest.mark.slow
def test_toy_smoke_writes_the_blocks_and_reuses_workdirs(tmp_path, monkeypatch, caplog):
    workroot, out, readme = str(tmp_path / "w"), str(tmp_path / "benchmark.md"), str(tmp_path / "README.md")
    with open(readme, "w") as f:
        f.write("# r\n\n<!-- benchmark:toy_readme -->\nold\n<!-- /benchmark:toy_readme -->\n")
    args = dict(suite="toy", methods=["teacher", "cd", _own_config(tmp_path)], seeds=[0], steps=4, batch=32, num=64,
                bootstrap=5, workroot=workroot)
    assert benchmark.run(**args) == []
    collected = benchmark.collect("toy", workroot, 64, 5)   # your own method's row is found in the workroot
    assert set(collected) == {"exact teacher (Heun/Euler)", "CD", "my_ct"}
    assert sorted(collected["my_ct"][0]["nfe"]) == ["1", "3"]
    entries = benchmark.write_report("toy", out, readme, collected, "test")
    page = open(out).read()
    for block in ("toy_meta", "toy_table", "toy_ranking", "toy_plots"):
        assert f"<!-- benchmark:{block} -->" in page and f"<!-- /benchmark:{block} -->" in page
    assert "| CD | 1 |" in page and "4 × 32" in page
    assert os.path.exists(tmp_path / "benchmark" / "toy_quality_vs_nfe.png")
    assert json.load(open(tmp_path / "benchmark" / "toy.json"))["entries"]
    assert "old" not in open(readme).read() and "| CD |" in open(readme).read()
    cd = next(e for e in entries if e["row"] == "CD" and e["nfe"] == 1)
    assert cd["num_samples"] == 64 and cd["swd"]["interval"] == "bootstrap"
    # a part killed during CD's training (its last checkpoint, record and evaluation never written) is resumed from
    # the latest checkpoint when rerun, ends on the same weights, and is charged for the killed part's CPU time too
    import shutil
    import numpy as np
    import jax
    from consistency import api
    from consistency.core import checkpoint
    cd_row = next(r for r in benchmark.suite_rows("toy") if r.key == "cd")
    cd_dir = benchmark.run_dir(workroot, "toy", cd_row, 0)
    assert checkpoint.available_steps(cd_dir) == [3, 4]
    finished = jax.tree_util.tree_leaves(api.load(cd_dir).state.params)
    shutil.rmtree(os.path.join(checkpoint.checkpoint_dir(cd_dir), "4"))
    for name in ("benchmark_train.json", f"benchmark_eval_{benchmark.row_slug(cd_row)}_seed0.json"):
        os.remove(os.path.join(cd_dir, name))
    with open(os.path.join(cd_dir, "benchmark_train_cost.json"), "w") as f:
        json.dump({"cpu_seconds": 1000.0, "wall_seconds": 2000.0, "parts": 1,
                   "budget": {"steps": 4, "batch_size": 32}}, f)
    with caplog.at_level("INFO"):
        record = benchmark.train_run("toy", cd_row, 0, 4, 32, workroot)
    assert "cd: resumed from step 3" in caplog.text
    assert record["cpu_seconds"] > 1000.0 and record["wall_seconds"] > 2000.0 and record["parts"] == 2
    assert not os.path.exists(os.path.join(cd_dir, "benchmark_train_cost.json"))
    resumed = jax.tree_util.tree_leaves(api.load(cd_dir).state.params)
    assert all(np.array_equal(a, b) for a, b in zip(finished, resumed))
    benchmark.evaluate_row("toy", cd_row, 0, 64, 5, workroot)
    collected = benchmark.collect("toy", workroot, 64, 5)
    # a rerun trains nothing and samples nothing
    from consistency import api
    from consistency.run import train
    monkeypatch.setattr(train, "train_and_evaluate", lambda *a, **k: pytest.fail("retrained a finished run"))
    monkeypatch.setattr(api, "load", lambda *a, **k: pytest.fail("re-evaluated a finished run"))
    assert benchmark.run(**args) == []
    assert benchmark.collect("toy", workroot, 64, 5) == collected
    # a record scored before the basic FD / sliced-W1 intervals (no "intervals" key) is rescored, not reused
    teacher_row = benchmark.suite_rows("toy")[0]
    record = os.path.join(benchmark.run_dir(workroot, "toy", teacher_row, 0),
                          f"benchmark_eval_{benchmark.row_slug(teacher_row)}_seed0.json")
    old = json.load(open(record))
    old["settings"].pop("intervals")
    old["nfe"]["35"]["swd_ci"] = [-1.0, -1.0]
    json.dump(old, open(record, "w"))
    benchmark.run(**{**args, "methods": ["teacher"]})
    rescored = json.load(open(record))
    assert "intervals" in rescored["settings"] and rescored["nfe"]["35"]["swd_ci"][0] >= 0
    # a second seed for the teacher row gives a t-interval over seeds
    benchmark.run(**{**args, "methods": ["teacher"], "seeds": [1]})
    two = benchmark.summarize("toy", benchmark.collect("toy", workroot, 64, 5))
    teacher = next(e for e in two if e["row"].startswith("exact") and e["nfe"] == 35)
    values = teacher["swd"]["values"]
    assert teacher["swd"]["interval"] == "t" and len(values) == 2
    assert (teacher["swd"]["low"], teacher["swd"]["high"]) == pytest.approx(intervals.seed_interval(values)[1:])


def test_readme_table_names_pending_rows_and_single_seed_intervals():
    def entry(row, seeds, interval):
        return {"row": row, "nfe": 1, "seeds": seeds,
                "fd": {"mean": 50.0, "low": 40.0, "high": 60.0, "interval": interval}}
    text = benchmark.readme_table("digits", [entry("CD", 1, "bootstrap"), entry("iCT", 3, "t")], ["SiD", "ADD"])
    assert "| CD | 50 [40, 60] |" in text
    assert "one training seed shows the bootstrap interval over samples" in text
    assert "1 to 3 training seeds" in text
    assert f"Not run yet (2 of {len(benchmark.suite_rows('digits'))} rows): SiD, ADD." in text
    plain = benchmark.readme_table("digits", [entry("iCT", 3, "t")])
    assert "bootstrap" not in plain and "Not run yet" not in plain and "training seeds" not in plain
    assert "not a typo" not in plain
    below = entry("EDM teacher", 1, "bootstrap")
    below["fd"].update(low=0.0, high=2.0, mean=4.0)
    assert "An interval below its estimate is not a typo: FD is biased upwards" in benchmark.readme_table("digits", [below])


@pytest.mark.slow
def test_digits_smoke_trains_the_shared_teacher_once_and_distils_from_it(tmp_path):
    workroot, out, readme = str(tmp_path / "w"), str(tmp_path / "benchmark.md"), str(tmp_path / "README.md")
    with open(readme, "w") as f:
        f.write("<!-- benchmark:digits_readme -->\n<!-- /benchmark:digits_readme -->\n")
    args = dict(suite="digits", methods=["cd"], seeds=[0], steps=2, batch=16, num=64, bootstrap=5,
                workroot=workroot, teacher_steps=2)
    assert benchmark.run(**args) == []
    teacher = benchmark.teacher_dir(workroot)
    cd_row = next(r for r in benchmark.suite_rows("digits") if r.key == "cd")
    cd_config = json.load(open(os.path.join(benchmark.run_dir(workroot, "digits", cd_row, 0), "config.json")))
    assert cd_config["teacher"]["workdir"] == teacher and cd_config["training"]["num_steps"] == 2
    collected = benchmark.collect("digits", workroot, 64, 5)
    assert set(collected) == {"CD"}      # the teacher is trained for CD but only sampled when asked (--methods=edm)
    teacher_config = json.load(open(os.path.join(teacher, "config.json")))
    assert teacher_config["method"] == "edm" and teacher_config["training"]["num_steps"] == 2
    entries = benchmark.write_report("digits", out, readme, collected, "test")
    cd = {e["nfe"]: e for e in entries if e["row"] == "CD"}
    assert set(cd) == {1, 2, 4}
    # 1797 real digits: the floor's real draw is as large as the samples (64), the reference is the rest
    assert (cd[1]["num_samples"], cd[1]["num_floor"], cd[1]["num_reference"]) == (64, 64, 1797 - 64)
    assert cd[1]["fd"]["interval"] == "bootstrap" and cd[1]["fd"]["floor"] > 0
    text = open(readme).read()
    assert "| CD |" in text and "Not run yet" in text and "EDM teacher" in text.split("Not run yet")[1]
