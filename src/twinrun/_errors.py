"""twinrun's exceptions.

    TwinrunError
    ├── UsageError(TwinrunError, ValueError)       bad arguments or options            (CLI exit 2)
    ├── BadTraceError(TwinrunError, ValueError)    a file that is not a readable trace (CLI exit 2)
    ├── BadResultsError(TwinrunError, ValueError)  a sweep results file that is wrong  (CLI exit 2)
    ├── StructuralMismatchError(TwinrunError, ValueError)  two traces of different runs  (CLI exit 2)
    ├── BadLockError(TwinrunError, ValueError)     a lock file that cannot be read      (CLI exit 2)
    ├── ScriptFailedError(TwinrunError, RuntimeError)  the user's script failed        (CLI exit 3)
    └── FrameworkMissingError(TwinrunError, ImportError)  a framework or extra is not installed (CLI exit 2)

Every message names the file or value that is wrong and how to fix it, on one line.
"""

from __future__ import annotations

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_DIFFERENT",
    "EXIT_OK",
    "EXIT_SCRIPT_FAILED",
    "BadLockError",
    "BadResultsError",
    "BadTraceError",
    "FrameworkMissingError",
    "ScriptFailedError",
    "StructuralMismatchError",
    "TwinrunError",
    "UsageError",
]


# The command line's exit codes (DESIGN.md): success / reproducible, a divergence or a significant
# difference, bad usage or input, the user's script failed.
EXIT_OK, EXIT_DIFFERENT, EXIT_BAD_INPUT, EXIT_SCRIPT_FAILED = 0, 1, 2, 3


class TwinrunError(Exception):
    """Base of every error twinrun raises on purpose."""

    exit_code = EXIT_BAD_INPUT


class UsageError(TwinrunError, ValueError):
    """Bad arguments, options or input values."""


class BadTraceError(TwinrunError, ValueError):
    """A file that is not a twinrun trace, is truncated, or is of a newer schema."""


class BadResultsError(TwinrunError, ValueError):
    """A sweep results file that is not one, or of another schema or script."""


class StructuralMismatchError(TwinrunError, ValueError):
    """Two traces (or a trace and a live run) that record different models or runs."""


class BadLockError(TwinrunError, ValueError):
    """A lock file that cannot be read, or says something twinrun cannot compare."""


class ScriptFailedError(TwinrunError, RuntimeError):
    """The user's script exited non-zero or raised."""

    exit_code = EXIT_SCRIPT_FAILED


class FrameworkMissingError(TwinrunError, ImportError):
    """A framework, or an optional dependency, is not installed."""
