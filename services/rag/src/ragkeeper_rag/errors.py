"""Exceptions of the ingestion job and the exit code each one means.

::

    RagError
    ├── ConfigurationError      exit 2  bad flag/env, embedding model mismatch
    ├── CredentialsError        exit 3  credentials missing, malformed or refused
    ├── TransientError          exit 1  database or source API unreachable, interrupted
    │   └── Interrupted                 SIGTERM/SIGINT arrived mid-run
    └── FileSkipped             (none)  one file could not be read/parsed: reported
                                        in ``errors``, the run goes on (``partial``)

``exit_code_for`` chooses the code by type only; knowledge-store errors map onto
the same three codes. Anything unexpected is treated as retryable (1).
"""

from __future__ import annotations

from ragkeeper_knowledge import errors as kerrors


class RagError(Exception):
    """Base class of the ingestion job's own errors."""


class ConfigurationError(RagError):
    """The job is misconfigured; a human has to change something."""


class CredentialsError(RagError):
    """Credentials are missing, malformed, or refused by the provider."""


class TransientError(RagError):
    """A dependency is unreachable; a re-run may succeed."""


class Interrupted(TransientError):
    """The run was asked to stop (SIGTERM) before finishing."""


class FileSkipped(RagError):
    """A single file could not be fetched or parsed; the run continues."""


EXIT_OK = 0
EXIT_RETRYABLE = 1
EXIT_CONFIGURATION = 2
EXIT_CREDENTIALS = 3


def exit_code_for(exc: BaseException) -> int:
    """Map an exception to the job's exit code by its type, never its message."""
    if isinstance(exc, ConfigurationError | kerrors.ConfigurationError):
        return EXIT_CONFIGURATION
    if isinstance(exc, CredentialsError | kerrors.CredentialsError):
        return EXIT_CREDENTIALS
    return EXIT_RETRYABLE
