-- Which publish holds a broadcast's RTMP ingest, across API replicas: set when a publish is
-- accepted, renewed while it lasts, cleared when it ends. A claim not renewed for 30 s is
-- abandoned (its replica died) and may be taken.
ALTER TABLE broadcasts ADD COLUMN ingest_claim TEXT;
ALTER TABLE broadcasts ADD COLUMN ingest_claimed_at BIGINT;
