"""Command line: ``python -m consistency.main --config=configs/<name>.py[:variant] --workdir=DIR [--mode=...]``.

Every config field can be overridden: ``--config.optim.lr=1e-4 --config.training.num_steps=500``.

Modes:
  train   train (resuming from the latest checkpoint in WORKDIR), then sample a grid and evaluate; prints the metrics;
  sample  draw config.sampling.num_samples from a checkpoint (--step, default latest) → samples/sample_<step>.npz/.png;
  eval    evaluate a checkpoint → eval/metrics_<step>.json, printed as a table per NFE (it says so when it
          re-used a report of the same NFEs and sample count).
For sample/eval, --config may be left out: the run's WORKDIR/config.json is used.

Every expected failure (a bad flag or config value, a missing config file or dataset, an unwritable workdir, no
checkpoint, divergence) prints ONE line ``error: <field>: <what is wrong>; <the fix>`` and exits with status 2, before
anything compiles where it can. Logging shows the loop's progress lines and warnings; --verbosity=0 shows every
library's INFO log as well.
"""
from __future__ import annotations

import contextlib
import dataclasses
import difflib
import logging as std_logging
import os
import re
import shlex
import sys
import tempfile
import textwrap
from typing import Sequence

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags
from ml_collections.config_flags.config_flags import ConfigFileFlagParser

from consistency.core.errors import ConfigError
from consistency.run.stopping import Stopped, set_resume_hint

HELP_FLAGS = ("--help", "-help", "-h", "-?", "--helpshort", "--helpfull")
MAX_INFO_CHARS = 500   # longer INFO records (Orbax/hparams dumps) are dropped unless --verbosity is given
WIDTH = 110
# Warnings redundant with our own one-line errors: TFDS's data-directory lookup ("Variant folder … has no
# dataset_info.json") precedes the DataUnavailableError that says what to do.
QUIET_WARNING_SOURCES = (os.path.join("tensorflow_datasets", "core", "utils", "file_utils.py"),)
# Orbax's ERROR records (with a traceback) of a failed background save, which checkpoint.CheckpointWriteError reports
# in one line with the last good step.
ORBAX_REPORTED_FAILURES = ("in background save thread", "Save Finalize thread")


class CommandLineError(Exception):
    """A flag that cannot work; the message (one line) names the flag or config field and the fix."""


def define_flags(flag_values: flags.FlagValues = flags.FLAGS, sys_argv: Sequence[str] | None = None) -> None:
    """The CLI's flags on ``flag_values`` (a fresh ``flags.FlagValues()`` and its ``sys_argv`` for in-process use)."""
    config_flags.DEFINE_config_file(
        "config", None, "Config file, e.g. configs/digits_edm.py or configs/cifar_edm.py:cpu; override fields with "
        "--config.<section>.<field>=<value>.", flag_values=flag_values,
        sys_argv=None if sys_argv is None else list(sys_argv))
    flags.DEFINE_string("workdir", None, "Run directory: config.json, checkpoints/, samples/, eval/, events.",
                        flag_values=flag_values)
    flags.DEFINE_enum("mode", "train", ["train", "sample", "eval"], "What to do.", flag_values=flag_values)
    flags.DEFINE_integer("step", None, "Checkpoint step for --mode=sample|eval (default: the latest).",
                         flag_values=flag_values)
    flags.DEFINE_multi_string("imports", [], "Python modules to import first, e.g. a module that adds a method with "
                              "consistency.methods.register(name, make).", flag_values=flag_values)
    # How the processes of one run find each other. Leave these out on a TPU pod, under SLURM, Open MPI or Kubernetes
    # (--config.distributed=True detects the cluster); give them where nothing can be detected, e.g. several processes
    # on one machine (tests/test_multiprocess.py) or a hand-started multi-node job.
    flags.DEFINE_string("coordinator_address", None, "host:port of process 0's coordinator; with --num_processes and "
                        "--process_id it starts jax.distributed explicitly.", flag_values=flag_values)
    flags.DEFINE_integer("num_processes", None, "Processes in the run (with --coordinator_address).",
                         flag_values=flag_values)
    flags.DEFINE_integer("process_id", None, "This process's index in [0, --num_processes).", flag_values=flag_values)
    flags.DEFINE_integer("cpu_devices", None, "Simulated CPU devices in this process (jax_num_cpu_devices); for "
                         "testing sharded runs on a CPU-only machine.", flag_values=flag_values)


