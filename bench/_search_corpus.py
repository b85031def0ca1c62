"""The synthetic corpus of ``bench/search.py``: text, vectors, queries, and the bulk loader.

Everything is a function of the row number and a fixed seed, so the rows of a database grown
from 20k to 100k chunks are the 20k rows of the smaller one plus 80k more, run after run.

* **Text**: 110–170 words a chunk (about 600–1,000 characters), drawn from a 50,000-word
  vocabulary with a Zipf distribution (exponent 1.07); the 32 most frequent words are real
  English stop words, the rest pseudo-words made of syllables. About one chunk in six also
  carries one or two of 5,000 *rare* terms (letters no ordinary word uses), which queries ask for.
* **Vectors**: 384 dimensions, not uniform: 2,000 random unit centroids (topics); a document's
  ten chunks share a topic, and a chunk is its centroid plus Gaussian noise, mostly along 32
  shared directions (real embeddings vary along few), normalised: cosine to its centroid about
  0.85, so HNSW has clusters to find and near-ties inside them to rank, as with real embeddings.
  A query vector is made the same way from the topic of a stored document.
* **Rows**: documents of 10 chunks in 4 pipelines, chunk metadata like the ingestion job's
  (title, source, position, mime_type).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

DIM = 384
SEED = 20261130
VOCABULARY = 50_000
ZIPF_EXPONENT = 1.07
RARE_TERMS = 5_000
CENTROIDS = 2_000
LATENT = 32  # the noise's main subspace: embeddings vary along few directions, not all 384
CHUNKS_PER_DOCUMENT = 10
PIPELINES = 4
BATCH = 5_000  # rows per generated batch and per COPY; sizes are multiples of it
STOPWORDS = [
    "the",
    "of",
    "and",
    "to",
    "a",
    "in",
    "is",
    "that",
    "for",
    "it",
    "as",
    "with",
    "on",
    "be",
    "by",
    "this",
    "are",
    "or",
    "from",
    "at",
    "an",
    "not",
    "which",
    "can",
    "you",
    "if",
    "your",
    "how",
    "do",
    "what",
    "when",
]
QUESTION_HEADS = ["how do i", "what is the", "when should we", "where can i find", "why does the"]
MIME_TYPES = ["text/markdown", "application/pdf", "text/html", "text/plain"]


def _pseudo_words(rng: np.random.Generator, count: int, consonants: str) -> list[str]:
    syllables = [c + v for c in consonants for v in "aeiou"]
    words: dict[str, None] = {}
    while len(words) < count:
        n = int(rng.integers(2, 5))
        words["".join(syllables[i] for i in rng.integers(0, len(syllables), n))] = None
    return list(words)


class Vocabulary:
    """Words, their Zipf distribution, rare terms and topic centroids (fixed by SEED)."""

    def __init__(self) -> None:
        rng = np.random.default_rng(SEED)
        plain = _pseudo_words(rng, VOCABULARY - len(STOPWORDS), "bdfgklmnprstvw")
        self.words = np.array(STOPWORDS + plain, dtype=object)
        weights = 1.0 / np.arange(1, VOCABULARY + 1) ** ZIPF_EXPONENT
        self.cdf = np.cumsum(weights / weights.sum())
        self.rare = np.array(_pseudo_words(rng, RARE_TERMS, "qxzj"), dtype=object)
        centroids = rng.standard_normal((CENTROIDS, DIM)).astype(np.float32)
        self.centroids = centroids / np.linalg.norm(centroids, axis=1, keepdims=True)
        self.basis = (rng.standard_normal((LATENT, DIM)) / np.sqrt(DIM)).astype(np.float32)

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` words by Zipf frequency."""
        index = np.searchsorted(self.cdf, rng.random(n))
        return self.words[np.minimum(index, VOCABULARY - 1)]

    def near(self, rng: np.random.Generator, topics: np.ndarray) -> np.ndarray:
        """One unit vector per topic: its centroid plus structured noise (mostly in a shared
        32-dimension subspace, a little in all 384), normalised."""
        n = len(topics)
        latent = rng.standard_normal((n, LATENT)).astype(np.float32) / np.sqrt(LATENT)
        spread = rng.standard_normal((n, DIM)).astype(np.float32) / np.sqrt(DIM)
        v: np.ndarray = self.centroids[topics] + 0.6 * (latent @ self.basis) + 0.2 * spread
        unit: np.ndarray = v / np.linalg.norm(v, axis=1, keepdims=True)
        return unit


