//! Tests of the embedded store's own machinery: the writer thread, reopening,
//! durable use counts.

use super::*;

/// Opens the store at `path`, waiting for a previous handle's writer
/// thread to let go of the file.
async fn reopen(path: &Path) -> EmbeddedStore {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match EmbeddedStore::open(path, Durability::Full, Clock::system()) {
            Ok(store) => return store,
            Err(e) if std::time::Instant::now() > deadline => panic!("cannot reopen: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_read_waiting_for_a_reopen_does_not_block_the_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let store = reopen(&dir.path().join("state.redb")).await;
    // The writer thread holds the slot while it opens the database
    // again (up to a second while reads in progress let go).
    let slot = store.slot.clone();
    let (locked, is_locked) = std::sync::mpsc::channel();
    let writer = std::thread::spawn(move || {
        let _reopening = slot.db.write().unwrap();
        locked.send(()).unwrap();
        std::thread::sleep(Duration::from_millis(300));
    });
    is_locked.recv().unwrap();
    let ticks = Arc::new(AtomicU64::new(0));
    let ticking = ticks.clone();
    let ticker = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(10)).await;
            ticking.fetch_add(1, Ordering::Relaxed);
        }
    });
    let read = store.get_upload(Uuid::new_v4()).await;
    ticker.abort();
    writer.join().unwrap();
    assert!(matches!(read, Ok(None)), "served once reopened: {read:?}");
    assert!(
        ticks.load(Ordering::Relaxed) >= 5,
        "the runtime stood still while the read waited for the reopen"
    );
    let health = store.health();
    assert!(health.open);
}

#[tokio::test]
async fn token_uses_are_counted_durably_and_lapse() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let now = Clock::system().now_ms();
    let later = now + 60_000;
    let store = reopen(&path).await;
    assert_eq!(store.add_use("t", 1, later).await.unwrap(), 1);
    assert_eq!(store.add_use("t", 1, later).await.unwrap(), 2);
    assert_eq!(store.add_use("t", -1, later).await.unwrap(), 1);
    // A use given back never takes the count below zero.
    assert_eq!(store.add_use("u", -1, later).await.unwrap(), 0);
    // A count that has lapsed starts again.
    assert_eq!(store.add_use("old", 1, now - 1).await.unwrap(), 1);
    assert_eq!(store.add_use("old", 1, now - 1).await.unwrap(), 1);
    drop(store);

    // A restart hands the token no fresh uses.
    let store = reopen(&path).await;
    assert_eq!(store.add_use("t", 1, later).await.unwrap(), 2);
    assert_eq!(store.purge_lapsed_uses(now).await.unwrap(), 1);
    assert_eq!(store.purge_lapsed_uses(now).await.unwrap(), 0);
    assert_eq!(store.add_use("t", 1, later).await.unwrap(), 3);
}

#[tokio::test]
async fn a_change_that_panics_fails_its_batch_not_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let store = reopen(&dir.path().join("state.redb")).await;
    let later = Clock::system().now_ms() + 60_000;
    let panicked = store
        .write(true, |_txn| -> Result<(), StoreError> {
            panic!("a bug in a change")
        })
        .await;
    assert!(panicked.is_err());
    // The writer is alive: the next change lands.
    assert_eq!(store.add_use("t", 1, later).await.unwrap(), 1);
}
