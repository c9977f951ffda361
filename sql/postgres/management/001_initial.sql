-- Avail Management DB, schema version 1 (PostgreSQL).
-- Run in order with: psql -1 -v ON_ERROR_STOP=1 -d avail_management -f 001_initial.sql
-- (see sql/README.md). `avail db install` runs this same file.

CREATE TABLE schema_version (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    installed_at timestamptz NOT NULL DEFAULT now()
);

-- Every change to the catalog increments this single row, inside the changing
-- transaction: writers serialise on it, so its value orders commits, and a
-- publishing node that saw sequence N has seen every change up to N.
CREATE TABLE change_sequence (
    id  smallint PRIMARY KEY CHECK (id = 1),
    seq bigint NOT NULL
);
INSERT INTO change_sequence (id, seq) VALUES (1, 0);

CREATE TABLE packages (
    package_id uuid PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE package_versions (
    version_id   uuid PRIMARY KEY,
    package_id   uuid NOT NULL REFERENCES packages (package_id),
    name         text NOT NULL,
    version      text NOT NULL,
    content_path text NOT NULL UNIQUE,
    size         bigint NOT NULL CHECK (size >= 0),
    sha256       text NOT NULL,
    published    boolean NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL
);
CREATE INDEX package_versions_package ON package_versions (package_id);
CREATE INDEX package_versions_name ON package_versions (lower(name));

CREATE TABLE applications (
    version_id uuid NOT NULL REFERENCES package_versions (version_id) ON DELETE CASCADE,
    position   integer NOT NULL,
    app_id     text NOT NULL,
    target     text,
    arguments  text,
    PRIMARY KEY (version_id, app_id)
);

CREATE TABLE deployment_configs (
    version_id uuid PRIMARY KEY REFERENCES package_versions (version_id) ON DELETE CASCADE,
    config     text NOT NULL,
    updated_at timestamptz NOT NULL
);

-- The directory: users, machines, groups, and nested membership.
CREATE TABLE users (
    name       text PRIMARY KEY,
    created_at timestamptz NOT NULL
);
CREATE TABLE machines (
    name            text PRIMARY KEY,
    credential_hash text NOT NULL UNIQUE,
    created_at      timestamptz NOT NULL
);
CREATE TABLE groups (
    name       text PRIMARY KEY,
    created_at timestamptz NOT NULL
);
CREATE TABLE group_users (
    group_name text NOT NULL REFERENCES groups (name) ON DELETE CASCADE,
    user_name  text NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    PRIMARY KEY (group_name, user_name)
);
CREATE TABLE group_machines (
    group_name   text NOT NULL REFERENCES groups (name) ON DELETE CASCADE,
    machine_name text NOT NULL REFERENCES machines (name) ON DELETE CASCADE,
    PRIMARY KEY (group_name, machine_name)
);
CREATE TABLE group_groups (
    group_name  text NOT NULL REFERENCES groups (name) ON DELETE CASCADE,
    member_name text NOT NULL REFERENCES groups (name) ON DELETE CASCADE,
    PRIMARY KEY (group_name, member_name)
);

-- Entitlements: which groups may have a package version, with an optional
-- per-group user configuration (App-V's UserConfiguration).
CREATE TABLE entitlements (
    version_id  uuid NOT NULL REFERENCES package_versions (version_id) ON DELETE CASCADE,
    group_name  text NOT NULL REFERENCES groups (name) ON DELETE CASCADE,
    user_config text,
    PRIMARY KEY (version_id, group_name)
);

CREATE TABLE connection_groups (
    id         uuid PRIMARY KEY,
    version_id uuid NOT NULL UNIQUE,
    name       text NOT NULL UNIQUE,
    priority   integer NOT NULL,
    published  boolean NOT NULL DEFAULT false,
    updated_at timestamptz NOT NULL
);
CREATE TABLE connection_group_members (
    group_id   uuid NOT NULL REFERENCES connection_groups (id) ON DELETE CASCADE,
    position   integer NOT NULL,
    package_id uuid NOT NULL REFERENCES packages (package_id),
    version_id uuid REFERENCES package_versions (version_id),
    optional   boolean NOT NULL DEFAULT false,
    PRIMARY KEY (group_id, package_id)
);
CREATE TABLE connection_group_entitlements (
    group_id   uuid NOT NULL REFERENCES connection_groups (id) ON DELETE CASCADE,
    group_name text NOT NULL REFERENCES groups (name) ON DELETE CASCADE,
    PRIMARY KEY (group_id, group_name)
);

CREATE TABLE publishing_servers (
    name               text PRIMARY KEY,
    credential_hash    text NOT NULL UNIQUE,
    registered_at      timestamptz NOT NULL,
    last_sync_at       timestamptz,
    last_sync_sequence bigint
);

CREATE TABLE administrators (
    name          text PRIMARY KEY,
    password_hash text,
    created_at    timestamptz NOT NULL
);
CREATE TABLE api_tokens (
    token_hash text PRIMARY KEY,
    admin_name text NOT NULL REFERENCES administrators (name) ON DELETE CASCADE,
    label      text NOT NULL,
    created_at timestamptz NOT NULL
);

INSERT INTO schema_version (version, name) VALUES (1, '001_initial');
