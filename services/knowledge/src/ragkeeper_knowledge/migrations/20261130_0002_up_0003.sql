-- 0003: database roles by duty (docs/deploy.md, "Database roles"; docs/architecture.md, invariant 7).
--
-- The migrating role (the migrator) owns every object. Three NOLOGIN group roles, named per
-- database by ragkeeper_admin.role_name() because role names are cluster-wide, get privileges
-- by duty; login roles are their members:
--   <db>_agent      reads the documents, writes conversations, messages and requests, calls the
--                   SQL tool's function; no DDL.
--   <db>_ingest     writes the documents and its own state; the first-sync DDL (vector column
--                   type, HNSW index) only through the SECURITY DEFINER functions below; no access
--                   to conversations, messages or requests.
--   <db>_sqlreader  owns ragkeeper_sql.run_readonly_query; reads document_rows and
--                   tabular_datasets only. Replaces the cluster-wide ragkeeper_sql_reader.
-- The roles are created when the migrator may (CREATEROLE); otherwise the DBA creates them.

CREATE SCHEMA ragkeeper_admin;
REVOKE ALL ON SCHEMA ragkeeper_admin FROM PUBLIC;
-- No role but the owner creates objects in public (already the default from Postgres 15 on).
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

-- '<db>_<duty>', or, when that exceeds 63 bytes, the database name cut short plus 8 hex digits
-- of its md5, so two databases of one cluster never share a role.
CREATE FUNCTION ragkeeper_admin.role_name(duty text)
RETURNS text
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    db text := current_database();
    room integer := 63 - 1 - octet_length(duty);
BEGIN
    IF octet_length(db) <= room THEN
        RETURN db || '_' || duty;
    END IF;
    room := room - 9;
    WHILE octet_length(db) > room LOOP
        db := left(db, -1);
    END LOOP;
    RETURN db || '_' || left(md5(current_database()), 8) || '_' || duty;
END
$fn$;
GRANT USAGE ON SCHEMA ragkeeper_admin TO PUBLIC;
GRANT EXECUTE ON FUNCTION ragkeeper_admin.role_name(text) TO PUBLIC;

DO $$
DECLARE
    duty text;
    r text;
    may boolean := (SELECT rolcreaterole OR rolsuper FROM pg_roles WHERE rolname = current_user);
BEGIN
    FOREACH duty IN ARRAY ARRAY['agent', 'ingest', 'sqlreader'] LOOP
        r := ragkeeper_admin.role_name(duty);
        IF EXISTS (SELECT FROM pg_roles WHERE rolname = r) THEN
            CONTINUE;
        ELSIF may THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE', r);
        ELSE
            RAISE NOTICE 'role % does not exist and % may not create roles: the DBA creates it '
                         '(docs/deploy.md, "Database roles")', r, current_user;
        END IF;
    END LOOP;
    r := ragkeeper_admin.role_name('sqlreader');
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r) THEN
        RAISE EXCEPTION 'role % is missing: the SQL tool''s function must be owned by it', r
            USING HINT = 'CREATE ROLE ' || quote_ident(r) || ' NOLOGIN; GRANT '
                         || quote_ident(r) || ' TO ' || quote_ident(current_user) || ';';
    END IF;
    -- The migrator must be able to SET ROLE to it to hand the function over.
    IF NOT pg_has_role(current_user, r, 'SET') THEN
        EXECUTE format('GRANT %I TO %I', r, current_user);
    END IF;
END
$$;

-- Every privilege a duty holds, one row per GRANT. apply_grants() grants them to whichever duty
-- roles exist; `python -m ragkeeper_knowledge.migrate` runs it after every migration, so roles
-- a DBA creates later get them too. A migration that adds an object adds its rows here.
CREATE TABLE ragkeeper_admin.duty_grants (
    duty        text NOT NULL CHECK (duty IN ('agent', 'ingest', 'sqlreader')),
    privileges  text NOT NULL,
    on_object   text NOT NULL,
    PRIMARY KEY (duty, on_object)
);
REVOKE ALL ON ragkeeper_admin.duty_grants FROM PUBLIC;

