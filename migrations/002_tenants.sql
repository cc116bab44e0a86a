-- pedi-orchestrator schema, revision 0002 (PostgreSQL 13+): tenants.
--
-- Cases and jobs record the tenant whose key created them; an Idempotency-Key is unique per
-- tenant. Rows that exist already become tenant 'default'. The same change as Alembic revision
-- 0002 (alembic/versions/0002_tenants.py); a test applies both to a real Postgres and compares
-- them object by object. Apply after 001, with:
--     psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -f migrations/002_tenants.sql
-- It runs in one transaction and is safe to apply twice.

BEGIN;

-- The default fills existing rows, then goes: the application names every tenant.
ALTER TABLE cases ADD COLUMN IF NOT EXISTS tenant VARCHAR(64) NOT NULL DEFAULT 'default';
ALTER TABLE cases ALTER COLUMN tenant DROP DEFAULT;
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS tenant VARCHAR(64) NOT NULL DEFAULT 'default';
ALTER TABLE jobs ALTER COLUMN tenant DROP DEFAULT;

ALTER TABLE jobs DROP CONSTRAINT IF EXISTS uq_jobs_idempotency_key;
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'uq_jobs_tenant_idempotency_key') THEN
        ALTER TABLE jobs
            ADD CONSTRAINT uq_jobs_tenant_idempotency_key UNIQUE (tenant, idempotency_key);
    END IF;
END;
$$;
CREATE INDEX IF NOT EXISTS ix_jobs_tenant_created_at_id ON jobs (tenant, created_at, id);

-- Record the revision, as `alembic upgrade head` would, so that Alembic can take over from here.
CREATE TABLE IF NOT EXISTS alembic_version (
    version_num VARCHAR(32) NOT NULL,
    CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
);
INSERT INTO alembic_version (version_num) SELECT '0002' WHERE NOT EXISTS (SELECT 1 FROM alembic_version);
UPDATE alembic_version SET version_num = '0002';

COMMIT;
