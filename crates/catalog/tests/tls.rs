//! The catalog's pools speak TLS by the DSN's `sslmode`: against a cluster that accepts only
//! TLS with a password, `sslmode=verify-full` with the issuing CA connects, and a trust store
//! without that CA is refused with the reason.

use walcast_catalog::{PoolOptions, WriteApi};
use walcast_postgres::Dsn;
use walcast_telemetry::metrics::Registry;
use walcast_testkit::Postgres;

use crate::support::write_db;

fn dsn(text: &str) -> Dsn {
    Dsn::parse(text).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_write_pool_verifies_the_server_certificate() {
    let pg = Postgres::builder()
        .tls_scram("catalog_tls", "tls pw")
        .start()
        .unwrap();
    // The kit reaches the cluster over its Unix socket; the app must come in over TLS.
    let local = write_db(&pg);
    let db = local.rsplit("dbname=").next().unwrap().to_owned();
    let secure = pg.secure_dsn(&db).unwrap();
    assert!(secure.contains("sslmode=verify-full"), "{secure}");

    let api = WriteApi::new(&dsn(&secure), PoolOptions::default(), &Registry::default()).unwrap();
    api.check().await.unwrap();
    let tls = pg
        .psql(
            &db,
            "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
             WHERE ssl AND application_name = 'walcast-catalog'",
        )
        .unwrap();
    assert_ne!(tls.trim(), "0", "the pooled connection is not TLS: {tls}");

    // The system trust store does not hold the throwaway CA that signed the certificate.
    let wrong_ca = secure.replace(
        &format!("sslrootcert={}", pg.ca_file().unwrap().display()),
        "sslrootcert=system",
    );
    assert_ne!(wrong_ca, secure);
    let api = WriteApi::new(
        &dsn(&wrong_ca),
        PoolOptions::default(),
        &Registry::default(),
    )
    .unwrap();
    let e = api
        .check()
        .await
        .err()
        .map(|e| e.chain())
        .unwrap_or_default();
    assert!(e.contains("did not verify"), "{e}");
    assert!(e.contains("sslrootcert"), "names the fix: {e}");
    assert!(!e.contains("tls pw"), "the password is masked: {e}");
}
