-- RTMP ingest (OBS): a broadcast's stream key, stored as its SHA-256 (base64url, as refresh tokens); the key itself is
-- shown once, when generated. NULL: no ingest key (never made, or revoked).
ALTER TABLE broadcasts ADD COLUMN ingest_key_hash TEXT;
CREATE UNIQUE INDEX broadcasts_ingest_key ON broadcasts(ingest_key_hash);
