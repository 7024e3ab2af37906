"""Process-wide JAX settings every entry point applies before it builds anything."""
import jax


def prefer_fast_cpu_random() -> None:
    """On CPU, turn off ``jax_threefry_partitionable`` (on by default in jax 0.10): with it XLA-CPU compiles small
    random draws such as conv initialisers 5–15× more slowly (tests/conftest.py). Methods draw their noise from
    per-example keys, so results stay independent of the device count either way; accelerators keep the default.
    Every entry point calls it, so CLI and in-process runs draw the same numbers."""
    if jax.default_backend() == "cpu":
        jax.config.update("jax_threefry_partitionable", False)
