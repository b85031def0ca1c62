-- 0006: the agent's long-term memory per user (docs/agent.md, "Memory").
--
-- One row per thing a user asked the agent to remember, or the model chose to keep: its text,
-- its embedding (the store's one embedding model, docs/architecture.md invariant 5), the
-- conversation it was said in and when. Every read and write of the agent names the user
-- (ragkeeper_agent.memory), so memories never cross users. The vector column has no fixed
-- dimension and no index: a user's memories are few, and the search scans only theirs (the
-- user_id index) with an exact cosine distance.
--
-- Like every table (0004), RLS is enabled with no policy: the agent's login bypasses it, and
-- the SQL tool's reader, which has no privilege on the table, reads nothing either way.

CREATE TABLE public.memories (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id     text        NOT NULL,
    content     text        NOT NULL CHECK (length(content) BETWEEN 1 AND 2000),
    embedding   public.vector NOT NULL,
    session_id  text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, content)
);
CREATE INDEX memories_user_recent ON public.memories (user_id, updated_at DESC);
ALTER TABLE public.memories ENABLE ROW LEVEL SECURITY;

INSERT INTO ragkeeper_admin.duty_grants (duty, privileges, on_object) VALUES
    ('agent', 'SELECT, INSERT, UPDATE, DELETE', 'TABLE public.memories');

SELECT ragkeeper_admin.apply_grants();
