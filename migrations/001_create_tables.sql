-- pedi-orchestrator schema, revision 0001 (PostgreSQL 13+).
--
-- The same schema as Alembic revision 0001 (alembic/versions/0001_initial.py); a test applies
-- both to a real Postgres and compares them object by object. Apply with:
--     psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -f migrations/001_create_tables.sql
-- It ends by recording the Alembic revision it equals (alembic_version = '0001'), so a later
-- `alembic upgrade head` continues from here (migrations/README.md). `alembic upgrade head` alone
-- does the same; this file is for DBAs who review and apply plain SQL. It runs in one transaction.

BEGIN;

CREATE TABLE cases (
    id UUID NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE NOT NULL,
    created_by VARCHAR(64) NOT NULL,
    CONSTRAINT pk_cases PRIMARY KEY (id)
);

CREATE TABLE targets (
    name VARCHAR(64) NOT NULL,
    tier VARCHAR(16) NOT NULL,
    url VARCHAR(512) NOT NULL,
    contract VARCHAR(16) NOT NULL,
    cost_per_call_usd FLOAT NOT NULL,
    capacity INTEGER,
    prior_latency_ms FLOAT,
    enabled BOOLEAN NOT NULL,
    registered_by VARCHAR(64) NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE NOT NULL,
    updated_at TIMESTAMP WITH TIME ZONE NOT NULL,
    CONSTRAINT pk_targets PRIMARY KEY (name),
    CONSTRAINT ck_targets_tier CHECK (tier IN ('edge', 'cloud', 'gpu')),
    CONSTRAINT ck_targets_contract CHECK (contract IN ('infer', 'run'))
);

CREATE TABLE telemetry_samples (
    id BIGSERIAL NOT NULL,
    target VARCHAR(64) NOT NULL,
    at TIMESTAMP WITH TIME ZONE NOT NULL,
    received_at TIMESTAMP WITH TIME ZONE NOT NULL,
    latency_ms FLOAT,
    utilization FLOAT,
    queue_depth INTEGER,
    cost_usd FLOAT,
    up BOOLEAN,
    source VARCHAR(64) NOT NULL,
    CONSTRAINT pk_telemetry_samples PRIMARY KEY (id)
);
CREATE INDEX ix_telemetry_target_at ON telemetry_samples (target, at);

CREATE TABLE jobs (
    id UUID NOT NULL,
    case_id UUID,
    kind VARCHAR(16) NOT NULL,
    status VARCHAR(16) NOT NULL,
    age_months INTEGER,
    observations TEXT,
    embedding BYTEA,
    task_type VARCHAR(64),
    payload JSONB,
    preferred_target VARCHAR(64) NOT NULL,
    sla_ms INTEGER NOT NULL,
    strict_sla BOOLEAN NOT NULL,
    budget_usd FLOAT,
    idempotency_key VARCHAR(200),
    request_hash VARCHAR(64),
    actor VARCHAR(64) NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE NOT NULL,
    started_at TIMESTAMP WITH TIME ZONE,
    finished_at TIMESTAMP WITH TIME ZONE,
    lease_expires_at TIMESTAMP WITH TIME ZONE,
    claim_count INTEGER NOT NULL,
    worker_id VARCHAR(128),
    target VARCHAR(64),
    attempts INTEGER NOT NULL,
    latency_ms FLOAT,
    predicted_ms FLOAT,
    predicted_p95_ms FLOAT,
    cost_usd FLOAT,
    sla_met BOOLEAN,
    result JSONB,
    decision JSONB,
    error TEXT,
    error_kind VARCHAR(64),
    CONSTRAINT pk_jobs PRIMARY KEY (id),
    CONSTRAINT ck_jobs_status CHECK (status IN ('queued', 'running', 'completed', 'failed')),
    CONSTRAINT ck_jobs_kind CHECK (kind IN ('screening', 'task')),
    CONSTRAINT fk_jobs_case_id_cases FOREIGN KEY (case_id) REFERENCES cases (id),
    CONSTRAINT uq_jobs_idempotency_key UNIQUE (idempotency_key)
);
CREATE INDEX ix_jobs_case_id ON jobs (case_id);
CREATE INDEX ix_jobs_created_at_id ON jobs (created_at, id);
CREATE INDEX ix_jobs_status_created_at ON jobs (status, created_at);
CREATE INDEX ix_jobs_target_created_at ON jobs (target, created_at);

CREATE TABLE audit (
    id BIGSERIAL NOT NULL,
    job_id UUID,
    event VARCHAR(32) NOT NULL,
    actor VARCHAR(64) NOT NULL,
    at TIMESTAMP WITH TIME ZONE NOT NULL,
    target VARCHAR(64),
    outcome VARCHAR(32),
    latency_ms FLOAT,
    details JSONB,
    CONSTRAINT pk_audit PRIMARY KEY (id),
    CONSTRAINT fk_audit_job_id_jobs FOREIGN KEY (job_id) REFERENCES jobs (id)
);
CREATE INDEX ix_audit_job_id_at ON audit (job_id, at);

-- The audit trail is append-only: no UPDATE, no DELETE, no TRUNCATE, for anyone, including the app.
CREATE FUNCTION audit_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER audit_append_only
    BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_no_truncate
    BEFORE TRUNCATE ON audit
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();

-- The Alembic revision this file equals (Alembic's own table, as `alembic stamp` makes it).
CREATE TABLE alembic_version (
    version_num VARCHAR(32) NOT NULL,
    CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
);
INSERT INTO alembic_version (version_num) VALUES ('0001');

COMMIT;
