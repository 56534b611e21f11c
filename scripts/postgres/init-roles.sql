-- Roles for running the service on PostgreSQL with row-level security that binds it:
-- aumos_owner owns the tables and runs migrations; aumos_app is what the service connects as.
-- Development passwords only; production sets its own.
CREATE ROLE aumos_owner LOGIN PASSWORD 'aumos_owner' NOSUPERUSER NOBYPASSRLS;
CREATE ROLE aumos_app LOGIN PASSWORD 'aumos_app' NOSUPERUSER NOBYPASSRLS;
CREATE DATABASE aumos OWNER aumos_owner;
