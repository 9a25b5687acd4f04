-- Artifacts an admin has quarantined: every replica answers 451 for them.
CREATE TABLE quarantined_artifacts (
    sha256      TEXT PRIMARY KEY CHECK (length(sha256) = 64),
    reason      TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
