-- Avail Reporting DB, schema version 2 (SQLite).
-- Avail applies it to the SQLite file itself (on start, or with `avail db install`).

-- application_usage loses its primary key (report_id, record), as on PostgreSQL: nothing
-- looks a launch up by report, and ingest writes the rows of a report only in the
-- transaction that first stores it in raw_reports, each record number once, so the key
-- only cost an index entry per launch. SQLite cannot drop a primary key: the table is
-- rebuilt without it, rows and the launched_at index kept.
CREATE TABLE application_usage_v2 (
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
    shutdown_at                 text
);
INSERT INTO application_usage_v2 (report_id, record, host_name, application, application_version,
    server, user_name, package_version_id, connection_group_version_id, launched_at, launch_status,
    shutdown_at)
SELECT report_id, record, host_name, application, application_version, server, user_name,
    package_version_id, connection_group_version_id, launched_at, launch_status, shutdown_at
FROM application_usage;
DROP TABLE application_usage;
ALTER TABLE application_usage_v2 RENAME TO application_usage;
CREATE INDEX application_usage_launched ON application_usage (launched_at);

INSERT INTO schema_version (version, name) VALUES (2, '002_usage_without_key');
