"""consistency: consistency models and diffusion distillation in JAX/Flax.

``consistency.load(workdir)`` → a trained run's config, sampling (EMA) params and a ``sample(rng, n, **kw)`` function.
"""

__version__ = "0.1.0"


def __getattr__(name):  # lazy, so `import consistency` stays cheap
    if name == "load":
        from consistency.api import load
        return load
    raise AttributeError(f"module 'consistency' has no attribute {name!r}")
