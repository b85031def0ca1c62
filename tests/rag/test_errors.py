"""One exception tree: the job's errors are the knowledge store's, and the exit code follows the type.

A catch site names one class (``except ragkeeper_knowledge.errors.ConfigurationError``
catches the job's and the store's), and ``exit_code_for`` never looks at the message.
"""

from __future__ import annotations

import pytest

from ragkeeper_knowledge import errors as kerrors
from ragkeeper_rag import errors

CASES = [
    (errors.ConfigurationError, kerrors.ConfigurationError, errors.EXIT_CONFIGURATION),
    (errors.CredentialsError, kerrors.CredentialsError, errors.EXIT_CREDENTIALS),
    (errors.TransientError, kerrors.TransientError, errors.EXIT_RETRYABLE),
    (errors.Interrupted, kerrors.TransientError, errors.EXIT_RETRYABLE),
]


@pytest.mark.parametrize(("rag_class", "knowledge_class", "code"), CASES)
def test_each_rag_error_is_the_knowledge_class_and_maps_to_its_exit_code(
    rag_class: type[Exception], knowledge_class: type[Exception], code: int
) -> None:
    error = rag_class("boom")
    assert isinstance(error, knowledge_class)
    assert isinstance(error, errors.RagError)
    assert errors.exit_code_for(error) == code


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (kerrors.ConfigurationError("x"), errors.EXIT_CONFIGURATION),
        (kerrors.EmbeddingModelMismatch("x"), errors.EXIT_CONFIGURATION),
        (kerrors.CredentialsError("x"), errors.EXIT_CREDENTIALS),
        (kerrors.EmbeddingCredentialsError("x"), errors.EXIT_CREDENTIALS),
        (kerrors.TransientError("x"), errors.EXIT_RETRYABLE),
        (kerrors.EmbeddingUnavailable("x"), errors.EXIT_RETRYABLE),
        (errors.FileSkipped("x"), errors.EXIT_RETRYABLE),
        (RuntimeError("configuration credentials"), errors.EXIT_RETRYABLE),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else str(v),
)
def test_knowledge_and_unexpected_errors_map_by_type_only(error: Exception, code: int) -> None:
    assert errors.exit_code_for(error) == code


def test_one_except_clause_catches_the_job_and_the_store_variants() -> None:
    for raised in (errors.ConfigurationError("job"), kerrors.EmbeddingModelMismatch("store")):
        with pytest.raises(kerrors.ConfigurationError):
            raise raised
    # one file's failure: the job's and the extractors' alike, never a configuration error
    assert issubclass(errors.FileSkipped, kerrors.FileSkipped)
    assert not issubclass(errors.FileSkipped, kerrors.ConfigurationError | kerrors.TransientError)
