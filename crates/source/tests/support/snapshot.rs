//! Snapshot fixtures: a write database with existing products and no slot yet, the
//! `[snapshot]` section for it, and the progress topic read back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use walcast_config::KafkaProperties;
use walcast_kafka::ClientSettings;
use walcast_kafka::snapshots::{self, SnapshotState};

use super::{TestDb, WRITE_SQL, config_file, ok};

/// The write schema and the publication, `n` products, and no slot: the source creates it,
/// which is when `[snapshot] initial = true` applies.
pub async fn prepare_with_products(db: &TestDb, n: usize) {
    db.exec(WRITE_SQL).await;
    db.exec(&format!(
        "CREATE PUBLICATION {} FOR TABLE public.outbox_messages",
        db.publication
    ))
    .await;
    db.exec(&format!(
        "INSERT INTO products (id, sku, name, description, price, currency, is_active, \
                               created_at, updated_at, version) \
         SELECT md5(i::text)::uuid, 'sku-' || i, 'product ' || i, \
                CASE WHEN i % 3 = 0 THEN NULL ELSE 'it''s ' || i END, (i % 1000) + 0.5, 'EUR', \
                i % 5 <> 0, now() - interval '1 day', now() - i * interval '1 millisecond', \
                1 + i % 7 \
         FROM generate_series(1, {n}) i"
    ))
    .await;
}

/// `[snapshot]` for `public.products` as the catalog ships it, with `chunk_size` and
/// `max_rows_per_sec`.
pub fn products_section(initial: bool, chunk_size: u32, max_rows_per_sec: u32) -> String {
    format!(
        r#"
[snapshot]
initial = {initial}
chunk_size = {chunk_size}
max_rows_per_sec = {max_rows_per_sec}

[[snapshot.tables]]
table = "public.products"
key = "id"
event_type = "ProductSnapshot"
version_column = "version"
occurred_at_column = "updated_at"
rename = {{ id = "productId" }}
"#
    )
}

/// A connector file for `db` in `dir` with [`products_section`].
pub fn products_config(
    dir: &Path,
    db: &TestDb,
    brokers: &str,
    chunk_size: u32,
    max_rows_per_sec: u32,
) -> PathBuf {
    let section = products_section(true, chunk_size, max_rows_per_sec);
    config_file(dir, db, brokers, "", &section)
}

/// The id of the initial snapshot of `db`'s slot.
pub fn initial_id(db: &TestDb) -> String {
    format!("initial-{}", db.slot)
}

/// Every snapshot state on `db`'s progress topic.
pub async fn progress(brokers: &str, db: &TestDb) -> BTreeMap<String, SnapshotState> {
    let properties = KafkaProperties::default();
    let topic = snapshots::default_topic(&db.topic);
    ok(snapshots::read_all(
        ClientSettings::new(brokers, &properties),
        &topic,
        Duration::from_secs(30),
    )
    .await)
}

/// Waits (up to `limit`) for snapshot `id` to be final; its state.
pub async fn wait_final(brokers: &str, db: &TestDb, id: &str, limit: Duration) -> SnapshotState {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let last = progress(brokers, db).await.remove(id);
        if let Some(s) = last.as_ref().filter(|s| s.status.is_final()) {
            return s.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "snapshot {id} not final within {limit:?}: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
