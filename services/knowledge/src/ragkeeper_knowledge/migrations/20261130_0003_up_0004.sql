-- 0004: row-level security on every table (docs/architecture.md, invariant 7; docs/deploy.md,
-- "Exposing the database through a Data API").
--
-- A role that is neither the owner nor one the services log in as reads no row and writes none,
-- even when it holds table privileges: Supabase's anon and authenticated, PostgREST's web role,
-- or a reporting role a DBA grants SELECT ON ALL TABLES.
--
-- How the services keep exactly their access, plans included:
--   * RLS is enabled, not forced: the migrator owns every table and bypasses it (migrations, the
--     local stack's one login, the SECURITY DEFINER functions of 0003, which run as the migrator).
--   * The agent's and the ingestion job's logins have BYPASSRLS (roles.py provisions them so;
--     docs/deploy.md for a DBA). A role subject to RLS would get no column statistics for
--     operators that are not leakproof (jsonb's @>), which moves a metadata-filtered search off
--     the HNSW index, and could not COPY into these tables. Bypassing, they run as before.
--     Their table privileges (ragkeeper_admin.duty_grants) stay the gate of what each may do.
--   * The SQL tool's reader stays subject to RLS: model-written SQL gets two policies, the rows
--     of document_rows and, of document_metadata, the tabular files' rows and the columns the
--     tabular_datasets view shows.
-- No policy names any other role.
--
-- The view tabular_datasets ran with its owner's rights, so anyone granted SELECT on it would
-- have read document_metadata past RLS. It now runs with the caller's (security_invoker).

ALTER TABLE public.embedding_model ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.rag_pipeline_state ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.document_metadata ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.documents ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.document_rows ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.conversations ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.messages ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.requests ENABLE ROW LEVEL SECURITY;
ALTER TABLE ragkeeper_admin.duty_grants ENABLE ROW LEVEL SECURITY;
ALTER TABLE ragkeeper_migrations.migrations ENABLE ROW LEVEL SECURITY;

ALTER VIEW public.tabular_datasets SET (security_invoker = true);

INSERT INTO ragkeeper_admin.duty_grants (duty, privileges, on_object) VALUES
    ('sqlreader', 'SELECT (id, pipeline_id, title, url, mime_type, schema, updated_at)',
     'TABLE public.document_metadata');

-- The reader exists: 0003 stops without it.
DO $$
DECLARE
    r text := ragkeeper_admin.role_name('sqlreader');
BEGIN
    EXECUTE format('CREATE POLICY sqlreader_rows ON public.document_rows '
                   'FOR SELECT TO %I USING (true)', r);
    EXECUTE format('CREATE POLICY sqlreader_datasets ON public.document_metadata '
                   'FOR SELECT TO %I USING (schema IS NOT NULL)', r);
END
$$;

SELECT ragkeeper_admin.apply_grants();
