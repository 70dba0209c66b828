-- Read model (database catalog_read on the read DB and on every replica). Idempotent.
-- walcast's sink projects catalog events into catalog_product_read; the other tables are the
-- sink's bookkeeping, written in the same transaction as the rows they account for.

CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TABLE IF NOT EXISTS catalog_product_read (
    product_id  UUID PRIMARY KEY,
    sku         TEXT NOT NULL,
    name        TEXT NOT NULL,
    description TEXT,
    price       NUMERIC(18,2) NOT NULL,
    currency    CHAR(3) NOT NULL,
    is_active   BOOLEAN NOT NULL,
    search_text TEXT NOT NULL,
    updated_at  TIMESTAMPTZ DEFAULT now()
);
-- Version guard of the projection: an event older than what is applied never overwrites it
-- (aggregate version first, then occurred_at).
-- The sink runs this file again after a failed batch, while the query API reads the table.
-- ALTER TABLE takes its lock before it looks (ADD COLUMN IF NOT EXISTS: ACCESS EXCLUSIVE,
-- which queues every read behind it), so each ALTER runs only when the catalog says the
-- change is missing: when the schema is there, re-running this file locks nothing.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_attribute
                   WHERE attrelid = 'catalog_product_read'::regclass
                     AND attname = 'version' AND NOT attisdropped) THEN
        ALTER TABLE catalog_product_read ADD COLUMN IF NOT EXISTS version INT NOT NULL DEFAULT 0;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_attribute
                   WHERE attrelid = 'catalog_product_read'::regclass
                     AND attname = 'occurred_at' AND NOT attisdropped) THEN
        ALTER TABLE catalog_product_read ADD COLUMN IF NOT EXISTS occurred_at TIMESTAMPTZ;
    END IF;
    -- Room on each page for the new version of a row: price changes touch no indexed column,
    -- so they become HOT updates that skip every index (the trigram index above all).
    IF NOT EXISTS (SELECT 1 FROM pg_class
                   WHERE oid = 'catalog_product_read'::regclass
                     AND 'fillfactor=70' = ANY(coalesce(reloptions, '{}'))) THEN
        ALTER TABLE catalog_product_read SET (fillfactor = 70);
    END IF;
END
$$;

-- Product search: substring / fuzzy match on search_text (lower-cased sku, name, description).
CREATE INDEX IF NOT EXISTS catalog_product_read_search_trgm_idx
    ON catalog_product_read USING gin (search_text gin_trgm_ops);
-- GIN's fast update collects new entries in a pending list and merges it in bulk (cheaper per
-- row than indexing each at once), but the one sink batch that overflows the list pays for
-- the whole merge: with the default 4 MB limit, a pause of hundreds of milliseconds on that
-- replica. A 512 kB list keeps the bulk merge and makes each pause an eighth as long.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_class
                   WHERE oid = 'catalog_product_read_search_trgm_idx'::regclass
                     AND reloptions @> '{fastupdate=on,gin_pending_list_limit=512}') THEN
        ALTER INDEX catalog_product_read_search_trgm_idx
            SET (fastupdate = on, gin_pending_list_limit = 512);
    END IF;
END
$$;
CREATE INDEX IF NOT EXISTS catalog_product_read_sku_idx ON catalog_product_read (sku);
CREATE INDEX IF NOT EXISTS catalog_product_read_active_name_idx
    ON catalog_product_read (is_active, name);

-- Every event applied to this target, once: a redelivered event id is skipped.
CREATE TABLE IF NOT EXISTS processed_events (
    event_id     UUID PRIMARY KEY,
    event_type   TEXT NOT NULL,
    processed_at TIMESTAMPTZ DEFAULT now()
);
CREATE INDEX IF NOT EXISTS processed_events_processed_at_idx ON processed_events (processed_at);

-- Deleted aggregates: a late ProductUpdated for a deleted product must not resurrect it.
CREATE TABLE IF NOT EXISTS walcast_tombstones (
    table_name  TEXT NOT NULL,
    key         TEXT NOT NULL,
    version     INT NOT NULL,
    occurred_at TIMESTAMPTZ,
    deleted_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (table_name, key)
);
-- Pruning finds tombstones older than the window ([prune] tombstone_window_secs) by this.
CREATE INDEX IF NOT EXISTS walcast_tombstones_deleted_at_idx ON walcast_tombstones (deleted_at);

-- Changes this target cannot apply yet, and the dead letters that hold a key (the sink's
-- bookkeeping; see docs/delivery-guarantees.md, "Held changes"). A change row (dead_letter =
-- false) is an update whose row does not exist yet, or any change of a key held behind one of
-- its dead letters; it applies, in position order, when its row lands or the hold is released
-- (the dead letter replayed, or `walcast dlq discard`). A dead-letter row holds its key.
CREATE TABLE IF NOT EXISTS walcast_held (
    table_name  TEXT NOT NULL,
    key         TEXT NOT NULL,
    event_id    UUID NOT NULL,
    event_type  TEXT NOT NULL,
    dead_letter BOOLEAN NOT NULL,
    version     BIGINT NOT NULL,
    occurred_us BIGINT,
    change      JSONB,
    error       TEXT,
    held_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (table_name, key, event_id)
);

-- Kafka progress of this target, stored with the rows (exactly-once effects per target): on
-- start and on rebalance the sink seeks each partition to next_offset.
CREATE TABLE IF NOT EXISTS walcast_offsets (
    consumer_group TEXT NOT NULL,
    topic          TEXT NOT NULL,
    partition      INT NOT NULL,
    next_offset    BIGINT NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition)
);

-- Source position applied on this target (from the walcast.commit_lsn header), for lag and
-- "read your writes" checks by the query API.
CREATE TABLE IF NOT EXISTS walcast_applied_lsn (
    consumer_group TEXT PRIMARY KEY,
    commit_lsn     PG_LSN NOT NULL,
    applied_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The partition count of the topic this target consumes, recorded when it first consumed it.
-- A topic that gains partitions moves keys to other partitions; the sink refuses to consume
-- the new ones until an operator records the new count here (docs/operations.md).
CREATE TABLE IF NOT EXISTS walcast_topic_partitions (
    consumer_group TEXT NOT NULL,
    topic          TEXT NOT NULL,
    partitions     INT NOT NULL,
    recorded_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic)
);

-- A rebuild of this target is under way (`walcast sink rebuild`): the row is committed before
-- the rebuild empties the target and deleted in the transaction that writes its final applied
-- LSN. While it exists the sink writes no applied LSN for the group, and the query API does not
-- route to this database: a half-built replica never answers queries (docs/operations.md).
CREATE TABLE IF NOT EXISTS walcast_rebuilding (
    consumer_group TEXT PRIMARY KEY,
    mode           TEXT NOT NULL,
    started_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);