define_flags()


@dataclasses.dataclass(frozen=True)
class Cluster:
    """An explicitly given cluster (flags ``--coordinator_address/--num_processes/--process_id``), or none."""
    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    cpu_devices: int | None = None

    @property
    def explicit(self) -> bool:
        return self.coordinator_address is not None


@dataclasses.dataclass(frozen=True)
class Command:
    mode: str
    workdir: str
    step: int | None
    config: ml_collections.ConfigDict | None   # None: sample/eval read WORKDIR/config.json
    imports: tuple[str, ...]
    verbose: bool                              # --verbosity given: leave logging as absl sets it
    cluster: Cluster = Cluster()


# ----------------------------------------------------------------------------------------------------------
# Flags → Command, every failure one line
# ----------------------------------------------------------------------------------------------------------

def _config_argument(argv: Sequence[str]) -> str | None:
    """The value of ``--config`` in ``argv`` (``--config=X`` or ``--config X``), None when absent."""
    for i, arg in enumerate(argv):
        match = re.match(r"^--?config(=(.*))?$", arg)
        if match:
            return match.group(2) if match.group(1) else (argv[i + 1] if i + 1 < len(argv) else None)
    return None


def _override_paths(argv: Sequence[str]) -> list[str]:
    """``optim.lr`` for every ``--config.optim.lr=...`` in argv."""
    return [m.group(2) for m in (re.match(r"^--?(no)?config\.([^=]+)", a) for a in argv) if m]


def field_problem(config, path: str) -> str | None:
    """Why ``config.<path>`` names no field (one line with the closest field and the section's fields), or None."""
    node, walked = config, "config"
    for key in path.split("."):
        if not isinstance(node, ml_collections.ConfigDict):
            return f"{walked}: is {node!r}, not a section; override {walked} itself"
        if key not in node and walked == "config" and key.startswith("optim_"):
            blocks = ["optim"] + sorted(k for k in node.keys() if k.startswith("optim_"))
            method = node.get("method", "?")
            return (f"config.{key}: no such optimizer block: method {method!r} trains no set {key[6:]!r} with its own "
                    f"optimizer (this config's optimizer blocks: {', '.join(blocks)}); override one of those, e.g. "
                    f"--config.{blocks[-1]}.lr=...")
        if key not in node:
            fields = sorted(node.keys())
            close = difflib.get_close_matches(key, fields, n=1)
            guess = f" (did you mean {close[0]!r}?)" if close else ""
            return f"{walked}.{key}: no such field{guess}; {walked} has {', '.join(fields)}"
        node, walked = node[key], f"{walked}.{key}"
    return None


def _field_value(config, path: str):
    node = config
    for key in path.split("."):
        node = node[key]
    return node


def _config_file_problem(spec: str | None, error: Exception) -> str:
    path = (spec or "").split(":", 1)[0]
    if not path or not os.path.exists(path):
        return (f"--config: {path!r} does not exist; give a config file such as configs/digits_edm.py "
                "(one per method and dataset in configs/)")
    return (f"--config: {path} could not be loaded ({type(error).__name__}: {_last_line(str(error))}); fix that "
            "file: its get_config() must run and return a ConfigDict")


