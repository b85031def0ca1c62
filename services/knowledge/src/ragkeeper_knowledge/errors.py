"""Exceptions raised by the knowledge store and embedders.

::

    KnowledgeError
    ├── ConfigurationError        a setting is wrong; fixing it needs a human (exit 2)
    │   └── EmbeddingModelMismatch  store was built with another model/dimension
    ├── TransientError            may succeed on retry: database/API unreachable (exit 1)
    │   └── EmbeddingUnavailable    embedding API kept failing after retries
    ├── CredentialsError          a key or token was refused (exit 3)
    ├── EmbeddingError            the embedder rejected the input for good
    │   └── EmbeddingCredentialsError  HTTP 401/403: the API key is wrong (also a CredentialsError)
    ├── RerankError               the reranker refused the request or answered malformed
    │   └── RerankUnavailable       still failing after retries (also a TransientError)
    └── FileSkipped               one file could not be read; the caller reports it and goes on
        └── ExtractionError         (``extraction``) unsupported, corrupt or unreadable content
            └── LimitExceeded         over a per-file cap of ``ExtractionLimits``

The ingestion job maps these types (never message text) to exit codes, and reports a
``FileSkipped`` in its run's ``errors``; the agent answers an attachment's
``ExtractionError`` with a 422 naming the file. The agent answers a
search in the hybrid search's own order when reranking raises a ``RerankError``.
"""

from __future__ import annotations


class KnowledgeError(Exception):
    """Base class of everything this package raises on purpose."""


class ConfigurationError(KnowledgeError):
    """A setting is missing or invalid; retrying will not help."""


class EmbeddingModelMismatch(ConfigurationError):
    """The store already holds vectors from a different model or dimension."""


class TransientError(KnowledgeError):
    """A dependency (database, embedding API) is unreachable right now."""


class EmbeddingUnavailable(TransientError):
    """The embedding service kept failing (429/5xx/timeouts) after all retries."""


class CredentialsError(KnowledgeError):
    """A credential (API key, token) was refused; a human must fix it."""


class EmbeddingError(KnowledgeError):
    """The embedding service rejected the request for good (4xx other than 429)."""


class EmbeddingCredentialsError(EmbeddingError, CredentialsError):
    """The embedding service refused the API key (HTTP 401/403)."""


class RerankError(KnowledgeError):
    """The reranking service refused the request, or its answer is not one score per text."""


class RerankUnavailable(RerankError, TransientError):
    """The reranking service kept failing (429/5xx/timeouts) after all retries."""


class FileSkipped(KnowledgeError):
    """One file could not be fetched or read; the run (or request) reports it and goes on."""
