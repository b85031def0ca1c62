"""The bundled offline model: real vectors, real meaning, no network.

These run the real int8 all-MiniLM-L6-v2 on onnxruntime (about a second to
load); the model's quality is checked the way a user would notice it: a
paraphrase must rank above an unrelated sentence.
"""

from __future__ import annotations

import dataclasses
import math
import socket
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from ragkeeper_knowledge.embedding import OFFLINE_MODELS, OfflineEmbedder, offline
from ragkeeper_knowledge.errors import ConfigurationError

TRIPLES = [  # (anchor, paraphrase, unrelated)
    (
        "How do I reset my password?",
        "What are the steps to change a forgotten password?",
        "The quarterly revenue grew by twelve percent.",
    ),
    (
        "The invoice must be paid within 30 days.",
        "Payment of the bill is due in one month.",
        "Our team hiked up the mountain at dawn.",
    ),
    (
        "Employees get 25 days of paid vacation per year.",
        "Staff are entitled to twenty-five days of annual leave.",
        "The server returned HTTP status 503.",
    ),
    (
        "The meeting was moved to Friday afternoon.",
        "We rescheduled the meeting for Friday after lunch.",
        "Photosynthesis converts light into chemical energy.",
    ),
]


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="module")
def embedder() -> OfflineEmbedder:
    return OfflineEmbedder(batch_size=4)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any attempt to open a network connection fail loudly."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


async def test_loads_and_embeds_without_network(no_network: None) -> None:
    fresh = OfflineEmbedder()
    vectors = await fresh.embed(["offline embeddings need no download"])
    await fresh.aclose()
    assert len(vectors[0]) == fresh.dimension == 384
    assert fresh.model_name == "offline:all-MiniLM-L6-v2-onnx-int8"


async def test_vectors_have_the_model_dimension_and_unit_length(embedder: OfflineEmbedder) -> None:
    vectors = await embedder.embed(["short", "a somewhat longer sentence about databases " * 5])
    assert [len(v) for v in vectors] == [384, 384]
    for vector in vectors:
        assert math.isclose(float(np.linalg.norm(vector)), 1.0, rel_tol=1e-5)


@pytest.mark.parametrize(("anchor", "paraphrase", "unrelated"), TRIPLES)
async def test_paraphrase_ranks_above_unrelated(
    embedder: OfflineEmbedder, anchor: str, paraphrase: str, unrelated: str
) -> None:
    query = await embedder.embed_query(anchor)
    close, far = await embedder.embed([paraphrase, unrelated])
    assert cosine(query, close) > cosine(query, far) + 0.2


async def test_retrieval_picks_the_matching_passage_out_of_all(embedder: OfflineEmbedder) -> None:
    passages = [p for _, p, _ in TRIPLES] + [u for _, _, u in TRIPLES]
    matrix = np.array(await embedder.embed(passages))
    for i, (anchor, _, _) in enumerate(TRIPLES):
        scores = matrix @ np.array(await embedder.embed_query(anchor))
        assert int(np.argmax(scores)) == i


async def test_batching_keeps_input_order(embedder: OfflineEmbedder) -> None:
    texts = ["z" * 300, "tiny", "a medium length sentence here", "x" * 50, "b", "last one"]
    together = await embedder.embed(texts)
    alone = [await embedder.embed_query(t) for t in texts]
    for joint, single in zip(together, alone, strict=True):
        assert cosine(joint, single) > 0.999


async def test_inference_runs_off_the_event_loop_thread(
    embedder: OfflineEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[threading.Thread] = []
    original = OfflineEmbedder.embed_sync

    def spy(self: OfflineEmbedder, texts: list[str]) -> Any:
        threads.append(threading.current_thread())
        return original(self, texts)

    monkeypatch.setattr(OfflineEmbedder, "embed_sync", spy)
    await embedder.embed(["in a worker thread"])
    assert threads and threads[0] is not threading.main_thread()


async def test_model_is_loaded_once(monkeypatch: pytest.MonkeyPatch) -> None:
    loads: list[str] = []
    original = offline._LoadedModel

    class CountingModel(original):  # type: ignore[misc, valid-type]
        def __init__(self, spec: offline.OfflineModelSpec, threads: int | None) -> None:
            loads.append(spec.name)
            super().__init__(spec, threads)

    monkeypatch.setattr(offline, "_LoadedModel", CountingModel)
    fresh = OfflineEmbedder()
    await fresh.embed(["one"])
    await fresh.embed(["two"])
    await fresh.embed_query("three")
    assert loads == ["all-MiniLM-L6-v2-onnx-int8"]


async def test_tampered_model_file_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = dataclasses.replace(OFFLINE_MODELS["all-MiniLM-L6-v2"], model_sha256="0" * 64)
    monkeypatch.setitem(OFFLINE_MODELS, "tampered", spec)
    with pytest.raises(ConfigurationError, match="sha256"):
        await OfflineEmbedder("tampered").embed(["x"])


def test_unknown_model_lists_the_bundled_ones() -> None:
    with pytest.raises(ConfigurationError, match="all-MiniLM-L6-v2"):
        OfflineEmbedder("e5-large")


async def test_empty_input_loads_nothing() -> None:
    fresh = OfflineEmbedder()
    assert await fresh.embed([]) == []


def test_default_batch_is_small_and_vectors_do_not_depend_on_it() -> None:
    """Batch 4 (the default, for memory) gives the vectors batch 32 gave."""
    from ragkeeper_knowledge.embedding import EmbeddingConfig, create_embedder

    assert "batch_size=4" in repr(create_embedder(EmbeddingConfig(provider="offline")))
    texts = [" ".join(["the invoice must be approved by finance"] * n) for n in range(1, 40, 3)]
    small = OfflineEmbedder().embed_sync(texts)
    large = OfflineEmbedder(batch_size=32).embed_sync(texts)
    assert np.allclose(small, large, atol=1e-6)


def test_memory_returns_after_full_length_batches() -> None:
    """Activations are freed after each call and do not pile up (docs/performance.md, Memory).

    Before the arena shrinkage and the pinned mmap threshold, batch 32 left ~700 MiB resident
    after the first call of long texts, and more after later calls.
    """
    import psutil  # type: ignore[import-untyped]

    assert offline.pin_mmap_threshold()  # glibc: the threshold is pinned
    fresh = OfflineEmbedder()
    fresh.embed_sync(["warm up"])
    me = psutil.Process()
    long_texts = [
        f"section {i}: " + "the backup job is replicated across offices " * 60 for i in range(24)
    ]
    before = me.memory_info().rss
    for _ in range(3):
        fresh.embed_sync(long_texts)
    after = me.memory_info().rss
    assert after - before < 40 * 1024 * 1024, f"{(after - before) >> 20} MiB kept after the calls"
