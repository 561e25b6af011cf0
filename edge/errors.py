"""The toolkit's error types: errors a user can fix, as opposed to bugs.

Every entry point (:func:`edge.cli.run_cli`) prints a :class:`UserError` as one line, ``error: ...``, and
exits 2. Anything else is a bug in the toolkit: it keeps its traceback, followed by one line that says to
report it, and exits 1. So a library function raises a ``UserError`` subclass exactly when the message
tells the user what to change (a file, a flag, a folder), and lets ordinary exceptions propagate otherwise.

``UserError`` subclasses ``ValueError`` so that library callers who catch ``ValueError`` keep working;
the CLI never catches plain ``ValueError`` (a numpy shape error is a bug, not bad input).
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input or an environment the user can fix; the message says what and how."""


class ConfigError(UserError):
    """A network configuration or genotype that does not describe a valid network."""


class UsageError(UserError):
    """Flags or arguments that do not go together."""


class ModelError(UserError):
    """A model file that cannot be opened; the message says why and what to do."""
