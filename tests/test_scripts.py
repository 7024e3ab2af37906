"""The launch scripts share ``consistency.tools.scripts``: bad input is one ``error:`` line and exit status 2, as in
``consistency.main``, checked in-process for one bad input per script (each script's flags are defined for its test
and removed after it, so scripts that reuse a flag name load side by side)."""
from __future__ import annotations

import importlib.util
import os
import re
import sys

import pytest
from absl import flags

from consistency.tools import scripts

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def load_script():
    """``load(name)`` → the module ``launch/<name>.py`` with its flags defined; they are removed afterwards."""
    def load(name):
        path = os.path.join(REPO, "launch", f"{name}.py")
        names = set(re.findall(r'flags\.DEFINE_\w+\("(\w+)"', open(path).read())) | {n for n, _ in scripts.TEACHER_FLAGS}
        for n in names & set(flags.FLAGS):   # left by another test that loaded a script defining the same name
            delattr(flags.FLAGS, n)
        spec = importlib.util.spec_from_file_location(f"launch_{name}_under_test", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module   # dataclasses look their module up while the script is executed
        spec.loader.exec_module(module)
        added.extend(names)
        modules.append(spec.name)
        return module

    added, modules = [], []
    yield load
    for name in modules:
        sys.modules.pop(name, None)
    flags.FLAGS.unparse_flags()
    for n in set(added) & set(flags.FLAGS):
        delattr(flags.FLAGS, n)


@pytest.mark.parametrize("name, args, message", [
    ("invert", [], r"invert: give exactly one of --teacher=WORKDIR or --oracle=NAME"),
    ("invert", ["--oracle=mixture"], r"invert: --out=DIR is required with --oracle"),
    ("sigma_lists", ["--workdir={tmp}/no_run"], r"no_run"),
    ("guidance_sweep", ["--workdir=w", "--scale=2"], r"Unknown command line flag 'scale'"),
    ("science", ["--question=z"], r"--question: 'z' is not one of a, b"),
])
def test_bad_input_is_one_error_line_and_exit_2(load_script, capsys, tmp_path, name, args, message):
    module = load_script(name)
    with pytest.raises(SystemExit) as exit_info:
        scripts.run(module.main, [f"launch/{name}.py", *(a.format(tmp=tmp_path) for a in args)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and re.search(message, err[0]), err


def test_config_file_with_variant_and_its_errors():
    config = scripts.load_config_file(os.path.join(REPO, "configs", "toy_dmd2.py:quick"))
    assert config.method == "dmd2" and config.training.num_steps == 250
    with pytest.raises(scripts.ConfigError, match=r"^--config: .* is not a config file"):
        scripts.load_config_file("configs/none.py")
    with pytest.raises(scripts.ConfigError, match=r"^--config=.*toy_dmd2.py:nope: .*unknown variant 'nope'"):
        scripts.load_config_file(os.path.join(REPO, "configs", "toy_dmd2.py:nope"))
