"""The bottom layer: the error type, workdir files on disks and buckets, Orbax checkpoints, process settings,
torch-free readers of ``.pth`` files and EDM pickles. It imports nothing else of the package."""
