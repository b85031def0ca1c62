"""A deterministic, model-free embedder for fast unit tests.

Feature hashing ("the hashing trick"): every lower-cased word token, and every
character trigram inside a word, is hashed with BLAKE2b to a coordinate and a
sign; the counts are L2-normalised. Texts that share words therefore land close
together, which is enough for tests of storage, search plumbing and chunk reuse
without loading a real model. It captures no meaning: never use it in
production (the factory only builds it when asked for ``hashing`` explicitly).

BLAKE2b rather than ``hash()`` so vectors are identical across processes and
Python versions (``PYTHONHASHSEED`` randomises ``hash`` of ``str``). Each word's
coordinates (the word and its trigrams) are hashed once and cached, and a text's
counts are summed by ``numpy.bincount``: the sums are of halves and ones, exact
in floating point, so the vectors are the same as adding feature by feature.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Sequence

import numpy as np

from ragkeeper_knowledge.errors import ConfigurationError

__all__ = ["HashingEmbedder"]

_WORD = re.compile(r"\w+", re.UNICODE)
_EMPTY_FEATURE = "\x00empty"
_WORD_WEIGHT = 1.0
_TRIGRAM_WEIGHT = 0.5
# Distinct words remembered per embedder (a word's slots are a few dozen integers).
_WORD_CACHE_SIZE = 200_000


def _word_features(word: str) -> Iterator[tuple[str, float]]:
    """Yield (feature, weight) of one lower-cased word: the word, then its character trigrams."""
    yield "w:" + word, _WORD_WEIGHT
    padded = f"<{word}>"
    for start in range(len(padded) - 2):
        yield "c:" + padded[start : start + 3], _TRIGRAM_WEIGHT


def _slot(feature: str, dimension: int) -> tuple[int, float]:
    """The coordinate and sign a feature is hashed to."""
    digest = hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest()
    bucket = int.from_bytes(digest, "little")
    return (bucket >> 1) % dimension, 1.0 if bucket & 1 else -1.0


class HashingEmbedder:
    """Feature-hashing embedder (``model_name`` ``hashing-v1``); for tests only."""

    def __init__(self, dimension: int = 384) -> None:
        if dimension < 8:
            raise ConfigurationError(f"hashing embedder dimension must be >= 8, got {dimension}")
        self._dimension = dimension
        self._cache: dict[str, tuple[list[int], list[float]]] = {}

    @property
    def model_name(self) -> str:
        return "hashing-v1"

    @property
    def dimension(self) -> int:
        return self._dimension

    def _word_slots(self, word: str) -> tuple[list[int], list[float]]:
        slots = self._cache.get(word)
        if slots is None:
            indices: list[int] = []
            weights: list[float] = []
            for feature, weight in _word_features(word):
                index, sign = _slot(feature, self._dimension)
                indices.append(index)
                weights.append(sign * weight)
            slots = (indices, weights)
            if len(self._cache) >= _WORD_CACHE_SIZE:
                self._cache.clear()
            self._cache[word] = slots
        return slots

    def vector_for(self, text: str) -> list[float]:
        """The vector of one text, without an event loop (handy in fixtures)."""
        words = _WORD.findall(text.lower())
        if not words:
            index, sign = _slot(_EMPTY_FEATURE, self._dimension)
            vector = np.zeros(self._dimension)
            vector[index] = sign
            return list(vector.tolist())
        indices: list[int] = []
        weights: list[float] = []
        for word in words:
            word_indices, word_weights = self._word_slots(word)
            indices += word_indices
            weights += word_weights
        vector = np.bincount(indices, weights=weights, minlength=self._dimension).astype(float)
        norm = float(np.sqrt(np.dot(vector, vector)))
        if norm == 0.0:
            # Collisions cancelled every feature out; any fixed unit vector keeps
            # cosine distance defined (pgvector returns NaN for zero vectors).
            vector[0] = 1.0
            return list(vector.tolist())
        return list((vector / norm).tolist())

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [self.vector_for(text) for text in texts]

    async def embed_query(self, text: str) -> list[float]:
        return self.vector_for(text)

    async def aclose(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"HashingEmbedder(dimension={self._dimension})"
