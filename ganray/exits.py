"""Exit codes of every ganray command, and the base class of "the user's input is wrong".

0 done; 1 a failure during the run; 2 bad input (a config, data, checkpoint, URI or file the
user gave is wrong, found before the run starts). This module imports nothing: every layer,
the config floor included, may use it.
"""
from __future__ import annotations

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


class BadInput(Exception):
    """The user's input is wrong (exit 2): subclassed by ConfigError, DataError, CheckpointError,
    the report's and eval's input errors. An error raised by the run itself is not one."""

