"""Nested settings read from prefixed environment variables (``EMBEDDING_*``, ``RERANK_*``).

A service's settings object nests a config model (``embedding: EmbeddingConfig``,
``rerank: RerankConfig``) and fills it from :func:`variables_env` as a settings source ranked
with its other environment variables, so the same precedence holds for the nested keys as for
the rest.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = ["variables_env"]


def variables_env(
    variables: Mapping[str, str], environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The variables of ``variables`` (field -> variable name) that are set, keyed by field.

    Values are stripped and empty ones left out (Helm often renders ``""``), so an unset
    variable never hides a value from a lower-priority source.
    """
    env = os.environ if environ is None else environ
    values: dict[str, str] = {}
    for field, variable in variables.items():
        raw = env.get(variable, "").strip()
        if raw:
            values[field] = raw
    return values
