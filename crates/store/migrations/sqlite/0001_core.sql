-- Core schema: API tokens, pools, workers and their sessions, runs, logs.
-- Timestamps are Unix milliseconds (UTC). Secrets are stored as SHA-256 hashes.

CREATE TABLE api_tokens (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    token_hash  TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);

CREATE TABLE pools (
    id               TEXT PRIMARY KEY,
    name             TEXT NOT NULL UNIQUE,
    description      TEXT NOT NULL DEFAULT '',
    public_key_pem   TEXT NOT NULL,
    key_fingerprint  TEXT NOT NULL,
    credential_hash  TEXT NOT NULL,
    generation       INTEGER NOT NULL DEFAULT 1,
    cycled_at        INTEGER,
    created_at       INTEGER NOT NULL
);

CREATE TABLE workers (
    id                   TEXT PRIMARY KEY,
    pool_id              TEXT NOT NULL REFERENCES pools(id) ON DELETE CASCADE,
    pool_generation      INTEGER NOT NULL,
    version              TEXT NOT NULL,
    hostname             TEXT NOT NULL,
    tags                 TEXT NOT NULL,      -- JSON object
    max_concurrent_runs  INTEGER NOT NULL,
    drain                INTEGER NOT NULL DEFAULT 0,
    registered_at        INTEGER NOT NULL,
    last_seen            INTEGER NOT NULL,
    gone_at              INTEGER
);
CREATE INDEX workers_pool ON workers(pool_id);

CREATE TABLE worker_sessions (
    token_hash  TEXT PRIMARY KEY,
    worker_id   TEXT NOT NULL REFERENCES workers(id) ON DELETE CASCADE,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX worker_sessions_worker ON worker_sessions(worker_id);

-- Registration nonces seen recently: a signed registration is single use.
CREATE TABLE registration_nonces (
    nonce       TEXT PRIMARY KEY,
    expires_at  INTEGER NOT NULL
);

CREATE TABLE runs (
    seq               INTEGER PRIMARY KEY AUTOINCREMENT,  -- dispatch order
    id                TEXT NOT NULL UNIQUE,
    pool_id           TEXT NOT NULL,
    pool_name         TEXT NOT NULL,
    run_type          TEXT NOT NULL,
    state             TEXT NOT NULL,
    command           TEXT NOT NULL,      -- JSON array
    env               TEXT NOT NULL,      -- JSON object
    image             TEXT,
    worker_id         TEXT,
    lease_id          TEXT,
    lease_expires_at  INTEGER,
    stop_requested    INTEGER NOT NULL DEFAULT 0,
    exit_code         INTEGER,
    reason            TEXT,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
);
CREATE INDEX runs_dispatch ON runs(pool_id, state, seq);
CREATE INDEX runs_worker ON runs(worker_id, state);
CREATE INDEX runs_lease ON runs(lease_expires_at) WHERE lease_expires_at IS NOT NULL;

CREATE TABLE run_transitions (
    run_id  TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    state   TEXT NOT NULL,
    at      INTEGER NOT NULL,
    reason  TEXT,
    PRIMARY KEY (run_id, seq)
);

-- Log chunks, numbered from 0 by the launcher; (run_id, seq) makes uploads idempotent.
CREATE TABLE log_chunks (
    run_id  TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    data    BLOB NOT NULL,
    PRIMARY KEY (run_id, seq)
);
