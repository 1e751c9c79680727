"""How every failure is shown: the one place that decides the line, the exit code and the traceback.

- UserError: a mistake the user can fix (config, data, cluster request, CLI): `error: <message>`,
  exit 2, no traceback anywhere.
- TrainingError: training failed after its retries; its message already names what failed and
  the cause: `error: <type>: <message>`, exit 1.
- Anything else: the same one line, exit 1; the traceback goes to the log only.
"""

from __future__ import annotations

import argparse
import logging
import sys

EXIT_TRAINING_FAILED = 1
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class UserError(Exception):
    """A mistake the user can fix; shown as `error: <message>`, exit EXIT_USER_ERROR."""


class TrainingError(RuntimeError):
    """Training failed after Ray Train's retries; the message names the model and the cause."""


def show(exc: BaseException, interrupted_hint: str = "") -> int:
    """Print `exc` as one line on stderr; the process's exit code. An interrupt says what to do
    next: its own message where the code that caught it knows better (a KeyboardInterrupt raised
    again with one), else `interrupted_hint`."""
    if isinstance(exc, UserError):
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    if isinstance(exc, KeyboardInterrupt):
        hint = str(exc) or interrupted_hint
        print(f"error: interrupted{'; ' + hint if hint else ''}", file=sys.stderr)
        return EXIT_INTERRUPTED
    if not isinstance(exc, TrainingError):
        logging.getLogger("training").debug("traceback", exc_info=exc)
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    print(f"error: {type(exc).__name__}: {first}", file=sys.stderr)
    return EXIT_TRAINING_FAILED


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser with a bad flag shown as one line (`error: <what>`, exit 2) rather than
    the usage and the error; --help still prints the usage."""

    def error(self, message: str):
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