_VOCAB: Vocabulary | None = None


def vocabulary() -> Vocabulary:
    global _VOCAB  # noqa: PLW0603 - one per process (the loader's worker builds its own)
    if _VOCAB is None:
        _VOCAB = Vocabulary()
    return _VOCAB


def _texts(rng: np.random.Generator, vocab: Vocabulary, n: int) -> list[str]:
    lengths = rng.integers(110, 171, n)
    tokens = vocab.draw(rng, int(lengths.sum()))
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    texts = []
    for i in range(n):
        words = tokens[bounds[i] : bounds[i + 1]]
        if rng.random() < 0.17:
            spots = rng.integers(0, len(words), int(rng.integers(1, 3)))
            words = words.copy()
            words[spots] = vocab.rare[rng.integers(0, RARE_TERMS, len(spots))]
        texts.append(" ".join(words.tolist()) + ".")
    return texts


def _topics(rng: np.random.Generator) -> np.ndarray:
    """The topic of each document of a batch: the first draw of the batch's generator."""
    return rng.integers(0, CENTROIDS, BATCH // CHUNKS_PER_DOCUMENT)


def make_batch(start: int) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Rows ``start .. start + BATCH``: (document_metadata rows, documents rows)."""
    vocab = vocabulary()
    rng = np.random.default_rng([SEED, start])
    first_doc = start // CHUNKS_PER_DOCUMENT
    docs = BATCH // CHUNKS_PER_DOCUMENT
    topics = _topics(rng)
    vectors = vocab.near(rng, np.repeat(topics, CHUNKS_PER_DOCUMENT))
    texts = _texts(rng, vocab, BATCH)
    metadata_rows, chunk_rows = [], []
    for d in range(docs):
        n = first_doc + d
        pipeline, source = f"bench/p{n % PIPELINES}", f"doc-{n:07d}.md"
        doc_id = f"{pipeline}:{source}"
        title = " ".join(vocab.words[rng.integers(len(STOPWORDS), 5_000, 3)].tolist()).title()
        mime = MIME_TYPES[n % len(MIME_TYPES)]
        metadata_rows.append(
            (doc_id, pipeline, source, title, f"https://docs.example/{n}", source, mime, "1")
        )
        for c in range(CHUNKS_PER_DOCUMENT):
            i = d * CHUNKS_PER_DOCUMENT + c
            meta = {"title": title, "source": source, "position": c, "mime_type": mime}
            digest = hashlib.sha256(texts[i].encode()).hexdigest()
            chunk_rows.append((doc_id, pipeline, c, texts[i], digest, json.dumps(meta), vectors[i]))
    return metadata_rows, chunk_rows


def queries(count: int, seed: int = 7) -> list[tuple[str, np.ndarray]]:
    """Questions of 5–10 words from the corpus' vocabulary (half with a rare term), with a
    query vector near the topic of a stored document, made like a chunk's."""
    vocab = vocabulary()
    # topics of documents in the first 20,000 rows, present at every size
    topics = np.concatenate([_topics(np.random.default_rng([SEED, b])) for b in batches(0, 20_000)])
    rng = np.random.default_rng([SEED, seed])
    out = []
    for i in range(count):
        head = QUESTION_HEADS[i % len(QUESTION_HEADS)]
        n_content = int(rng.integers(2, 7)) if i % 2 else int(rng.integers(2, 6))
        # content words from the middle of the distribution (ranks 33..5,000), as questions use
        content = vocab.words[rng.integers(len(STOPWORDS), 5_000, n_content)].tolist()
        if i % 2:
            content.append(str(vocab.rare[rng.integers(0, RARE_TERMS)]))
        vector = vocab.near(rng, topics[rng.integers(0, len(topics), 1)])[0]
        out.append((f"{head} {' '.join(content)}?", vector))
    return out


def batches(start: int, end: int) -> Iterator[int]:
    return iter(range(start, end, BATCH))


class Stopwatch:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.t0
