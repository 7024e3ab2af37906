"""What the scripts in ``launch/`` share with ``python -m consistency.main``: bad input is one line ``error: …`` on
stderr and exit status 2 before anything compiles (a bad or unknown flag, a :class:`ConfigError`, a missing run); a
config file is named ``file.py[:variant]``; a teacher is named by the same flags everywhere (``--teacher=WORKDIR`` or
``--oracle=NAME --data=DATASET``).

    from consistency.tools import scripts
    scripts.define_teacher_flags()
    def main(argv): config = scripts.teacher_config("invert"); …
    if __name__ == "__main__":
        scripts.run(main)

The package is installed (``pip install -e .``), so scripts import it without editing ``sys.path``.
"""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Callable, NoReturn

from absl import flags

from consistency.tools import recipes
from consistency.core.errors import ConfigError

FLAGS = flags.FLAGS


def fail(message: str) -> NoReturn:
    """Print ``error: <message>`` as one line on stderr and exit with status 2 (as ``consistency.main`` does)."""
    sys.stderr.write(f"error: {' '.join(str(message).split())}\n")
    sys.stderr.flush()
    sys.exit(2)


@contextlib.contextmanager
def one_line_errors():
    """Expected failures (a bad config value or flag, no run in a workdir) → :func:`fail`; anything else keeps its
    traceback."""
    try:
        yield
    except (ConfigError, flags.Error, FileNotFoundError) as e:
        fail(str(e))


def run(main: Callable[[list[str]], object], argv: list[str] | None = None) -> NoReturn:
    """Parse the flags of ``argv`` (default ``sys.argv``) and call ``main(remaining argv)``, every expected failure —
    flags included — as one line and exit status 2; exit 0 after ``main`` returns."""
    argv = list(sys.argv if argv is None else argv)
    if any(a in ("-h", "--help", "--helpshort", "--helpfull") for a in argv[1:]):
        sys.stdout.write((sys.modules["__main__"].__doc__ or "") + "\n" + FLAGS.main_module_help() + "\n")
        sys.exit(0)
    with one_line_errors():
        remaining = FLAGS(argv)
        if len(remaining) > 1:
            raise ConfigError(f"unexpected arguments {remaining[1:]}; flags are written --name=value")
        main(remaining)
    sys.exit(0)


# ----------------------------------------------------------------------------------------------------------
# Config files
# ----------------------------------------------------------------------------------------------------------

def load_config_file(spec: str):
    """``get_config(variant)`` of ``file.py[:variant]`` (the ``--config`` syntax of ``consistency.main``); a missing
    file or an unknown variant is a :class:`ConfigError`."""
    path, _, variant = str(spec).partition(":")
    if not path.endswith(".py") or not os.path.isfile(path):
        raise ConfigError(f"--config: {path!r} is not a config file; name one such as configs/toy_cd.py[:quick]")
    try:
        return recipes.load_config_file(path, variant)
    except ValueError as e:       # configs raise ValueError for an unknown variant; ConfigError is one too
        raise ConfigError(f"--config={spec}: {e}") from None


# ----------------------------------------------------------------------------------------------------------
# Teachers
# ----------------------------------------------------------------------------------------------------------

TEACHER_FLAGS = (
    ("teacher", "A trained EDM workdir (its sampling EMA params are the teacher)."),
    ("oracle", "Closed-form teacher instead: 'mixture' | 'empirical' | 'gaussian'."),
    ("data", "Dataset of an --oracle teacher, e.g. toy:8gaussians."),
)


def define_teacher_flags() -> None:
    """``--teacher``, ``--oracle``, ``--data`` (once per process: scripts loaded side by side share them)."""
    for name, help_text in TEACHER_FLAGS:
        if name not in FLAGS:
            flags.DEFINE_string(name, "", help_text)


def teacher_config(purpose: str):
    """The config whose ``teacher`` block names the flags' teacher, with the teacher's data config
    (:func:`consistency.methods.components.teachers.config_for_teacher`; ``purpose`` names the script in its errors)."""
    from consistency.methods.components import teachers
    return teachers.config_for_teacher(FLAGS.teacher, FLAGS.oracle, FLAGS.data, purpose)
