-- Write model of the catalog service (database catalog_write on the Postgres leader).
-- Idempotent: safe to run again on every start. Write applications depend on these exact
-- column names; walcast's source reads outbox_messages through logical replication.

CREATE TABLE IF NOT EXISTS products (
    id          UUID PRIMARY KEY,
    sku         TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    description TEXT,
    price       NUMERIC(18,2) NOT NULL,
    currency    CHAR(3) NOT NULL,
    is_active   BOOLEAN NOT NULL DEFAULT TRUE,
    created_at  TIMESTAMPTZ DEFAULT now(),
    updated_at  TIMESTAMPTZ DEFAULT now(),
    version     INT NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS outbox_messages (
    id             UUID PRIMARY KEY,
    aggregate_id   UUID NOT NULL,
    event_type     TEXT NOT NULL,
    occurred_at    TIMESTAMPTZ NOT NULL,
    correlation_id UUID,
    payload        JSONB NOT NULL,
    status         TEXT NOT NULL DEFAULT 'Pending',
    attempts       INT NOT NULL DEFAULT 0,
    created_at     TIMESTAMPTZ DEFAULT now(),
    published_at   TIMESTAMPTZ
);

-- The history of one aggregate, in order (support queries, replays, audits).
CREATE INDEX IF NOT EXISTS outbox_messages_aggregate_idx
    ON outbox_messages (aggregate_id, occurred_at);
-- Housekeeping: walcast reads the WAL, not this table, so rows can be deleted once old enough
-- (DELETE ... WHERE created_at < now() - interval '7 days'); this index keeps that cheap.
CREATE INDEX IF NOT EXISTS outbox_messages_created_at_idx
    ON outbox_messages (created_at);
-- A polling fallback (or a re-drive tool) finds unpublished rows without scanning the table.
CREATE INDEX IF NOT EXISTS outbox_messages_pending_idx
    ON outbox_messages (created_at) WHERE status = 'Pending';

-- Idempotency keys of the catalog write API: a retried command returns its first result and
-- writes no second event.
CREATE TABLE IF NOT EXISTS idempotency_keys (
    key           TEXT PRIMARY KEY,
    request_hash  TEXT NOT NULL,
    status_code   INT NOT NULL,
    response_body JSONB NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS idempotency_keys_created_at_idx ON idempotency_keys (created_at);

-- Only the outbox is published; walcast's source creates the publication when missing.
-- REPLICA IDENTITY stays DEFAULT: the router only needs INSERTs, whose new row is complete.