def _last_line(text: str) -> str:
    """The last non-empty line of a (traceback-bearing) message, without its ``SomeError:`` prefix."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return re.sub(r"^[\w.]*(Error|Exception): ", "", lines[-1]) if lines else text


def _flag_error_line(error: flags.Error, argv: Sequence[str], flag_values: flags.FlagValues) -> str:
    text = str(error)
    if "Error whilst parsing config file" in text:   # get_config raised (an unknown variant, a ConfigError)
        return f"--config: {_last_line(text)}"
    bad_value = re.match(r"^flag --config\.([\w.]+)=(.*?): (.*)", text.splitlines()[0])
    if bad_value:
        path, raw, reason = bad_value.groups()
        try:
            current = _field_value(flag_values["config"].value, path)
            fix = f"give a {type(current).__name__} like {current!r}"
        except Exception:  # noqa: BLE001 — the hint is optional
            fix = "give a value of the field's type"
        return f"config.{path}: {raw!r} is not valid ({reason}); {fix}"
    return " ".join(text.split())


class _NoneConfigWarning(std_logging.Filter):
    """Drops ml_collections' warning that get_config() returned None: :func:`read_command` says it in its line."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        return "returned None, did you forget a return statement" not in str(record.msg)


def parse_flags(argv: Sequence[str], flag_values: flags.FlagValues = flags.FLAGS) -> list[str]:
    """``flag_values(argv)``; CommandLineError (one line) for any flag ml_collections or absl refuses."""
    quiet = _NoneConfigWarning()
    logging.get_absl_logger().addFilter(quiet)
    try:
        return flag_values(list(argv))
    except flags.Error as e:
        raise CommandLineError(_flag_error_line(e, argv, flag_values)) from None
    except (AttributeError, KeyError) as e:       # ml_collections: --config.<no such field>=...
        raise CommandLineError(_unknown_override(argv, e)) from None
    except OSError as e:                           # overrides on a config file that failed to load
        raise CommandLineError(_config_file_problem(_config_argument(argv), e)) from None
    except Exception as e:  # noqa: BLE001 — the config file itself raised (its code, a bad import) while loading
        raise CommandLineError(_config_file_problem(_config_argument(argv), e)) from None
    finally:
        logging.get_absl_logger().removeFilter(quiet)


def _unknown_override(argv: Sequence[str], error: Exception) -> str:
    spec = _config_argument(argv)
    try:
        config = ConfigFileFlagParser(name="config").parse(spec)
    except Exception as e:  # noqa: BLE001 — report the config file's own problem instead
        return _config_file_problem(spec, e)
    for path in _override_paths(argv):
        problem = field_problem(config, path)
        if problem:
            return problem
    return f"--config: an override was refused: {_last_line(str(error))}"


def read_command(flag_values: flags.FlagValues = flags.FLAGS, rest: Sequence[str] = ()) -> Command:
    """The parsed flags as a :class:`Command` (CommandLineError for what cannot work)."""
    if len(rest) > 1:
        raise CommandLineError(f"unexpected arguments {' '.join(rest[1:])!r}; flags take the form --name=value")
    if not flag_values["workdir"].value:
        raise CommandLineError("--workdir: required; e.g. --workdir=workdirs/digits_edm")
    config = flag_values["config"].value
    if config is not None:
        try:
            config.get("method")   # a config file that failed to load raises its error on any access
        except OSError as e:
            raise CommandLineError(_config_file_problem(flag_values["config"].config_filename, e)) from None
    elif flag_values["config"].present:
        raise CommandLineError(f"--config: get_config() of {flag_values['config'].config_filename} returned None; "
                               "end it with `return config`")
    elif flag_values["mode"].value == "train":
        raise CommandLineError("--config: required for --mode=train; e.g. --config=configs/digits_edm.py")
    verbose = "verbosity" in flag_values and flag_values["verbosity"].present
    return Command(mode=flag_values["mode"].value, workdir=flag_values["workdir"].value,
                   step=flag_values["step"].value, config=config, imports=tuple(flag_values["imports"].value),
                   verbose=bool(verbose), cluster=read_cluster(flag_values))


