"""HashingEmbedder: the deterministic test double used across the suite."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import subprocess
import sys

import pytest

from ragkeeper_knowledge.embedding import Embedder, HashingEmbedder
from ragkeeper_knowledge.errors import ConfigurationError


def dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


async def test_same_text_same_vector_across_instances() -> None:
    first = await HashingEmbedder().embed(["Kubernetes operators reconcile state"])
    second = await HashingEmbedder().embed(["Kubernetes operators reconcile state"])
    assert first == second


def test_vectors_do_not_depend_on_the_hash_seed() -> None:
    code = (
        "import json; from ragkeeper_knowledge.embedding import HashingEmbedder; "
        "print(json.dumps(HashingEmbedder(16).vector_for('seed independent text')))"
    )
    outputs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        result = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        outputs.append(json.loads(result.stdout))
    assert outputs[0] == outputs[1] == HashingEmbedder(16).vector_for("seed independent text")


async def test_vectors_are_unit_length_with_the_configured_dimension() -> None:
    embedder = HashingEmbedder(dimension=64)
    assert isinstance(embedder, Embedder)
    vectors = await embedder.embed(["alpha beta", "", "!!!", "gamma " * 100])
    for vector in vectors:
        assert len(vector) == 64
        assert math.isclose(math.sqrt(dot(vector, vector)), 1.0, rel_tol=1e-9)


async def test_shared_words_score_higher_than_unrelated_text() -> None:
    embedder = HashingEmbedder()
    query = await embedder.embed_query("postgres vector index")
    related, unrelated = await embedder.embed(
        ["the vector index lives in postgres", "bake the cake for forty minutes"]
    )
    assert dot(query, related) > dot(query, unrelated) + 0.3


async def test_order_is_preserved() -> None:
    embedder = HashingEmbedder()
    texts = ["one", "two", "three"]
    assert await embedder.embed(texts) == [await embedder.embed_query(t) for t in texts]


def test_vectors_equal_adding_feature_by_feature() -> None:
    """The cached, bincount-summed vectors are those of the plain definition in the docstring."""

    def reference(text: str, dimension: int) -> list[float]:
        words = re.findall(r"\w+", text.lower())
        features = [("\x00empty", 1.0)] if not words else []
        for word in words:
            padded = f"<{word}>"
            features.append(("w:" + word, 1.0))
            features += [("c:" + padded[i : i + 3], 0.5) for i in range(len(padded) - 2)]
        vector = [0.0] * dimension
        for feature, weight in features:
            digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
            bucket = int.from_bytes(digest, "little")
            vector[(bucket >> 1) % dimension] += weight if bucket & 1 else -weight
        norm = math.sqrt(sum(v * v for v in vector))
        return [v / norm for v in vector]

    texts = ["Kubernetes operators reconcile state", "", "ERR-4711 ERR-4711 disk", "Ünïcode wörd"]
    for dimension in (8, 384):
        embedder = HashingEmbedder(dimension)
        for _ in range(2):  # the second pass is served from the word cache
            assert [embedder.vector_for(t) for t in texts] == [
                reference(t, dimension) for t in texts
            ]


def test_identity_is_stable() -> None:
    assert HashingEmbedder().model_name == "hashing-v1"
    assert HashingEmbedder().dimension == 384


def test_tiny_dimension_is_refused() -> None:
    with pytest.raises(ConfigurationError):
        HashingEmbedder(dimension=4)
