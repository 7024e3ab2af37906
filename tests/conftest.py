"""Test-session settings.

jax 0.10.2 enables ``jax_threefry_partitionable`` by default; with it XLA-CPU compiles small random draws (conv
initialisers, dropout masks) 5–15× more slowly (measured: a tiny U-Net init 92 s vs 12 s). The per-example noise of the
methods is drawn from vmapped keys, so results stay device-count invariant either way. ``consistency.main`` makes the
same choice on CPU.

``@pytest.mark.slow`` marks the few end-to-end tests that take over 90 s each on 2 CPU cores (each has a cheaper
sibling that runs every time). They are skipped unless ``--runslow`` is given:
``python -m pytest -q tests --runslow`` runs everything (about 4 minutes more).
"""
import jax
import pytest

jax.config.update("jax_threefry_partitionable", False)


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="also run tests marked slow")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: an end-to-end test over 90 s on 2 CPU cores; run with --runslow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow end-to-end test; run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
