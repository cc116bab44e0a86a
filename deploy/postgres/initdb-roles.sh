#!/bin/sh
# pedi-orchestrator's database roles, made at the first start of an empty data directory (the
# postgres image runs /docker-entrypoint-initdb.d/* once, as the superuser, over its local socket).
# migrations/roles.sql does the work (docs/deploy.md "Database roles"): the owner role that
# migrations run as, and the runtime role the API and worker connect as. Only this container
# knows the superuser's password; each app container gets the one role password it needs.
#
# Variables: DB_OWNER_PASSWORD, DB_APP_PASSWORD (required); DB_OWNER_ROLE, DB_APP_ROLE (default
# pedi_owner, pedi_app); ROLES_SQL (default /pedi/roles.sql); POSTGRES_USER/POSTGRES_DB (the image's).
set -eu
: "${DB_OWNER_PASSWORD:?set DB_OWNER_PASSWORD, the schema owner role's password}"
: "${DB_APP_PASSWORD:?set DB_APP_PASSWORD, the runtime role's password}"
psql -X -q -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-pedi}" \
    -v owner_role="${DB_OWNER_ROLE:-pedi_owner}" -v owner_password="$DB_OWNER_PASSWORD" \
    -v app_role="${DB_APP_ROLE:-pedi_app}" -v app_password="$DB_APP_PASSWORD" \
    -f "${ROLES_SQL:-/pedi/roles.sql}"
