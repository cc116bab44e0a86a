-- pedi-orchestrator: least-privilege database roles (PostgreSQL 13+, psql 10+).
--
-- Two login roles (docs/security.md, docs/deploy.md "Database roles"):
--   owner_role  owns the schema. Alembic (MIGRATION_DATABASE_URL) and the SQL migrations run as it.
--   app_role    what the API, the worker and the reconciler connect as (DATABASE_URL). It reads
--               and writes rows and nothing else: on `audit` only SELECT and INSERT (no UPDATE,
--               DELETE or TRUNCATE), and since it owns nothing it cannot ALTER or DROP a table or
--               a trigger, nor turn triggers off. It cannot create objects in the schema.
--
-- Run it as a superuser (or your cloud's admin role), before the first migration and again after
-- any migration applied as plain SQL; it is idempotent:
--     psql "postgresql://postgres@db-host:5432/pedi" -v ON_ERROR_STOP=1 \
--          -v owner_role=pedi_owner -v owner_password="$OWNER_PASSWORD" \
--          -v app_role=pedi_app -v app_password="$APP_PASSWORD" \
--          -f migrations/roles.sql
-- Every variable is optional: the role names default to pedi_owner and pedi_app; a role given no
-- password keeps the one it has (none, for a new role: set one, or use certificate/IAM auth).
-- -v adopt_existing=1 hands every table, sequence, view and function of schema public that
-- another role owns to owner_role: for a database migrated before these roles existed.
--
-- What it sets up, in the database you connect to:
--   * both roles: LOGIN, no SUPERUSER, CREATEDB, CREATEROLE, REPLICATION or BYPASSRLS; the app
--     role is not a member of the owner role;
--   * schema public: USAGE + CREATE for the owner, USAGE only for the app, CREATE revoked from
--     PUBLIC (PostgreSQL before 15 grants it to everyone);
--   * every table the owner owns there: SELECT, INSERT, UPDATE, DELETE for the app, except
--     `audit` (SELECT, INSERT: append-only), `jobs` and `cases` (no DELETE: a case is never
--     deleted by the app, and its audit rows refer to it) and `alembic_version` (SELECT); no
--     TRUNCATE, REFERENCES or TRIGGER anywhere; USAGE + SELECT on the owner's sequences;
--   * default privileges: tables and sequences the owner creates later get SELECT, INSERT,
--     UPDATE, DELETE and USAGE. Alembic (alembic/env.py, OWNER_ONLY_PRIVILEGES) takes back the
--     exceptions above after every upgrade: a default grant cannot tell the tables apart.

\set ON_ERROR_STOP on
\if :{?owner_role}
\else
\set owner_role pedi_owner
\endif
\if :{?app_role}
\else
\set app_role pedi_app
\endif
\if :{?owner_password}
\else
\set owner_password ''
\endif
\if :{?app_password}
\else
\set app_password ''
\endif
\if :{?adopt_existing}
\else
\set adopt_existing 0
\endif

-- psql variables do not reach inside a DO block: hand them over as session settings.
SELECT set_config('pedi_roles.owner_role', :'owner_role', false),
       set_config('pedi_roles.app_role', :'app_role', false),
       set_config('pedi_roles.owner_password', :'owner_password', false),
       set_config('pedi_roles.app_password', :'app_password', false),
       set_config('pedi_roles.adopt_existing', :'adopt_existing', false)
\gset pedi_roles_

BEGIN;

DO $roles$
DECLARE
    owner_role text := current_setting('pedi_roles.owner_role');
    app_role text := current_setting('pedi_roles.app_role');
    role_name text;
    password text;
    obj record;
BEGIN
    IF owner_role = '' OR app_role = '' OR owner_role = app_role THEN
        RAISE EXCEPTION 'roles.sql: owner_role and app_role must be two different, non-empty names'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF current_user IN (owner_role, app_role) THEN
        RAISE EXCEPTION 'roles.sql: run it as an administrator, not as % itself', current_user
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- The roles, created once; their attributes and passwords set on every run.
    FOREACH role_name IN ARRAY ARRAY[owner_role, app_role] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role_name) THEN
            EXECUTE format('CREATE ROLE %I', role_name);
        END IF;
        EXECUTE format(
            'ALTER ROLE %I WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS',
            role_name
        );
        password := current_setting(
            CASE WHEN role_name = owner_role THEN 'pedi_roles.owner_password' ELSE 'pedi_roles.app_password' END
        );
        IF password <> '' THEN
            EXECUTE format('ALTER ROLE %I WITH PASSWORD %L', role_name, password);
        END IF;
    END LOOP;
    PERFORM set_config('pedi_roles.owner_password', '', false);
    PERFORM set_config('pedi_roles.app_password', '', false);

    -- The app role must not inherit the owner's rights through membership.
    IF pg_has_role(app_role, owner_role, 'MEMBER') THEN
        EXECUTE format('REVOKE %I FROM %I', owner_role, app_role);
    END IF;

    -- Connect to this database; the owner creates objects in schema public, nobody else does.
    EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO %I, %I', current_database(), owner_role, app_role);
    REVOKE CREATE ON SCHEMA public FROM PUBLIC;
    EXECUTE format('GRANT USAGE, CREATE ON SCHEMA public TO %I', owner_role);
    EXECUTE format('REVOKE CREATE ON SCHEMA public FROM %I', app_role);
    EXECUTE format('GRANT USAGE ON SCHEMA public TO %I', app_role);

    -- A database migrated before these roles existed: its objects move to the owner role.
    IF current_setting('pedi_roles.adopt_existing') NOT IN ('', '0', 'off', 'false') THEN
        FOR obj IN
            SELECT CASE c.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW'
                                  WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE 'TABLE' END AS kind,
                   format('%I.%I', n.nspname, c.relname) AS name
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm')
              AND pg_get_userbyid(c.relowner) <> owner_role
        LOOP
            -- A table's sequences (BIGSERIAL) follow it.
            EXECUTE format('ALTER %s %s OWNER TO %I', obj.kind, obj.name, owner_role);
        END LOOP;
        FOR obj IN
            SELECT p.oid::regprocedure AS signature
            FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
            WHERE n.nspname = 'public' AND pg_get_userbyid(p.proowner) <> owner_role
        LOOP
            EXECUTE format('ALTER ROUTINE %s OWNER TO %I', obj.signature, owner_role);
        END LOOP;
    END IF;

    -- Rows only: read and write every table the owner owns; append to the audit trail.
    FOR obj IN
        SELECT c.relname, format('%I.%I', n.nspname, c.relname) AS name
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND pg_get_userbyid(c.relowner) = owner_role
    LOOP
        EXECUTE format('REVOKE ALL ON TABLE %s FROM %I', obj.name, app_role);
        EXECUTE format(
            'GRANT %s ON TABLE %s TO %I',
            CASE WHEN obj.relname = 'audit' THEN 'SELECT, INSERT'
                 WHEN obj.relname IN ('jobs', 'cases') THEN 'SELECT, INSERT, UPDATE'
                 WHEN obj.relname = 'alembic_version' THEN 'SELECT'
                 ELSE 'SELECT, INSERT, UPDATE, DELETE' END,
            obj.name,
            app_role
        );
    END LOOP;
    FOR obj IN
        SELECT format('%I.%I', n.nspname, c.relname) AS name
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind = 'S' AND pg_get_userbyid(c.relowner) = owner_role
    LOOP
        EXECUTE format('REVOKE ALL ON SEQUENCE %s FROM %I', obj.name, app_role);
        EXECUTE format('GRANT USAGE, SELECT ON SEQUENCE %s TO %I', obj.name, app_role);
    END LOOP;

    -- Tables and sequences the owner creates from now on (each migration) get the same grants.
    EXECUTE format(
        'ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO %I',
        owner_role, app_role
    );
    EXECUTE format(
        'ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO %I',
        owner_role, app_role
    );
END
$roles$;

COMMIT;

\echo roles.sql: :owner_role owns the schema, :app_role reads and writes rows (audit: SELECT, INSERT)
