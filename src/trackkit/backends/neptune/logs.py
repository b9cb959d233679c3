"""The neptune client's own log lines kept off stdout, where they mixed into a program's output."""

from __future__ import annotations

import logging
import sys

from trackkit import env

#: set to a true value to see the client's own log lines (on stderr)
VERBOSE_ENV = "TRACKKIT_VERBOSE"
#: the client's loggers: they write to stdout and do not propagate
SDK_LOGGERS = ("neptune", "neptune_no_prefix")


class _ToTrackkitLogger(logging.Handler):
    """Hands the client's log records to the ``trackkit.neptune`` logger."""

    def emit(self, record: logging.LogRecord) -> None:
        target = logging.getLogger("trackkit.neptune")
        if target.isEnabledFor(record.levelno):
            target.handle(record)


class _VerboseHandler(logging.Handler):
    """Prints the client's log lines on stderr (``TRACKKIT_VERBOSE=1``)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)


def route_sdk_logs() -> None:
    """Keep the client's log lines off stdout.

    The client's own handlers (they write to stdout) are replaced: its records go to the
    ``trackkit.neptune`` logger (warnings reach stderr unless the program configured logging),
    or, with ``TRACKKIT_VERBOSE=1``, are printed on stderr. Handlers a program added are kept.
    """
    verbose = env.flag(VERBOSE_ENV)
    for name in SDK_LOGGERS:
        sdk_logger = logging.getLogger(name)
        formatter = None
        for handler in list(sdk_logger.handlers):
            own = type(handler).__module__.startswith("neptune.")
            if own or isinstance(handler, (_ToTrackkitLogger, _VerboseHandler)):
                formatter = formatter or handler.formatter
                sdk_logger.removeHandler(handler)
        if verbose:
            handler = _VerboseHandler()
            handler.setFormatter(formatter or logging.Formatter("[%(name)s] %(message)s"))
            sdk_logger.addHandler(handler)
        else:
            sdk_logger.addHandler(_ToTrackkitLogger())
        sdk_logger.propagate = False
