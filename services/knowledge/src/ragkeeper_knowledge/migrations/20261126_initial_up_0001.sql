-- 0001: the knowledge store. The table names documents, document_metadata, document_rows and
-- rag_pipeline_state are kept compatible with existing clients of the earlier docker-compose
-- deployment's database; the columns add per-pipeline ownership, content hashes, timestamptz,
-- cascade deletes and full-text search.
CREATE EXTENSION IF NOT EXISTS vector;

-- docs/architecture.md, invariant 5 (one embedding space): the embedding model and dimension
-- are recorded once (a single row).
CREATE TABLE embedding_model (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    model_name  text        NOT NULL,
    dimension   integer     NOT NULL CHECK (dimension > 0),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- One row per source pipeline: its cursor advances only after the changes it covers commit.
CREATE TABLE rag_pipeline_state (
    pipeline_id        text PRIMARY KEY,
    pipeline_type      text        NOT NULL,
    cursor             jsonb       NOT NULL DEFAULT '{}'::jsonb,
    last_check_time    timestamptz,
    last_success_time  timestamptz,
    last_stats         jsonb,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);

-- One row per source file. id = '<pipeline_id>:<source_id>' so two pipelines can never collide.
CREATE TABLE document_metadata (
    id            text PRIMARY KEY,
    pipeline_id   text        NOT NULL,
    source_id     text        NOT NULL,
    title         text        NOT NULL,
    url           text,
    path          text,
    mime_type     text,
    version       text        NOT NULL,
    content_hash  text        NOT NULL,
    schema        jsonb,
    metadata      jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT document_metadata_pipeline_source UNIQUE (pipeline_id, source_id),
    CONSTRAINT document_metadata_id_owned CHECK (id = pipeline_id || ':' || source_id)
);
CREATE INDEX document_metadata_content_hash ON document_metadata (content_hash);

-- Chunks. The vector column gets its dimension when the first embedding model is registered,
-- because the model is chosen at deploy time; its HNSW index is built after the first load.
CREATE TABLE documents (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    document_id   text        NOT NULL REFERENCES document_metadata (id) ON DELETE CASCADE,
    pipeline_id   text        NOT NULL,
    chunk_index   integer     NOT NULL,
    content       text        NOT NULL,
    content_hash  text        NOT NULL,
    metadata      jsonb       NOT NULL DEFAULT '{}'::jsonb,
    embedding     vector,
    fts           tsvector GENERATED ALWAYS AS (
                      setweight(to_tsvector('english', coalesce(metadata ->> 'title', '')), 'A')
                      || setweight(to_tsvector('english', content), 'B')
                      || setweight(to_tsvector('simple', content), 'C')
                  ) STORED,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT documents_document_chunk UNIQUE (document_id, chunk_index)
);
CREATE INDEX documents_content_hash ON documents (content_hash);
CREATE INDEX documents_pipeline ON documents (pipeline_id);
CREATE INDEX documents_fts ON documents USING gin (fts);
CREATE INDEX documents_metadata ON documents USING gin (metadata jsonb_path_ops);

-- Rows of tabular files (CSV, XLSX, Google Sheets); the column schema is in document_metadata.schema.
CREATE TABLE document_rows (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dataset_id  text    NOT NULL REFERENCES document_metadata (id) ON DELETE CASCADE,
    sheet       text    NOT NULL DEFAULT '',
    row_number  integer NOT NULL,
    row_data    jsonb   NOT NULL
);
CREATE INDEX document_rows_dataset ON document_rows (dataset_id, sheet, row_number);
