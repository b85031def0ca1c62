"""Exceptions of the ingestion job and the exit code each one means.

The job's configuration, credential and transient errors *are* the knowledge
store's (each subclasses the ``ragkeeper_knowledge.errors`` class of the same
name), so one ``except ragkeeper_knowledge.errors.ConfigurationError`` catches
both, and the exit code follows from that one class::

    RagError                          kerrors = ragkeeper_knowledge.errors
    ├── ConfigurationError      exit 2  also a kerrors.ConfigurationError: bad flag/env
    ├── CredentialsError        exit 3  also a kerrors.CredentialsError: credentials
    │                                   missing, malformed or refused
    ├── TransientError          exit 1  also a kerrors.TransientError: database or
    │   │                               source API unreachable
    │   └── Interrupted                 SIGTERM/SIGINT arrived mid-run
    └── FileSkipped             (none)  also a kerrors.FileSkipped (as is the extractors'
                                        ExtractionError): one file could not be read or
                                        parsed, reported in ``errors``, the run goes on
                                        (``partial``)

``exit_code_for`` chooses the code by type only: a ``kerrors.ConfigurationError``
(the job's or the store's, e.g. ``EmbeddingModelMismatch``) is 2, a
``kerrors.CredentialsError`` is 3, anything else, unexpected errors included, is
retryable (1).
"""

from __future__ import annotations

from ragkeeper_knowledge import errors as kerrors


class RagError(Exception):
    """Base class of the ingestion job's own errors."""


class ConfigurationError(RagError, kerrors.ConfigurationError):
    """The job is misconfigured; a human has to change something."""


class CredentialsError(RagError, kerrors.CredentialsError):
    """Credentials are missing, malformed, or refused by the provider."""


class TransientError(RagError, kerrors.TransientError):
    """A dependency is unreachable; a re-run may succeed."""


class Interrupted(TransientError):
    """The run was asked to stop (SIGTERM) before finishing."""


class FileSkipped(RagError, kerrors.FileSkipped):
    """A single file could not be fetched or parsed; the run continues.

    The extractors' ``ExtractionError`` is a ``kerrors.FileSkipped`` too: catch that one
    class for both."""


EXIT_OK = 0
EXIT_RETRYABLE = 1
EXIT_CONFIGURATION = 2
EXIT_CREDENTIALS = 3


def exit_code_for(exc: BaseException) -> int:
    """Map an exception to the job's exit code by its type, never its message."""
    if isinstance(exc, kerrors.ConfigurationError):
        return EXIT_CONFIGURATION
    if isinstance(exc, kerrors.CredentialsError):
        return EXIT_CREDENTIALS
    return EXIT_RETRYABLE