def read_cluster(flag_values: flags.FlagValues = flags.FLAGS) -> Cluster:
    """The cluster flags as a :class:`Cluster`; CommandLineError (one line) when they cannot work together."""
    value = {name: flag_values[name].value if name in flag_values else None
             for name in ("coordinator_address", "num_processes", "process_id", "cpu_devices")}
    cluster = Cluster(**value)
    given = [name for name in ("coordinator_address", "num_processes", "process_id") if value[name] is not None]
    if given and len(given) < 3:
        missing = sorted({"coordinator_address", "num_processes", "process_id"} - set(given))
        raise CommandLineError(f"--{missing[0]}: needed with --{given[0]}; give --coordinator_address=HOST:PORT, "
                               "--num_processes=N and --process_id=I together (or none, to detect the cluster)")
    if cluster.explicit:
        if not re.match(r"^[^:\s]+:\d+$", cluster.coordinator_address):
            raise CommandLineError(f"--coordinator_address: {cluster.coordinator_address!r} is not HOST:PORT; "
                                   "e.g. --coordinator_address=127.0.0.1:12355")
        if cluster.num_processes < 1 or not 0 <= cluster.process_id < cluster.num_processes:
            raise CommandLineError(f"--process_id: {cluster.process_id} is not in [0, {cluster.num_processes}) "
                                   "(--num_processes); number the processes 0 … N−1")
    if cluster.cpu_devices is not None and cluster.cpu_devices < 1:
        raise CommandLineError(f"--cpu_devices: must be >= 1, got {cluster.cpu_devices}")
    return cluster


# ----------------------------------------------------------------------------------------------------------
# Checks before anything heavy: config, cluster, data, workdir
# ----------------------------------------------------------------------------------------------------------

def resolve_config(command: Command) -> ml_collections.ConfigDict:
    if command.config is not None:
        return command.config
    from consistency import config as config_lib
    try:
        return config_lib.load_run_config(command.workdir)
    except FileNotFoundError as e:
        raise CommandLineError(f"--config: not given and {e}; pass --config=FILE or the workdir of a run") from None


def initialize_distributed(config, cluster: Cluster = Cluster()) -> None:
    """Start ``jax.distributed`` for an explicit ``cluster`` (the flags) or for ``config.distributed`` (detected);
    a missing or unreachable cluster is one line. ``cluster.cpu_devices`` is set first (before any backend)."""
    import jax
    if cluster.cpu_devices is not None:
        jax.config.update("jax_num_cpu_devices", int(cluster.cpu_devices))
    if cluster.explicit:
        if jax.distributed.is_initialized():
            return
        try:
            jax.distributed.initialize(coordinator_address=cluster.coordinator_address,
                                       num_processes=cluster.num_processes, process_id=cluster.process_id,
                                       initialization_timeout=120)
        except (ValueError, RuntimeError) as e:
            raise CommandLineError(
                f"--coordinator_address: process {cluster.process_id} of {cluster.num_processes} could not join "
                f"{cluster.coordinator_address} ({_last_line(str(e))}); start every process with the same address "
                "and process 0 first") from None
        return
    if not config.get("distributed", False):
        return
    from consistency.run import placement
    try:
        placement.maybe_initialize_distributed(config)
    except (ValueError, RuntimeError) as e:
        raise ConfigError(
            f"config.distributed: jax.distributed.initialize() found no cluster ({_last_line(str(e))}); launch one "
            "process per host under SLURM, Open MPI, Kubernetes or on a Cloud TPU pod slice (detected "
            "automatically), or set --config.distributed=False on a single machine") from None


