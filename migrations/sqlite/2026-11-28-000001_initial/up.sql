-- Orchard metadata (SQLite, embedded mode; same shape as the Postgres schema). Times are Unix seconds (BIGINT) so that the same
-- diesel schema serves Postgres and SQLite.
CREATE TABLE upstream_sources (
    name        TEXT PRIMARY KEY,
    protocol    TEXT NOT NULL CHECK (protocol IN ('pypi', 'npm', 'maven')),
    url         TEXT NOT NULL,
    priority    INTEGER NOT NULL DEFAULT 100,
    enabled     BOOLEAN NOT NULL DEFAULT TRUE,
    -- TTL overrides, include/exclude patterns, credentials reference (JSON text)
    settings    TEXT NOT NULL DEFAULT '{}',
    updated_at  BIGINT NOT NULL
);

CREATE TABLE artifacts (
    sha256        TEXT PRIMARY KEY CHECK (length(sha256) = 64),
    size          BIGINT NOT NULL CHECK (size >= 0),
    content_type  TEXT NOT NULL,
    created_at    BIGINT NOT NULL
);

CREATE TABLE cached_urls (
    protocol         TEXT NOT NULL,
    source           TEXT NOT NULL,
    path             TEXT NOT NULL,
    artifact_sha256  TEXT NOT NULL REFERENCES artifacts (sha256),
    upstream_url     TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    PRIMARY KEY (protocol, source, path)
);
CREATE INDEX cached_urls_artifact ON cached_urls (artifact_sha256);

CREATE TABLE artifact_dependencies (
    artifact_sha256  TEXT NOT NULL REFERENCES artifacts (sha256) ON DELETE CASCADE,
    position         INTEGER NOT NULL,
    protocol         TEXT NOT NULL,
    name             TEXT NOT NULL,
    requirement      TEXT NOT NULL,
    kind             TEXT NOT NULL,
    optional         BOOLEAN NOT NULL,
    marker           TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (artifact_sha256, position)
);

CREATE TABLE resolution_results (
    key              TEXT PRIMARY KEY,
    artifact_sha256  TEXT NOT NULL,
    result           TEXT NOT NULL,
    created_at       BIGINT NOT NULL
);