CREATE FUNCTION ragkeeper_admin.apply_grants()
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    g record;
    r text;
    granted integer := 0;
BEGIN
    FOR g IN SELECT * FROM ragkeeper_admin.duty_grants ORDER BY duty, on_object LOOP
        r := ragkeeper_admin.role_name(g.duty);
        IF EXISTS (SELECT FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('GRANT %s ON %s TO %I', g.privileges, g.on_object, r);
            granted := granted + 1;
        END IF;
    END LOOP;
    RETURN granted;
END
$fn$;
REVOKE ALL ON FUNCTION ragkeeper_admin.apply_grants() FROM PUBLIC;

-- The first-sync DDL of the ingestion job, with the migrator's rights and nothing else: each
-- function runs one fixed statement whose only variable is the dimension recorded in
-- embedding_model (which the ingestion role may insert once but never update).
CREATE FUNCTION ragkeeper_admin.apply_embedding_dimension()
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $fn$
DECLARE
    d integer := (SELECT dimension FROM public.embedding_model);
BEGIN
    IF d IS NULL THEN
        RAISE EXCEPTION 'no embedding model recorded' USING ERRCODE = 'no_data_found';
    END IF;
    EXECUTE format('ALTER TABLE public.documents ALTER COLUMN embedding TYPE public.vector(%s)', d);
END
$fn$;

-- True when this call built the HNSW index. pgvector indexes `vector` up to 2,000 dimensions;
-- wider models are indexed as half-precision (store.py, MAX_VECTOR_INDEX_DIM).
CREATE FUNCTION ragkeeper_admin.create_vector_index()
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $fn$
DECLARE
    d integer := (SELECT dimension FROM public.embedding_model);
BEGIN
    IF d IS NULL OR to_regclass('public.documents_embedding_hnsw') IS NOT NULL THEN
        RETURN false;
    END IF;
    IF d <= 2000 THEN
        CREATE INDEX documents_embedding_hnsw ON public.documents
            USING hnsw (embedding public.vector_cosine_ops);
    ELSE
        EXECUTE format('CREATE INDEX documents_embedding_hnsw ON public.documents USING hnsw '
                       '((embedding::public.halfvec(%s)) public.halfvec_cosine_ops)', d);
    END IF;
    RETURN true;
END
$fn$;
REVOKE ALL ON FUNCTION ragkeeper_admin.apply_embedding_dimension() FROM PUBLIC;
REVOKE ALL ON FUNCTION ragkeeper_admin.create_vector_index() FROM PUBLIC;

-- The SQL tool's function, now with a byte cap and pg_catalog first on its search_path. It adds
-- up the JSON text of each row (+2 for the separator) and stops with program_limit_exceeded once
-- past max_bytes, so the caller never receives more than that.
CREATE FUNCTION ragkeeper_sql.run_readonly_query(query text, max_rows integer, max_bytes integer)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $fn$
DECLARE
    cap integer := greatest(2, least(max_bytes, 16777216));
    used bigint := 2;
    item jsonb;
    items jsonb[] := '{}';
BEGIN
    IF current_setting('transaction_read_only') <> 'on' THEN
        RAISE EXCEPTION 'run_readonly_query must be called in a read-only transaction'
            USING ERRCODE = 'read_only_sql_transaction';
    END IF;
    FOR item IN EXECUTE format(
        'SELECT to_jsonb(q) FROM (SELECT * FROM (%s) AS sub LIMIT %s) AS q',
        query, greatest(1, least(max_rows, 1000)))
    LOOP
        used := used + octet_length(item::text) + 2;
        IF used > cap THEN
            RAISE EXCEPTION 'result too large: more than % bytes', cap
                USING ERRCODE = 'program_limit_exceeded';
        END IF;
        items := items || item;
    END LOOP;
    RETURN to_jsonb(items);
END
$fn$;

-- Hand it to the per-database reader; CREATE on the schema only for the ownership change.
DO $$
DECLARE
    r text := ragkeeper_admin.role_name('sqlreader');
BEGIN
    EXECUTE format('GRANT CREATE ON SCHEMA ragkeeper_sql TO %I', r);
    EXECUTE format('ALTER FUNCTION ragkeeper_sql.run_readonly_query(text, integer, integer) '
                   'OWNER TO %I', r);
    EXECUTE format('REVOKE CREATE ON SCHEMA ragkeeper_sql FROM %I', r);
    EXECUTE 'REVOKE ALL ON FUNCTION ragkeeper_sql.run_readonly_query(text, integer, integer) '
            'FROM PUBLIC';
    -- The migrating role keeps calling it where one login does everything (local stack, tests).
    EXECUTE format('GRANT EXECUTE ON FUNCTION ragkeeper_sql.run_readonly_query(text, integer, integer) '
                   'TO %I', current_user);
END
$$;

-- The cluster-wide reader of 0002 loses its function and its grants in this database.
DROP FUNCTION ragkeeper_sql.run_readonly_query(text, integer);
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'ragkeeper_sql_reader') THEN
        REVOKE ALL ON document_rows, tabular_datasets FROM ragkeeper_sql_reader;
        REVOKE ALL ON SCHEMA ragkeeper_sql FROM ragkeeper_sql_reader;
        REVOKE ALL ON SCHEMA public FROM ragkeeper_sql_reader;
    END IF;
