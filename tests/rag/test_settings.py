"""The ingestion job's one settings object: flags > env > config file > defaults, embedding included.

The embedding settings are the nested ``RagSettings.embedding`` (the knowledge store's
``EmbeddingConfig``): the ``EMBEDDING_*`` variables, or the config file's ``[embedding]``
table keyed by field name, merged key by key with the variables winning.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragkeeper_knowledge import KnowledgeStore, create_pool
from ragkeeper_knowledge.embedding import EMBEDDING_VARIABLES, EmbeddingConfig
from ragkeeper_rag.cli import parse_args
from ragkeeper_rag.settings import RagSettings

from .test_cli import job_env, run_job

TOML = """\
interval = 10
chunk_size = 900

[embedding]
provider = "openai"
model = "text-embedding-3-large"
dimension = 256
"""


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in (*EMBEDDING_VARIABLES.values(), "CHECK_INTERVAL", "RAG_CHUNK_SIZE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.delenv("RAG_CONFIG_FILE", raising=False)


def settings(argv: list[str] | None = None) -> RagSettings:
    """What ``main`` builds: the flags as keyword arguments over env and the file."""
    return RagSettings(**parse_args(argv or []))


@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_config_file_gives_the_embedding_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str
) -> None:
    path = tmp_path / f"rag{suffix}"
    if suffix == ".toml":
        path.write_text(TOML)
    else:
        path.write_text(
            json.dumps(
                {
                    "interval": 10,
                    "chunk_size": 900,
                    "embedding": {
                        "provider": "openai",
                        "model": "text-embedding-3-large",
                        "dimension": 256,
                    },
                }
            )
        )
    monkeypatch.setenv("RAG_CONFIG_FILE", str(path))
    loaded = settings()
    assert (loaded.interval, loaded.chunk_size) == (10, 900)
    assert loaded.embedding == EmbeddingConfig(
        provider="openai", model="text-embedding-3-large", dimension=256
    )


def test_env_overrides_the_file_key_by_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "rag.toml").write_text(TOML)
    monkeypatch.setenv("RAG_CONFIG_FILE", str(tmp_path / "rag.toml"))
    monkeypatch.setenv("EMBEDDING_MODEL_CHOICE", "text-embedding-3-small")
    monkeypatch.setenv("EMBEDDING_DIMENSION", "")  # empty counts as unset: the file's value stays
    embedding = settings().embedding
    assert (embedding.provider, embedding.model, embedding.dimension) == (
        "openai",
        "text-embedding-3-small",
        256,
    )


def test_precedence_flags_env_file_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # defaults
    assert settings().interval == 60.0
    assert settings().embedding == EmbeddingConfig()
    # config file
    (tmp_path / "rag.toml").write_text(TOML)
    monkeypatch.setenv("RAG_CONFIG_FILE", str(tmp_path / "rag.toml"))
    assert settings().interval == 10
    assert settings().embedding.model == "text-embedding-3-large"
    # env over the file
    monkeypatch.setenv("CHECK_INTERVAL", "20")
    monkeypatch.setenv("EMBEDDING_MODEL_CHOICE", "text-embedding-3-small")
    assert settings().interval == 20
    assert settings().embedding.model == "text-embedding-3-small"
    # flags over env (the embedding settings have no flags; keyword arguments win the same way)
    assert settings(["--interval", "30"]).interval == 30
    explicit = RagSettings(embedding=EmbeddingConfig(provider="hashing"))
    assert (explicit.embedding.provider, explicit.embedding.model) == ("hashing", None)


def test_unknown_embedding_key_in_the_file_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "rag.toml").write_text('[embedding]\nmodel_choice = "x"\n')
    monkeypatch.setenv("RAG_CONFIG_FILE", str(tmp_path / "rag.toml"))
    with pytest.raises(ValueError, match=r"embedding\.model_choice"):
        settings()


async def test_job_builds_its_embedder_from_the_file_and_env(
    database_url: str, tmp_path: Path
) -> None:
    """The real job: the file's [embedding] table picks the dimension, env the provider."""
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.md").write_text("# X\n\ntext")
    (tmp_path / "rag.toml").write_text('[embedding]\nprovider = "openai"\ndimension = 24\n')
    env = job_env(
        database_url,
        tmp_path,
        RAG_CONFIG_FILE=str(tmp_path / "rag.toml"),
        RAG_PIPELINE_ID="ns/file-embedding",
        RAG_WATCH_DIRECTORY=str(tmp_path / "d"),
    )
    assert env["EMBEDDING_PROVIDER"] == "hashing"  # overrides the file's "openai"
    code, stats, stderr = run_job(env)
    assert code == 0, stderr
    assert stats["files_added"] == 1
    pool = await create_pool(database_url, max_size=1)
    try:
        assert await KnowledgeStore(pool).embedding_model() == ("hashing-v1", 24)
    finally:
        await pool.close()

    env["EMBEDDING_DIMENSION"] = "many"
    code, stats, _ = run_job(env)
    assert code == 2
    assert stats["error"].startswith("invalid setting EMBEDDING_DIMENSION (embedding.dimension):")
