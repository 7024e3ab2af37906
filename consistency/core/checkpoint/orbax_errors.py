"""Orbax's failures as one line each: the text of an error (:func:`one_line`), a failed read's leftovers silenced
(:class:`QuietOrphanedReads`, :func:`drop_tracebacks`) and Orbax's expected warnings dropped."""
from __future__ import annotations

import asyncio
import contextlib
import gc
import logging as std_logging
import sys
import time
import warnings

from absl import logging

def one_line(error: BaseException, width: int = 200) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = f"{type(error).__name__}: {lines[0] if lines else ''}"
    return text if len(text) <= width else text[:width - 1] + "…"


def drop_tracebacks(error: BaseException) -> None:
    """Forget the tracebacks of ``error`` and its causes (their messages stay)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        error.__traceback__ = None
        error = error.__cause__ or error.__context__


class _DropMessage(std_logging.Filter):
    def __init__(self, prefix: str):
        super().__init__()
        self._prefix = prefix

    def filter(self, record: std_logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self._prefix)


class QuietOrphanedReads:
    """When one read of a broken step fails, Orbax closes its event loop while TensorStore still completes the
    other reads; each then reports through ``sys.unraisablehook`` ('RuntimeError: Event loop is closed', or the
    read error again when its coroutine is finalized): a traceback apiece, dozens per step, some of them after the
    failure has been raised. Inside this context exactly those are dropped, and :meth:`settle` waits for them, so a
    skipped step costs one log line."""

    def __enter__(self) -> "QuietOrphanedReads":
        self._previous, self._last = sys.unraisablehook, time.monotonic()
        sys.unraisablehook = self._hook
        # the same failed reads, when their future is collected: "Future exception was never retrieved" + the error
        self._asyncio_filter = _DropMessage("Future exception was never retrieved")
        std_logging.getLogger("asyncio").addFilter(self._asyncio_filter)
        return self

    def _hook(self, unraisable) -> None:
        value = unraisable.exc_value
        if (isinstance(value, RuntimeError) and str(value) == "Event loop is closed") or \
                asyncio.iscoroutine(unraisable.object):
            self._last = time.monotonic()
        else:
            self._previous(unraisable)

    def settle(self, quiet_for: float = 0.2, at_most: float = 2.0) -> None:
        """Collect the failed reads' garbage and wait until they have been silent for ``quiet_for`` seconds
        (at most ``at_most``): only ever after a failed restore."""
        start = time.monotonic()
        self._last = max(self._last, start)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="coroutine .* was never awaited", category=RuntimeWarning)
            while time.monotonic() - self._last < quiet_for and time.monotonic() - start < at_most:
                gc.collect()
                time.sleep(0.02)

    def __exit__(self, *exc_info) -> None:
        sys.unraisablehook = self._previous
        std_logging.getLogger("asyncio").removeFilter(self._asyncio_filter)


@contextlib.contextmanager
def no_missing_metadata_warning():
    """Orbax warns 'Metadata file does not exist' when a ``state`` item is read on its own (its step metadata lives
    one folder up): true, expected and no use to a user, on every teacher and ``init_from`` load."""
    drop = _DropMessage("Metadata file does not exist")
    logger = logging.get_absl_logger()
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)
