-- Stacks, runs on stacks, the Terraform state backend, run credentials.
-- Secret values are stored sealed to the pool's public key (base64), never
-- in clear; stored workspaces likewise. Credentials are SHA-256 hashes.

CREATE TABLE stacks (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    pool_id         TEXT NOT NULL REFERENCES pools(id),
    git_url         TEXT,
    git_ref         TEXT,
    archive         BLOB,               -- an uploaded directory, .tar.gz
    archive_sha256  TEXT,
    project_root    TEXT NOT NULL DEFAULT '',
    image           TEXT,
    tool            TEXT NOT NULL,
    tool_path       TEXT,
    labels          TEXT NOT NULL,      -- JSON array
    env             TEXT NOT NULL,      -- JSON object
    secret_env      TEXT NOT NULL,      -- JSON object: name -> base64 sealed value
    hooks           TEXT NOT NULL,      -- JSON object: hook -> [command]
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);

ALTER TABLE runs ADD COLUMN stack_id TEXT;
ALTER TABLE runs ADD COLUMN stack_name TEXT;
ALTER TABLE runs ADD COLUMN commit_sha TEXT;
ALTER TABLE runs ADD COLUMN plan TEXT;          -- JSON {add, change, destroy}
ALTER TABLE runs ADD COLUMN outputs TEXT;       -- JSON array, sensitive values masked
-- Log chunks of earlier phases (a tracked run's plan): the next lease's
-- chunk 0 is stored at this sequence number.
ALTER TABLE runs ADD COLUMN log_base INTEGER NOT NULL DEFAULT 0;
CREATE INDEX runs_stack ON runs(stack_id, seq) WHERE stack_id IS NOT NULL;

-- A tracked run's workspace and plan between plan and apply, sealed.
CREATE TABLE run_workspaces (
    run_id  TEXT PRIMARY KEY,
    data    BLOB NOT NULL
);

-- A run's state-backend credential: valid while the run holds this lease.
CREATE TABLE run_credentials (
    token_hash  TEXT PRIMARY KEY,
    run_id      TEXT NOT NULL,
    stack_id    TEXT NOT NULL,
    lease_id    TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX run_credentials_run ON run_credentials(run_id);

CREATE TABLE state_versions (
    stack_id    TEXT NOT NULL,
    version     INTEGER NOT NULL,
    serial      INTEGER NOT NULL,
    lineage     TEXT NOT NULL,
    resources   INTEGER NOT NULL,
    sha256      TEXT NOT NULL,
    data        BLOB NOT NULL,
    run_id      TEXT,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (stack_id, version)
);

CREATE TABLE state_locks (
    stack_id    TEXT PRIMARY KEY,
    lock_id     TEXT NOT NULL,
    info        TEXT NOT NULL,      -- Terraform's lock info JSON
    run_id      TEXT,
    created_at  INTEGER NOT NULL
);
