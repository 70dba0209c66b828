//! Start-up checks that need an operator: they fail at once, naming the cause and the fix.

use std::time::Duration;

use crate::support::{
    InProcess, TestDb, config_file, load_config, ok, shared_kafka, wait_until_async,
};

pub(crate) async fn start_error(source: InProcess) -> String {
    let stopped = wait_until_async("the source stopped", Duration::from_secs(60), || async {
        source.is_finished()
    })
    .await
    .is_ok();
    assert!(stopped, "the source should have refused to start");
    match source.stop().await {
        Ok(()) => panic!("started"),
        Err(e) => {
            assert!(!e.is_retryable(), "{e}");
            e.to_string()
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_outbox_column_fails_at_start_naming_it() {
    let kafka = shared_kafka();
    let db = TestDb::new("nocol");
    db.prepare().await;
    let dir = ok(tempfile::tempdir());
    let path = config_file(
        dir.path(),
        &db,
        &kafka.bootstrap(),
        "",
        "[outbox.columns]\nkey = \"aggregate_idx\"\n",
    );
    let e = start_error(InProcess::start(load_config(&path))).await;
    assert!(
        e.contains("no column \"aggregate_idx\"") && e.contains("[outbox.columns] key"),
        "{e}"
    );
    db.drop_slot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_topic_with_other_partitions_is_refused() {
    let kafka = shared_kafka();
    let db = TestDb::new("partitions");
    db.prepare().await;
    ok(kafka.create_topic(&db.topic, 1).await);
    let dir = ok(tempfile::tempdir());
    let path = config_file(dir.path(), &db, &kafka.bootstrap(), "", "");
    let e = start_error(InProcess::start(load_config(&path))).await;
    assert!(
        e.contains("exists with 1 partitions, not 3") && e.contains("[kafka] partitions = 1"),
        "{e}"
    );
    db.drop_slot().await;
}
