"""The one interface every embedder implements.

An embedder turns a batch of texts into vectors of a fixed dimension. Its
``model_name`` and ``dimension`` are recorded in the knowledge store the first
time vectors are written (docs/architecture.md, invariant 5: one embedding
space): a later run with a different model is a configuration error rather than
a silent mix of vector spaces.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into vectors; async so HTTP embedders do not block the loop."""

    @property
    def model_name(self) -> str:
        """Stable identifier of the model, e.g. ``openai:text-embedding-3-small``."""
        ...

    @property
    def dimension(self) -> int:
        """Length of every vector this embedder returns."""
        ...

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Embed documents/chunks; returns one vector per text, in order."""
        ...

    async def embed_query(self, text: str) -> list[float]:
        """Embed a search query (some models prefix queries differently)."""
        ...

    async def aclose(self) -> None:
        """Release HTTP clients or model sessions."""
        ...


@runtime_checkable
class DimensionProbing(Protocol):
    """An embedder whose dimension may only be known after asking the model once."""

    async def probe_dimension(self) -> int:
        """Return the dimension, calling the model once if it is not known yet."""
        ...


async def ensure_dimension(embedder: Embedder) -> int:
    """The embedder's dimension, probing the model first when it has to.

    HTTP embedders without a configured dimension learn it from their first
    response; call this before reading ``embedder.dimension`` when nothing has
    been embedded yet (e.g. to check the store's recorded model at start-up).
    """
    if isinstance(embedder, DimensionProbing):
        return await embedder.probe_dimension()
    return embedder.dimension
