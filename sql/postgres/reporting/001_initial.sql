-- Avail Reporting DB, schema version 1 (PostgreSQL).
-- Run in order with: psql -1 -v ON_ERROR_STOP=1 -d avail_reporting -f 001_initial.sql
-- (see sql/README.md). `avail db install` runs this same file.

CREATE TABLE schema_version (
    version      integer PRIMARY KEY,
    name         text NOT NULL,
    installed_at timestamptz NOT NULL DEFAULT now()
);

-- Reports exactly as received; the id makes a retried report a no-op.
CREATE TABLE raw_reports (
    report_id   uuid PRIMARY KEY,
    received_at timestamptz NOT NULL,
    source_host text NOT NULL,
    body        text COMPRESSION lz4 NOT NULL
);

-- App-V's ClientInformation: the latest facts about each client.
CREATE TABLE client_information (
    host_name       text PRIMARY KEY,
    client_version  text NOT NULL,
    processor_arch  text NOT NULL,
    os_version      text NOT NULL,
    os_service_pack integer NOT NULL,
    os_type         text NOT NULL,
    last_report_at  timestamptz NOT NULL
);

-- App-V's PackageInformation: the packages each client last reported.
CREATE TABLE package_information (
    host_name      text NOT NULL REFERENCES client_information (host_name) ON DELETE CASCADE,
    package_id     uuid NOT NULL,
    version_id     uuid NOT NULL,
    name           text NOT NULL,
    version        text,
    source         text,
    percent_cached integer,
    reported_at    timestamptz NOT NULL,
    PRIMARY KEY (host_name, package_id, version_id)
);

-- App-V's ApplicationUsage: one row per launch. report_id names the raw report a row
-- came from; it is deliberately not a foreign key: ingest writes ~20 rows per report
-- and is the hot path, and both rows are written in one transaction anyway.
CREATE TABLE application_usage (
    report_id                   uuid NOT NULL,
    record                      integer NOT NULL,
    host_name                   text NOT NULL,
    application                 text NOT NULL,
    application_version         text NOT NULL,
    server                      text NOT NULL,
    user_name                   text NOT NULL,
    package_version_id          uuid NOT NULL,
    connection_group_version_id uuid,
    launched_at                 timestamptz NOT NULL,
    launch_status               text NOT NULL,
    shutdown_at                 timestamptz,
    PRIMARY KEY (report_id, record)
);
-- Launches arrive roughly in time order: a BRIN index serves per-day reports and costs
-- almost nothing to maintain, where a B-tree per column halves the ingest rate.
CREATE INDEX application_usage_launched ON application_usage USING brin (launched_at);

INSERT INTO schema_version (version, name) VALUES (1, '001_initial');