def workdir_problem(workdir: str, mode: str) -> str | None:
    """Why ``workdir`` cannot take this run's files (one line), or None. Train creates it (nothing else)."""
    from consistency.core import fileio
    try:
        if mode != "train" and not fileio.isdir(workdir):
            return None  # sample/eval report the missing run themselves
        if fileio.is_remote(workdir):
            fileio.check_writable(workdir)   # a bucket: write and delete one probe object
        else:
            os.makedirs(workdir, exist_ok=True)
            with tempfile.TemporaryFile(dir=workdir):
                pass
            if mode == "train":   # also WORKDIR/checkpoints (another user's run, a read-only share)
                from consistency.core import checkpoint
                problem = checkpoint.storage_problem(workdir)
                if problem:
                    return problem
    except Exception as e:  # noqa: BLE001 — OSError locally; a bucket client raises its own errors
        reason = getattr(e, "strerror", None) or _last_line(str(e)) or type(e).__name__
        return (f"--workdir: cannot write to {workdir!r} ({reason}); choose a directory or bucket path you can "
                "write, e.g. --workdir=workdirs/<run> or --workdir=gs://<bucket>/<run>")
    return None


def prepare(command: Command) -> ml_collections.ConfigDict:
    """Everything that can fail cheaply, in order: imports, the config (one line per bad value), the cluster, the
    devices, the data and the network shape, the workdir. Returns the config to run."""
    from consistency import methods
    methods.import_modules(command.imports)
    config = resolve_config(command)
    from consistency import config as config_lib
    from consistency.run import placement, train
    config_lib.validate(config)        # before any backend or data: pure checks of every field
    initialize_distributed(config, command.cluster)     # before anything touches a backend
    placement.check_processes_agree(config, command.workdir)   # multi-host: one program in one workdir, before any step
    train.prefer_fast_cpu_random()
    train.validate_run_config(config)  # devices, hosts, teacher checkpoint, data availability, network shape
    problem = workdir_problem(command.workdir, command.mode)
    if problem:
        raise CommandLineError(problem)
    return config


# ----------------------------------------------------------------------------------------------------------
# Running and reporting
# ----------------------------------------------------------------------------------------------------------

