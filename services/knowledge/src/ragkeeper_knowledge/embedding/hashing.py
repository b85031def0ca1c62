"""A deterministic, model-free embedder for fast unit tests.

Feature hashing ("the hashing trick"): every lower-cased word token, and every
character trigram inside a word, is hashed with BLAKE2b to a coordinate and a
sign; the counts are L2-normalised. Texts that share words therefore land close
together, which is enough for tests of storage, search plumbing and chunk reuse
without loading a real model. It captures no meaning: never use it in
production (the factory only builds it when asked for ``hashing`` explicitly).

BLAKE2b rather than ``hash()`` so vectors are identical across processes and
Python versions (``PYTHONHASHSEED`` randomises ``hash`` of ``str``).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterator, Sequence

from ragkeeper_knowledge.errors import ConfigurationError

__all__ = ["HashingEmbedder"]

_WORD = re.compile(r"\w+", re.UNICODE)
_EMPTY_FEATURE = "\x00empty"
_WORD_WEIGHT = 1.0
_TRIGRAM_WEIGHT = 0.5


def _features(text: str) -> Iterator[tuple[str, float]]:
    """Yield (feature, weight): words, then the character trigrams of each word."""
    words = _WORD.findall(text.lower())
    if not words:
        yield _EMPTY_FEATURE, 1.0
        return
    for word in words:
        yield "w:" + word, _WORD_WEIGHT
        padded = f"<{word}>"
        for start in range(len(padded) - 2):
            yield "c:" + padded[start : start + 3], _TRIGRAM_WEIGHT


class HashingEmbedder:
    """Feature-hashing embedder (``model_name`` ``hashing-v1``); for tests only."""

    def __init__(self, dimension: int = 384) -> None:
        if dimension < 8:
            raise ConfigurationError(f"hashing embedder dimension must be >= 8, got {dimension}")
        self._dimension = dimension

    @property
    def model_name(self) -> str:
        return "hashing-v1"

    @property
    def dimension(self) -> int:
        return self._dimension

    def vector_for(self, text: str) -> list[float]:
        """The vector of one text, without an event loop (handy in fixtures)."""
        vector = [0.0] * self._dimension
        for feature, weight in _features(text):
            digest = hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest()
            bucket = int.from_bytes(digest, "little")
            sign = 1.0 if bucket & 1 else -1.0
            vector[(bucket >> 1) % self._dimension] += sign * weight
        norm = math.sqrt(sum(v * v for v in vector))
        if norm == 0.0:
            # Collisions cancelled every feature out; any fixed unit vector keeps
            # cosine distance defined (pgvector returns NaN for zero vectors).
            vector[0] = 1.0
            return vector
        return [v / norm for v in vector]

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [self.vector_for(text) for text in texts]

    async def embed_query(self, text: str) -> list[float]:
        return self.vector_for(text)

    async def aclose(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"HashingEmbedder(dimension={self._dimension})"
