"""One logger for labkit's notices and warnings: `notice: ...` / `warning: ...` lines, never bare prints."""

from __future__ import annotations

import logging
import sys

LOGGER = logging.getLogger("labkit")


class _LineHandler(logging.Handler):
    """`notice: <msg>` for INFO, `warning: <msg>` for WARNING and above, one line each.

    The stream is chosen when a record is emitted: stderr in a terminal (stdout stays for results, e.g. the
    output folder as the last line), stdout for notices inside a notebook kernel (stderr shows as a red box in
    the HTML report; warnings stay red on purpose).
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            label = "notice" if record.levelno < logging.WARNING else "warning"
            in_kernel = in_kernel_shell()
            stream = sys.stdout if in_kernel and record.levelno < logging.WARNING else sys.stderr
            stream.write(f"{label}: {record.getMessage()}\n")
            stream.flush()
        except Exception:  # a logging failure must never break training
            self.handleError(record)


def in_kernel_shell() -> bool:
    """True inside a Jupyter kernel (its ZMQ shell is running), not merely when ipykernel was imported."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    return type(shell).__name__ == "ZMQInteractiveShell"


if not any(isinstance(h, _LineHandler) for h in LOGGER.handlers):
    LOGGER.addHandler(_LineHandler())
    LOGGER.setLevel(logging.INFO)
    LOGGER.propagate = False


def get_logger(name: str) -> logging.Logger:
    """A child of the `labkit` logger (`get_logger(__name__)` in a module)."""
    return LOGGER.getChild(name.removeprefix("labkit.")) if name != "labkit" else LOGGER


def notice(message: str) -> None:
    """Something the user should know; not a problem."""
    LOGGER.info(message)


def warn(message: str) -> None:
    """Something that may give a wrong or weak result; the run goes on."""
    LOGGER.warning(message)
