-- 0004: row-level security on every table (docs/architecture.md, invariant 7; docs/deploy.md,
-- "Exposing the database through a Data API").
--
-- A role that is neither the owner nor a duty role reads no row and writes none, even when it
-- holds table privileges: Supabase's anon and authenticated, PostgREST's web role, or a reporting
-- role a DBA grants SELECT ON ALL TABLES. Only they lose anything.
--
-- How the services keep exactly their access: RLS is enabled but not forced, so the migrator,
-- which owns every table, bypasses it (migrations, the local stack's one login, and the SECURITY
-- DEFINER functions apply_embedding_dimension() and create_vector_index(), which run as the
-- migrator). Each duty role gets one permissive policy per table it holds a privilege on, named
-- duty_<duty>, FOR ALL, TO that role only, USING and WITH CHECK its row filter, which is `true`
-- except for the SQL tool's reader below. The policy only opens rows; the table privileges in
-- ragkeeper_admin.duty_grants stay the gate for what a duty may do (the agent still may not
-- write documents, the ingestion role still may not read conversations). A `true` policy adds
-- no condition to a plan, but a role subject to RLS gets no column statistics for operators that
-- are not leakproof (jsonb's @>), which moves the agent's metadata-filtered vector search off the
-- HNSW index (docs/architecture.md, invariant 6). Postgres refuses COPY into these tables to the
-- ingestion role, so store.py copies into a temporary table and moves the rows with one INSERT.
--
-- Why policies and not BYPASSRLS: BYPASSRLS is a role attribute, not a privilege. Members do not
-- inherit it, so the services' logins (members of the NOLOGIN duty roles) would not get it from
-- their group; setting it needs a superuser (or a role that has it) from Postgres 16 on, which
-- the chart's migrator is not; and it reaches every table of every database of the cluster, not
-- these tables. Policies name the per-database roles (ragkeeper_admin.role_name()) and nothing else.
--
-- Policies name roles that must exist. Like the grants, they are derived from duty_grants by
-- ragkeeper_admin.apply_grants(), which the migration Job runs after every migration, so duty
-- roles a DBA creates later get their policies at the next run. The rows a policy lets through
-- are duty_grants.row_filter.
--
-- The view tabular_datasets ran with its owner's rights, so anyone granted SELECT on it would
-- have read document_metadata past RLS. It now runs with the caller's (security_invoker), and
-- the SQL tool's reader, which used to read document_metadata only through it, gets the view's
-- columns of document_metadata, on the tabular rows only: what the view shows, nothing more
-- (paths, versions and hashes stay out of its reach).

ALTER TABLE ragkeeper_admin.duty_grants ADD COLUMN row_filter text NOT NULL DEFAULT 'true';
COMMENT ON COLUMN ragkeeper_admin.duty_grants.row_filter IS
    'for a table: the rows the duty''s privileges reach (its policy''s USING and WITH CHECK)';

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

INSERT INTO ragkeeper_admin.duty_grants (duty, privileges, on_object, row_filter) VALUES
    ('sqlreader', 'SELECT (id, pipeline_id, title, url, mime_type, schema, updated_at)',
     'TABLE public.document_metadata', 'schema IS NOT NULL');

-- Grants as before, then each duty role's policy on every table (not view) it holds a privilege
-- on: created when missing, pointed at the role when it names another (a renamed database).
CREATE OR REPLACE FUNCTION ragkeeper_admin.apply_grants()
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    g record;
    r text;
    rel regclass;
    roles oid[];
    pol text;
    granted integer := 0;
BEGIN
    FOR g IN SELECT * FROM ragkeeper_admin.duty_grants ORDER BY duty, on_object LOOP
        r := ragkeeper_admin.role_name(g.duty);
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r) THEN
            CONTINUE;
        END IF;
        EXECUTE format('GRANT %s ON %s TO %I', g.privileges, g.on_object, r);
        granted := granted + 1;
        IF g.on_object NOT LIKE 'TABLE %' THEN
            CONTINUE;
        END IF;
        rel := substr(g.on_object, 7)::regclass;
        IF (SELECT relkind FROM pg_class WHERE oid = rel) NOT IN ('r', 'p') THEN
            CONTINUE;  -- a view: the tables under it have their own policies
        END IF;
        pol := 'duty_' || g.duty;
        roles := (SELECT polroles FROM pg_policy WHERE polrelid = rel AND polname = pol);
        IF roles IS NULL THEN
            EXECUTE format('CREATE POLICY %I ON %s AS PERMISSIVE FOR ALL TO %I USING (%s) '
                           'WITH CHECK (%s)', pol, rel, r, g.row_filter, g.row_filter);
        ELSIF roles <> ARRAY[(SELECT oid FROM pg_roles WHERE rolname = r)] THEN
            EXECUTE format('ALTER POLICY %I ON %s TO %I', pol, rel, r);
        END IF;
    END LOOP;
    RETURN granted;
END
$fn$;
REVOKE ALL ON FUNCTION ragkeeper_admin.apply_grants() FROM PUBLIC;

SELECT ragkeeper_admin.apply_grants();
