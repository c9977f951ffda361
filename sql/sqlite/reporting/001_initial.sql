-- Avail Reporting DB, schema version 1 (SQLite).
-- Avail applies it to the SQLite file itself on first start (or with `avail db install`).

CREATE TABLE schema_version (
    version      integer PRIMARY KEY,
    name         text NOT NULL,
    installed_at text NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

-- Reports exactly as received; the id makes a retried report a no-op.
CREATE TABLE raw_reports (
    report_id   text PRIMARY KEY,
    received_at text NOT NULL,
    source_host text NOT NULL,
    body        text NOT NULL
);

-- App-V's ClientInformation: the latest facts about each client.
CREATE TABLE client_information (
    host_name       text PRIMARY KEY,
    client_version  text NOT NULL,
    processor_arch  text NOT NULL,
    os_version      text NOT NULL,
    os_service_pack integer NOT NULL,
    os_type         text NOT NULL,
    last_report_at  text NOT NULL
);

-- App-V's PackageInformation: the packages each client last reported.
CREATE TABLE package_information (
    host_name      text NOT NULL REFERENCES client_information (host_name) ON DELETE CASCADE,
    package_id     text NOT NULL,
    version_id     text NOT NULL,
    name           text NOT NULL,
    version        text,
    source         text,
    percent_cached integer,
    reported_at    text NOT NULL,
    PRIMARY KEY (host_name, package_id, version_id)
);

-- App-V's ApplicationUsage: one row per launch. report_id names the raw report a row
-- came from; it is deliberately not a foreign key: ingest writes ~20 rows per report
-- and is the hot path, and both rows are written in one transaction anyway.
CREATE TABLE application_usage (
    report_id                   text NOT NULL,
    record                      integer NOT NULL,
    host_name                   text NOT NULL,
    application                 text NOT NULL,
    application_version         text NOT NULL,
    server                      text NOT NULL,
    user_name                   text NOT NULL,
    package_version_id          text NOT NULL,
    connection_group_version_id text,
    launched_at                 text NOT NULL,
    launch_status               text NOT NULL,
    shutdown_at                 text,
    PRIMARY KEY (report_id, record)
);
CREATE INDEX application_usage_launched ON application_usage (launched_at);

INSERT INTO schema_version (version, name) VALUES (1, '001_initial');
