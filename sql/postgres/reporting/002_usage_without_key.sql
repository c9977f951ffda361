-- Avail Reporting DB, schema version 2 (PostgreSQL).
-- Run after 001 with: psql -1 -v ON_ERROR_STOP=1 -d avail_reporting -f 002_usage_without_key.sql
-- (see sql/README.md). `avail db install` runs this same file.

-- application_usage loses its primary key (report_id, record). Nothing looks a launch up
-- by report, and its uniqueness holds without it: ingest writes the rows of a report only
-- in the transaction that first stores the report in raw_reports (whose key makes a
-- retried report a no-op), each record number once. The key cost more than it served:
-- ~20 entries per report in random (uuid) order, each a B-tree insertion and, after every
-- checkpoint, a full-page image in the WAL; without it PostgreSQL spends ~25 % less CPU
-- per report stored (bench/reporting.sh). The BRIN index on launched_at stays.
ALTER TABLE application_usage DROP CONSTRAINT application_usage_pkey;

INSERT INTO schema_version (version, name) VALUES (2, '002_usage_without_key');
