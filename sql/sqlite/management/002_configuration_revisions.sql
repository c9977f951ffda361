-- Avail Management DB, schema version 2 (SQLite): the block map's digest and the
-- target operating systems of each package version, and a revision for every
-- deployment and user configuration.
-- `avail db install` (or Avail's own start) applies it to a version 1 database.

-- SHA-256 (hex) of the uncompressed AppxBlockMap.xml; NULL for versions
-- imported before version 2.
ALTER TABLE package_versions ADD COLUMN block_map_sha256 text;

-- The operating systems the package targets, from its manifest
-- (Prerequisites/appv:TargetOSes/appv:TargetOS, such as "WindowsClient_10.0_x64"),
-- as a JSON array of strings; NULL for every operating system (and for
-- versions imported before version 2).
ALTER TABLE package_versions ADD COLUMN target_oses text;

-- Each set of a version's deployment configuration or of one of its user
-- configurations increments this counter and stamps the configuration with its
-- new value, in the same transaction: revisions only grow, also across a
-- configuration cleared and set again (MS-VAPR's ConfigurationId is the
-- revision mod 65536).
ALTER TABLE package_versions ADD COLUMN config_revision integer NOT NULL DEFAULT 0;
ALTER TABLE deployment_configs ADD COLUMN revision integer NOT NULL DEFAULT 0;
ALTER TABLE entitlements ADD COLUMN user_config_revision integer NOT NULL DEFAULT 0;
ALTER TABLE entitlements ADD COLUMN user_config_updated_at text;

-- Version 1 published minutes-since-the-epoch mod 65536 as ConfigurationId:
-- start from that number so that the next change still increases it.
UPDATE deployment_configs
   SET revision = (CAST(strftime('%s', updated_at) AS integer) / 60) % 65536;
UPDATE package_versions
   SET config_revision = 1 + COALESCE(
       (SELECT d.revision FROM deployment_configs d WHERE d.version_id = package_versions.version_id), 0);
UPDATE entitlements
   SET user_config_revision = (SELECT p.config_revision FROM package_versions p WHERE p.version_id = entitlements.version_id),
       user_config_updated_at = (SELECT p.updated_at FROM package_versions p WHERE p.version_id = entitlements.version_id)
 WHERE user_config IS NOT NULL;

INSERT INTO schema_version (version, name) VALUES (2, '002_configuration_revisions');
