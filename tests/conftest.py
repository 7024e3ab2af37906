"""Test-session settings and the test tiers.

Tiers (``python -m pytest -q tests`` runs the default tier; CI runs every tier with ``--all-tiers``):

* default: closed-form checks, the method contract, bitwise resume, CLI errors — under 8 minutes on 2 CPU cores;
* ``@pytest.mark.quality``: learning tests ("it learns": hundreds to thousands of training steps, a metric bound);
* ``@pytest.mark.slow``: end-to-end runs in subprocesses, several processes, or over about 30 s of compute.

``python -m pytest -q tests --all-tiers`` runs all three; ``-m quality --all-tiers`` runs one tier alone.

jax 0.10.2 enables ``jax_threefry_partitionable`` by default; with it XLA-CPU compiles small random draws (conv
initialisers, dropout masks) 5–15× more slowly (measured: a tiny U-Net init 92 s vs 12 s). The per-example noise of the
methods is drawn from vmapped keys, so results stay device-count invariant either way. ``consistency.main`` makes the
same choice on CPU.

Compiled programs are kept in a persistent JAX compilation cache (``~/.cache/consistency/jax-tests``, or
``$CONSISTENCY_TEST_JAX_CACHE``; set it to an empty string to turn the cache off). It is set through the environment,
so the tests' subprocesses share it; a second run of the suite skips most XLA compiles.
"""
import os

_CACHE = os.environ.get("CONSISTENCY_TEST_JAX_CACHE", os.path.expanduser("~/.cache/consistency/jax-tests"))
if _CACHE:
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _CACHE)
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

import jax  # noqa: E402  (after the cache directory is in the environment)
import pytest  # noqa: E402

jax.config.update("jax_threefry_partitionable", False)

TIERS = {
    "quality": "a learning test (many training steps and a metric bound); runs with --all-tiers",
    "slow": "an end-to-end test in subprocesses or over about 30 s; runs with --all-tiers",
}


def pytest_addoption(parser):
    parser.addoption("--all-tiers", action="store_true", default=False,
                     help="also run the tests marked quality and slow")


def pytest_configure(config):
    for name, text in TIERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--all-tiers"):
        return
    for item in items:
        for name in TIERS:
            if name in item.keywords:
                item.add_marker(pytest.mark.skip(reason=f"{name} tier; run with --all-tiers"))
                break
