"""Pictures of samples: PNG grids of images in [-1, 1] and scatter / histogram plots of 1-D and 2-D toy samples."""
from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

from consistency.core import fileio


def to_uint8(x: np.ndarray) -> np.ndarray:
    """[-1, 1] → {0, …, 255}: round(127.5 (x + 1)), clipped (the data layer's scaling, inverted)."""
    return np.clip(np.rint((np.asarray(x, np.float64) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def image_grid(x: np.ndarray, num_cols: int | None = None, padding: int = 1, pad_value: int = 255) -> np.ndarray:
    """Tile N images [N, H, W, C] in [-1, 1] into one uint8 image [rows·(H+p)+p, cols·(W+p)+p, C].

    ``num_cols`` defaults to ⌈√N⌉; cells are separated (and framed) by ``padding`` pixels of ``pad_value``.
    """
    x = np.asarray(x)
    if x.ndim == 3:  # [N, H, W] grayscale
        x = x[..., None]
    if x.ndim != 4:
        raise ValueError(f"image_grid wants [N, H, W, C], got shape {x.shape}")
    n, h, w, c = x.shape
    cols = num_cols or max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / cols))
    p = padding
    grid = np.full((rows * (h + p) + p, cols * (w + p) + p, c), pad_value, np.uint8)
    pixels = to_uint8(x)
    for i in range(n):
        r, q = divmod(i, cols)
        top, left = p + r * (h + p), p + q * (w + p)
        grid[top:top + h, left:left + w] = pixels[i]
    return grid


def upscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement by an integer factor (8×8 digits are unreadable at 1:1)."""
    if factor <= 1:
        return image
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def save_png(path: str, array: np.ndarray) -> str:
    """Write a uint8 [H, W], [H, W, 1], [H, W, 3] or [H, W, 4] array as a PNG (creating the folder)."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"save_png wants uint8, got {array.dtype} (use to_uint8 / image_grid first)")
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return fileio.write_bytes(path, buffer.getvalue())   # local or bucket path, atomically


def scatter_image(points: np.ndarray, reference: np.ndarray | None = None, title: str = "",
                  size_inches: float = 4.0, dpi: int = 100) -> np.ndarray:
    """Render samples as a uint8 RGB image: a scatter plot for [N, 2], a histogram for [N, 1] or [N].

    ``reference`` (data points, same dimension) is drawn underneath in grey for comparison.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    points = np.asarray(points, np.float64)
    if points.ndim == 1:
        points = points[:, None]
    if points.ndim != 2 or points.shape[1] not in (1, 2):
        raise ValueError(f"scatter_image wants [N, 2] or [N, 1] points, got shape {points.shape}")
    ref = None if reference is None else np.asarray(reference, np.float64).reshape(-1, points.shape[1])
    fig = Figure(figsize=(size_inches, size_inches), dpi=dpi)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if points.shape[1] == 2:
        if ref is not None:
            ax.scatter(ref[:, 0], ref[:, 1], s=2, c="0.7", alpha=0.5, label="data", linewidths=0)
        ax.scatter(points[:, 0], points[:, 1], s=3, c="tab:blue", alpha=0.8, label="samples", linewidths=0)
        ax.set_aspect("equal", adjustable="datalim")
    else:
        finite = points[np.isfinite(points[:, 0]), 0]
        both = finite if ref is None else np.concatenate([finite, ref[:, 0]])
        bins = np.histogram_bin_edges(both if both.size else np.zeros(1), bins=60)
        if ref is not None:
            ax.hist(ref[:, 0], bins=bins, density=True, color="0.7", alpha=0.6, label="data")
        ax.hist(finite, bins=bins, density=True, histtype="step", color="tab:blue", label="samples")
    if ref is not None:
        ax.legend(loc="upper right", fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def scatter_png(points: np.ndarray, path: str, reference: np.ndarray | None = None, title: str = "") -> np.ndarray:
    """Save :func:`scatter_image` of ``points`` to ``path``; returns the rendered uint8 RGB image."""
    image = scatter_image(points, reference, title)
    save_png(path, image)
    return image

