-- 0002: the agent's tables and the restricted reader behind the agent's read-only SQL tool.
-- The names conversations, messages and requests are kept compatible with existing clients of
-- the earlier docker-compose deployment's database; the columns differ.

-- One row per chat session. session_id is opaque; ownership is checked on every read.
CREATE TABLE conversations (
    session_id       text PRIMARY KEY,
    user_id          text        NOT NULL,
    title            text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    last_message_at  timestamptz NOT NULL DEFAULT now(),
    archived         boolean     NOT NULL DEFAULT false,
    metadata         jsonb       NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX conversations_user_recent ON conversations (user_id, last_message_at DESC);

-- One Pydantic AI ModelMessage per row (ModelMessagesTypeAdapter JSON), so a conversation's
-- history replays exactly, tool calls included. role/content are a readable projection.
CREATE TABLE messages (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_id  text        NOT NULL REFERENCES conversations (session_id) ON DELETE CASCADE,
    role        text        NOT NULL CHECK (role IN ('user', 'assistant', 'tool', 'system')),
    content     text        NOT NULL DEFAULT '',
    message     jsonb       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX messages_session ON messages (session_id, id);

-- Per-request log: the sliding-window rate limiter counts a user's rows in the last window,
-- so every replica sees the same count.
CREATE TABLE requests (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id     text        NOT NULL,
    "timestamp" timestamptz NOT NULL DEFAULT clock_timestamp(),
    route       text        NOT NULL DEFAULT '',
    request_id  text
);
CREATE INDEX requests_user_time ON requests (user_id, "timestamp");

-- Tabular datasets the SQL tool may describe: no paths, versions or hashes.
CREATE VIEW tabular_datasets AS
    SELECT id AS dataset_id, pipeline_id, title, url, mime_type, schema, updated_at
    FROM document_metadata
    WHERE schema IS NOT NULL;

-- The SQL tool's reader up to revision 0003, which replaces it with a reader per database.
-- Created when it may be (roles are cluster-wide, so once); only used when the migrating role
-- can SET ROLE to it. Otherwise (a migrator without CREATEROLE, or a reader another database's
-- migrator made) the function below stays with the migrator until 0003 hands it over.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ragkeeper_sql_reader') THEN
        BEGIN
            CREATE ROLE ragkeeper_sql_reader NOLOGIN NOINHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE;
        EXCEPTION WHEN duplicate_object OR unique_violation OR insufficient_privilege THEN
            NULL;  -- created concurrently by another database's migration, or not ours to create
        END;
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'ragkeeper_sql_reader')
       AND NOT pg_has_role(current_user, 'ragkeeper_sql_reader', 'SET') THEN
        BEGIN
            EXECUTE format('GRANT ragkeeper_sql_reader TO %I', current_user);
        EXCEPTION WHEN insufficient_privilege THEN
            NULL;  -- another role's reader: not used here
        END;
    END IF;
END
$$;

CREATE SCHEMA ragkeeper_sql;
REVOKE ALL ON SCHEMA ragkeeper_sql FROM PUBLIC;

-- Runs one SELECT as ragkeeper_sql_reader. SECURITY DEFINER makes the reader the current user
-- for the whole query, and Postgres refuses SET ROLE / set_config('role', ...) and
-- session_authorization inside security-definer functions, so the query cannot switch back.
-- The query is wrapped as a subquery: one statement, no data-modifying CTE (those must be at top
-- level), no COPY/DDL. The caller's transaction must be read-only (checked), and a cursor-based
-- EXECUTE refuses multi-statement strings.
CREATE FUNCTION ragkeeper_sql.run_readonly_query(query text, max_rows integer)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_catalog, pg_temp
AS $fn$
DECLARE
    result jsonb;
BEGIN
    IF current_setting('transaction_read_only') <> 'on' THEN
        RAISE EXCEPTION 'run_readonly_query must be called in a read-only transaction'
            USING ERRCODE = 'read_only_sql_transaction';
    END IF;
    FOR result IN EXECUTE format(
        'SELECT coalesce(jsonb_agg(to_jsonb(q)), ''[]''::jsonb) FROM (SELECT * FROM (%s) AS sub LIMIT %s) AS q',
        query, greatest(1, least(max_rows, 1000)))
    LOOP
        RETURN result;
    END LOOP;
    RETURN '[]'::jsonb;
END
$fn$;

-- Hand the function to the reader when it is usable; it needs CREATE on the schema only for the
-- ownership change.
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'ragkeeper_sql_reader')
       AND pg_has_role(current_user, 'ragkeeper_sql_reader', 'SET') THEN
        GRANT USAGE ON SCHEMA ragkeeper_sql TO ragkeeper_sql_reader;
        GRANT USAGE ON SCHEMA public TO ragkeeper_sql_reader;
        GRANT SELECT ON document_rows, tabular_datasets TO ragkeeper_sql_reader;
        GRANT CREATE ON SCHEMA ragkeeper_sql TO ragkeeper_sql_reader;
        ALTER FUNCTION ragkeeper_sql.run_readonly_query(text, integer) OWNER TO ragkeeper_sql_reader;
        REVOKE CREATE ON SCHEMA ragkeeper_sql FROM ragkeeper_sql_reader;
    END IF;
END
$$;

-- Only the migrating (application) role may call it; granted after the ownership change,
-- which would otherwise fold the old owner's grants into the new owner's.
REVOKE ALL ON FUNCTION ragkeeper_sql.run_readonly_query(text, integer) FROM PUBLIC;
DO $$
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA ragkeeper_sql TO %I', current_user);
    EXECUTE format('GRANT EXECUTE ON FUNCTION ragkeeper_sql.run_readonly_query(text, integer) TO %I',
                   current_user);
END
$$;