def _number(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def metrics_table(report: dict) -> str:
    """A compact table of an ``eval/metrics_<step>.json`` report: one row per metric, one column per NFE,
    ``value (floor)`` where the report has a noise floor."""
    nfes = [int(n) for n in report.get("nfes", [])]
    blocks = [report.get(f"nfe_{n}", {}) for n in nfes]
    names = sorted({k for b in blocks for k, v in b.items()
                    if not k.endswith("_floor") and k != "num_samples" and isinstance(v, (int, float))})
    cells = [[_number(b[k]) + (f" (floor {_number(b[k + '_floor'])})" if k + "_floor" in b else "") if k in b
              else "-" for b in blocks] for k in names]
    header = ["metric"] + [f"NFE {n}" for n in nfes]
    rows = [header] + [[name] + row for name, row in zip(names, cells)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows)


def _print_report(path: str, reused: bool = False) -> None:
    from consistency.core import fileio
    report = fileio.read_json(path)
    note = (" — re-used: computed earlier for the same NFEs and sample count; delete the file to recompute"
            if reused else "")
    print(f"{report.get('method', '?')} at step {report.get('step', '?')}, {report.get('num_samples', '?')} samples "
          f"per NFE: {path}{note}")
    print(metrics_table(report))


def _metrics_path(workdir: str, step: int) -> str:
    return os.path.join(workdir, "eval", f"metrics_{step}.json")


def execute(command: Command, config: ml_collections.ConfigDict) -> None:
    """Run the mode and print what it wrote (process 0 only: it alone writes the files)."""
    import jax
    from consistency.core import fileio
    from consistency.run import train
    workdir, chief = command.workdir, jax.process_index() == 0
    if command.mode == "train":
        state = train.run("train", config, workdir)
        step = int(train.to_host(state.step))
        if chief:
            print(f"trained {config.method} to step {step} in {fileio.absolute(workdir)}")
            if fileio.exists(_metrics_path(workdir, step)):
                _print_report(_metrics_path(workdir, step))
    elif command.mode == "sample":
        path = train.run("sample", config, workdir, command.step)
        if chief:
            print(f"wrote {int(config.sampling.num_samples)} samples to {path} and {os.path.splitext(path)[0]}.png")
    else:
        results = train.evaluate(config, workdir, command.step, force=True)  # --mode=eval always recomputes
        path = _metrics_path(workdir, int(results["step"]))
        if chief:
            _print_report(path, reused=False)


# ----------------------------------------------------------------------------------------------------------
# Errors and logging
# ----------------------------------------------------------------------------------------------------------

def fail(message: str) -> None:
    """Print ``error: <message>`` as one line on stderr and exit with status 2."""
    sys.stderr.write(f"error: {' '.join(str(message).split())}\n")
    sys.stderr.flush()
    sys.exit(2)


@contextlib.contextmanager
def expected_errors(mode: str | None = None):
    """Turn every expected failure into one line and exit status 2; anything else keeps its traceback."""
    try:
        yield
    except (CommandLineError, ConfigError) as e:
        fail(str(e))
    except KeyboardInterrupt:         # Ctrl-C before the loop took over the signal (loading, compiling)
        sys.stderr.write("stopped by SIGINT before the first step; nothing was trained or saved\n")
        sys.stderr.flush()
        sys.exit(130)
    except Stopped as e:              # SIGTERM/SIGINT: the step was saved; 128 + signum, like a shell
        sys.stderr.write(" ".join(str(e).split()) + "\n")
        sys.stderr.flush()
        sys.exit(e.exit_status)
    except FloatingPointError as e:   # train.NonFiniteMetricError, or a non-finite state refused by a checkpoint save
        fail(str(e))
    except FileNotFoundError as e:    # sample/eval: no run or no checkpoint there
        if mode == "train":
            raise
        fail(str(e))
    except OSError as e:              # checkpoint.CheckpointWriteError: a full disk or read-only directory mid-run
        if type(e).__name__ != "CheckpointWriteError":
            raise
        fail(str(e))


class ProgressOnly(std_logging.Filter):
    """Keep warnings and the short INFO lines of this package and of clu (progress, ETA, logged metrics); drop the
    other libraries' INFO records (Orbax, absl, matplotlib) and any INFO line over :data:`MAX_INFO_CHARS`."""

    def __init__(self):
        super().__init__()
        import consistency
        clu_dirs = [os.path.join("clu", "platform"), os.path.join("clu", "metric_writers")]
        self._sources = [os.path.dirname(os.path.abspath(consistency.__file__)) + os.sep] + clu_dirs

    def filter(self, record: std_logging.LogRecord) -> bool:
        if any(s in record.pathname for s in QUIET_WARNING_SOURCES):
            return record.levelno >= std_logging.ERROR
        if "orbax" in record.pathname and any(m in str(record.msg) for m in ORBAX_REPORTED_FAILURES):
            return False  # a failed background save: consistency.core.checkpoint reports it in one line
        if record.levelno >= std_logging.WARNING:
            return True
        return any(s in record.pathname for s in self._sources) and len(record.getMessage()) <= MAX_INFO_CHARS


def configure_logging(verbose: bool) -> None:
    """Default: progress lines and warnings (:class:`ProgressOnly`); ``--verbosity`` given: absl's settings."""
    if verbose:
        return
    # TensorFlow (only data reading and TensorBoard writing here) prints C++ INFO banners when it loads; its oneDNN
    # kernels, whose banner TF_CPP_MIN_LOG_LEVEL does not hide, only serve TF's own math, which no model uses.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    logging.set_verbosity(logging.INFO)
    handler = logging.get_absl_handler()
    if not any(isinstance(f, ProgressOnly) for f in handler.filters):
        handler.addFilter(ProgressOnly())


# ----------------------------------------------------------------------------------------------------------
# --help and the entry point
# ----------------------------------------------------------------------------------------------------------

def _section_line(name: str, section) -> str:
    values = " ".join(f"{k}={v!r}" for k, v in section.items())
    return textwrap.fill(values, WIDTH, initial_indent=f"  {name + ':':<10} ", subsequent_indent=" " * 13)


def config_help(config: ml_collections.ConfigDict | None = None, source: str = "") -> str:
    """Every config section with its fields and values (``base_config()``'s defaults unless ``config`` is given)."""
    from consistency import config as config_lib
    config = config_lib.base_config() if config is None else config
    scalars = {k: v for k, v in config.items() if not isinstance(v, ml_collections.ConfigDict)}
    sections = [(k, v) for k, v in config.items() if isinstance(v, ml_collections.ConfigDict)]
    head = (f"Config fields of {source} (before --config.* overrides):" if source else
            "Config fields and their defaults (consistency.config.base_config(); each config file changes some — "
            "--help --config=FILE lists that file's values). Override any with --config.<section>.<field>=<value>:")
    try:
        from consistency import methods
        method_names = f"   (methods: {', '.join(methods.available())})"
    except Exception:  # noqa: BLE001 — help never fails on an import
        method_names = ""
    lines = [textwrap.fill(head, WIDTH), "  " + " ".join(f"{k}={v!r}" for k, v in scalars.items()) + method_names]
    return "\n".join(lines + [_section_line(k, v) for k, v in sections])


def help_text(argv: Sequence[str], flag_values: flags.FlagValues = flags.FLAGS) -> str:
    rows = [("--config", flag_values["config"].help), ("--workdir", flag_values["workdir"].help),
            ("--mode", "train | sample | eval (default train); see Modes above."),
            ("--step", flag_values["step"].help),
            ("--imports", "Python modules to import first (repeatable), e.g. one that adds a method with "
                          "consistency.methods.register(name, make)."),
            ("--verbosity", "absl log level; by default only progress lines and warnings are shown, 0 shows every "
                            "library's INFO log."),
            ("--helpfull", "every flag, including absl's.")]
    flag_lines = [textwrap.fill(text, WIDTH, initial_indent=f"  {name:<12} ", subsequent_indent=" " * 15)
                  for name, text in rows]
    config, source = None, ""
    spec = _config_argument(argv)
    if spec:
        try:
            config, source = ConfigFileFlagParser(name="config").parse(spec), spec
        except Exception:  # noqa: BLE001 — fall back to the defaults
            config = None
    return "\n".join([__doc__.strip(), "", "Flags:", *flag_lines, "", config_help(config, source)])


def parse_flags_or_exit(argv: Sequence[str]) -> list[str]:
    """``app.run``'s flags parser: ``--help`` prints the flags and config fields (exit 0); a bad flag is one line
    (exit 2)."""
    if "--helpfull" in argv:
        print(flags.FLAGS.get_help())
        sys.exit(0)
    if any(arg in HELP_FLAGS for arg in argv):
        print(help_text(argv))
        sys.exit(0)
    with expected_errors():
        return parse_flags(argv)


def resume_command(argv: Sequence[str]) -> str:
    """The command line that started this process, to print when a signal stops it."""
    return shlex.join([os.path.basename(sys.executable), "-m", "consistency.main", *argv[1:]])


def main(argv: Sequence[str]) -> None:
    set_resume_hint(resume_command(sys.argv))
    with expected_errors():
        command = read_command(flags.FLAGS, argv)
    configure_logging(command.verbose)
    with expected_errors(command.mode):
        config = prepare(command)
        execute(command, config)
    logging.flush()


def check(argv: Sequence[str]) -> ml_collections.ConfigDict:
    """Parse ``argv`` and run every check of :func:`prepare` in-process (a fresh FlagValues), exiting like the CLI
    (one line, status 2) on an expected failure; returns the config that would run. For tests and notebooks."""
    flag_values = flags.FlagValues()
    define_flags(flag_values, sys_argv=argv)
    with expected_errors():
        rest = parse_flags(argv, flag_values)
        command = read_command(flag_values, rest)
    with expected_errors(command.mode):
        return prepare(command)


def run() -> None:
    app.run(main, flags_parser=parse_flags_or_exit)


if __name__ == "__main__":
    run()
