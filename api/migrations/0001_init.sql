-- One set of migrations for SQLite and PostgreSQL: times are Unix milliseconds (BIGINT), ids
-- are UUID text and flags are BIGINT 0/1, so the same DDL and queries run on both.
CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    email         TEXT UNIQUE,
    display_name  TEXT NOT NULL,
    password_hash TEXT,
    role          TEXT NOT NULL CHECK (role IN ('host', 'guest', 'viewer')),
    broadcast_id  TEXT,
    created_at    BIGINT NOT NULL
);

CREATE TABLE sessions (
    id         TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    token_hash TEXT NOT NULL UNIQUE,
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX sessions_user ON sessions(user_id);

CREATE TABLE broadcasts (
    id          TEXT PRIMARY KEY,
    owner_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name        TEXT NOT NULL UNIQUE,
    title       TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('Backstage', 'Live', 'Ended')),
    spec        TEXT NOT NULL,
    started_at  BIGINT,
    ended_at    BIGINT,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX broadcasts_owner ON broadcasts(owner_id, created_at);
CREATE INDEX broadcasts_state ON broadcasts(state);

CREATE TABLE destinations (
    id             TEXT PRIMARY KEY,
    broadcast_id   TEXT NOT NULL REFERENCES broadcasts(id) ON DELETE CASCADE,
    name           TEXT NOT NULL,
    kind           TEXT NOT NULL,
    url            TEXT NOT NULL,
    key_ciphertext TEXT NOT NULL,
    key_last4      TEXT NOT NULL,
    enabled        BIGINT NOT NULL DEFAULT 1,
    created_at     BIGINT NOT NULL,
    UNIQUE (broadcast_id, name)
);

CREATE TABLE participants (
    id           TEXT PRIMARY KEY,
    broadcast_id TEXT NOT NULL REFERENCES broadcasts(id) ON DELETE CASCADE,
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role         TEXT NOT NULL,
    display_name TEXT NOT NULL,
    on_stage     BIGINT NOT NULL DEFAULT 0,
    joined_at    BIGINT NOT NULL,
    left_at      BIGINT
);
CREATE INDEX participants_broadcast ON participants(broadcast_id);

CREATE TABLE recordings (
    id           TEXT PRIMARY KEY,
    owner_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    broadcast_id TEXT REFERENCES broadcasts(id) ON DELETE SET NULL,
    title        TEXT NOT NULL,
    path         TEXT NOT NULL,
    poster_path  TEXT,
    content_type TEXT NOT NULL,
    size_bytes   BIGINT NOT NULL DEFAULT 0,
    duration_ms  BIGINT NOT NULL DEFAULT 0,
    created_at   BIGINT NOT NULL
);
CREATE INDEX recordings_owner ON recordings(owner_id, created_at);

CREATE TABLE chat_messages (
    id           TEXT PRIMARY KEY,
    broadcast_id TEXT NOT NULL REFERENCES broadcasts(id) ON DELETE CASCADE,
    channel      TEXT NOT NULL CHECK (channel IN ('studio', 'public')),
    user_id      TEXT NOT NULL,
    display_name TEXT NOT NULL,
    body         TEXT NOT NULL,
    created_at   BIGINT NOT NULL
);
CREATE INDEX chat_messages_channel ON chat_messages(broadcast_id, channel, created_at);

CREATE TABLE uploads (
    id            TEXT PRIMARY KEY,
    owner_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    kind          TEXT NOT NULL CHECK (kind IN ('logo', 'background', 'overlay')),
    content_type  TEXT NOT NULL,
    size_bytes    BIGINT NOT NULL,
    path          TEXT NOT NULL,
    original_name TEXT NOT NULL,
    created_at    BIGINT NOT NULL
);
