-- 0008: captions of images from a vision model, cached by content (docs/ocr.md, "Captions").
--
-- With RAG_IMAGE_CAPTIONS on, the ingestion job asks a vision model to describe each PNG, JPEG
-- and WebP file and indexes the answer as a chunk of the image's document. One row per image
-- content (the SHA-256 of its bytes, the content_hash of its document_metadata row) and model:
-- like a chunk's vector, found by hash (docs/architecture.md, invariant 4), a caption is asked
-- for once, and an image whose bytes another file already had, in any pipeline, reuses it. The
-- rows are not tied to documents: deleting or purging a document leaves its caption here, ready
-- for the same bytes, and a caption never leaves this table except with its image's text.
--
-- Like every table (0004), RLS is enabled with no policy: the ingestion job's login bypasses it,
-- and the agent and the SQL tool's reader have no privilege on the table.

CREATE TABLE public.image_captions (
    content_hash text        NOT NULL,
    model        text        NOT NULL,
    caption      text        NOT NULL CHECK (length(caption) BETWEEN 1 AND 20000),
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (content_hash, model)
);
ALTER TABLE public.image_captions ENABLE ROW LEVEL SECURITY;

INSERT INTO ragkeeper_admin.duty_grants (duty, privileges, on_object) VALUES
    ('ingest', 'SELECT, INSERT', 'TABLE public.image_captions');

SELECT ragkeeper_admin.apply_grants();
