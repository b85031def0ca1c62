-- 0005: a generation counter per pipeline (docs/architecture.md, invariant 8).
--
-- Every committed change to a pipeline's documents (a document written, replaced, moved or
-- renamed, deleted, or the pipeline purged) adds one to its row here, in the same transaction,
-- so a reader that caches search results under the generations it read before searching (the
-- agent's search cache, docs/redis.md) never serves a result from before a change committed
-- before its read. Rows are never deleted: a purged pipeline's generation still grows.
--
-- The counter is kept by a deferred constraint trigger on document_metadata: it fires at
-- commit, so the row lock it takes on the pipeline's counter is held only while the
-- transaction commits, and concurrent document transactions of one pipeline do not wait on
-- each other for their whole length. Each transaction adds one per pipeline it touched,
-- however many rows (a transaction-local setting remembers it). The function runs with the
-- migrator's rights, so the ingestion role needs no privilege on the table.

CREATE TABLE public.pipeline_generations (
    pipeline_id  text        PRIMARY KEY,
    generation   bigint      NOT NULL CHECK (generation > 0),
    changed_at   timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE public.pipeline_generations ENABLE ROW LEVEL SECURITY;

CREATE FUNCTION ragkeeper_admin.bump_pipeline_generation()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $fn$
DECLARE
    pipeline text := CASE WHEN TG_OP = 'DELETE' THEN OLD.pipeline_id ELSE NEW.pipeline_id END;
    done text := 'ragkeeper.generation_' || md5(pipeline);
BEGIN
    IF current_setting(done, true) = 'bumped' THEN
        RETURN NULL;
    END IF;
    INSERT INTO public.pipeline_generations AS g (pipeline_id, generation) VALUES (pipeline, 1)
    ON CONFLICT (pipeline_id)
        DO UPDATE SET generation = g.generation + 1, changed_at = now();
    PERFORM set_config(done, 'bumped', true);
    RETURN NULL;
END
$fn$;
REVOKE ALL ON FUNCTION ragkeeper_admin.bump_pipeline_generation() FROM PUBLIC;

CREATE CONSTRAINT TRIGGER document_metadata_generation
    AFTER INSERT OR UPDATE OR DELETE ON public.document_metadata
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ragkeeper_admin.bump_pipeline_generation();

INSERT INTO ragkeeper_admin.duty_grants (duty, privileges, on_object) VALUES
    ('agent', 'SELECT', 'TABLE public.pipeline_generations');

SELECT ragkeeper_admin.apply_grants();
