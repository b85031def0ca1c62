-- 0007: files attached to chat messages (docs/agent.md, "Files in the chat").
--
-- One row per file a user attached to a message (position: its place among the message's
-- files): its name, type, size and SHA-256, and the
-- text extracted from it (ragkeeper_knowledge.extraction) as sections, one per PDF page or
-- image: [{"page": int|null, "ocr": bool, "text": str}]. The agent gives that text to the
-- model at every turn of the conversation, so a follow-up question can refer to it; an image
-- sent to a vision model as an image part has no sections (its bytes are in the message).
-- The row belongs to its conversation and to the user message it came with: deleting either
-- deletes it (purging a user deletes their conversations). The turn's messages and its
-- attachments are written by one statement (ragkeeper_agent.history), so a failed turn keeps
-- neither.
--
-- Like every table (0004), RLS is enabled with no policy: the agent's login bypasses it, and
-- the SQL tool's reader, which has no privilege on the table, reads nothing either way.

CREATE TABLE public.attachments (
    id          text        PRIMARY KEY,
    session_id  text        NOT NULL REFERENCES public.conversations (session_id) ON DELETE CASCADE,
    message_id  bigint      NOT NULL REFERENCES public.messages (id) ON DELETE CASCADE,
    position    integer     NOT NULL DEFAULT 0 CHECK (position >= 0),
    file_name   text        NOT NULL CHECK (length(file_name) BETWEEN 1 AND 255),
    mime_type   text        NOT NULL,
    size_bytes  bigint      NOT NULL CHECK (size_bytes >= 0),
    sha256      text        NOT NULL,
    sections    jsonb       NOT NULL DEFAULT '[]'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX attachments_session ON public.attachments (session_id, message_id, position);
CREATE INDEX attachments_message ON public.attachments (message_id);
ALTER TABLE public.attachments ENABLE ROW LEVEL SECURITY;

INSERT INTO ragkeeper_admin.duty_grants (duty, privileges, on_object) VALUES
    ('agent', 'SELECT, INSERT', 'TABLE public.attachments');

SELECT ragkeeper_admin.apply_grants();