END
$$;

INSERT INTO ragkeeper_admin.duty_grants (duty, privileges, on_object) VALUES
    -- agent: read the knowledge store, keep conversations and the rate limit, run the SQL tool.
    ('agent', 'USAGE', 'SCHEMA public'),
    ('agent', 'USAGE', 'SCHEMA ragkeeper_migrations'),
    ('agent', 'SELECT', 'TABLE ragkeeper_migrations.migrations'),
    ('agent', 'SELECT', 'TABLE public.embedding_model'),
    ('agent', 'SELECT', 'TABLE public.document_metadata'),
    ('agent', 'SELECT', 'TABLE public.documents'),
    ('agent', 'SELECT', 'TABLE public.document_rows'),
    ('agent', 'SELECT', 'TABLE public.tabular_datasets'),
    ('agent', 'SELECT, INSERT, UPDATE', 'TABLE public.conversations'),
    ('agent', 'SELECT, INSERT', 'TABLE public.messages'),
    ('agent', 'SELECT, INSERT, DELETE', 'TABLE public.requests'),
    ('agent', 'USAGE', 'SCHEMA ragkeeper_sql'),
    ('agent', 'EXECUTE', 'FUNCTION ragkeeper_sql.run_readonly_query(text, integer, integer)'),
    -- ingest: the document tables and its own state; the first-sync DDL through the functions.
    ('ingest', 'USAGE', 'SCHEMA public'),
    ('ingest', 'USAGE', 'SCHEMA ragkeeper_migrations'),
    ('ingest', 'SELECT', 'TABLE ragkeeper_migrations.migrations'),
    ('ingest', 'SELECT, INSERT', 'TABLE public.embedding_model'),
    ('ingest', 'SELECT, INSERT, UPDATE, DELETE', 'TABLE public.rag_pipeline_state'),
    ('ingest', 'SELECT, INSERT, UPDATE, DELETE', 'TABLE public.document_metadata'),
    ('ingest', 'SELECT, INSERT, UPDATE, DELETE', 'TABLE public.documents'),
    ('ingest', 'SELECT, INSERT, UPDATE, DELETE', 'TABLE public.document_rows'),
    ('ingest', 'EXECUTE', 'FUNCTION ragkeeper_admin.apply_embedding_dimension()'),
    ('ingest', 'EXECUTE', 'FUNCTION ragkeeper_admin.create_vector_index()'),
    -- sqlreader: what a model's query may read, nothing else.
    ('sqlreader', 'USAGE', 'SCHEMA public'),
    ('sqlreader', 'USAGE', 'SCHEMA ragkeeper_sql'),
    ('sqlreader', 'SELECT', 'TABLE public.document_rows'),
    ('sqlreader', 'SELECT', 'TABLE public.tabular_datasets');

SELECT ragkeeper_admin.apply_grants();
