-- Each broadcast's control token, which its media workers require on every control request,
-- sealed like stream keys (XChaCha20-Poly1305, the row id as associated data). Broadcasts made
-- before this column get theirs the next time they are handed to the backend.
ALTER TABLE broadcasts ADD COLUMN control_token TEXT;
