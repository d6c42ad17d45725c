-- 0005: a claim belongs to the caller that took it. `complete` and `release` name the
-- owner, so a holder whose claim expired and was taken over cannot end the new one.
-- Claims taken before this migration have no owner ('') and simply expire.
ALTER TABLE idempotency_keys ADD COLUMN owner text NOT NULL DEFAULT '';
