"""Test-session settings.

jax 0.10.2 enables ``jax_threefry_partitionable`` by default; with it XLA-CPU compiles small random draws (conv
initialisers, dropout masks) 5–15× more slowly (measured: a tiny U-Net init 92 s vs 12 s). The per-example noise of the
methods is drawn from vmapped keys, so results stay device-count invariant either way. ``consistency.main`` makes the
same choice on CPU.
"""
import jax

jax.config.update("jax_threefry_partitionable", False)
