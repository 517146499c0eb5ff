-- Deactivated agents keep their row (their name stays in leases' and events' history) but not
-- their token: the hash is replaced by one no token can have.
ALTER TABLE agents ADD COLUMN deactivated_at INTEGER;
