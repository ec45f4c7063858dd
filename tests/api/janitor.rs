//! The janitor: expired uploads and orphaned part files are deleted; live
//! uploads and completed files are kept.

use std::time::Duration;

use crate::helpers::*;

#[tokio::test]
async fn janitor_deletes_expired_uploads_and_orphans_and_keeps_the_rest() {
    bounded(async {
        let app = spawn_app_with(|s| {
            // Long enough that a loaded CI machine does not expire the uploads
            // meant to stay alive; the test moves the clock past it.
            s.upload_ttl = Duration::from_secs(60);
            // Not zero: the janitor also sweeps once at startup, and with no grace
            // it may take the part file of a create in progress for an orphan.
            // The orphan below is backdated instead.
            s.orphan_grace = Duration::from_secs(60);
            // Only the explicit sweep below may run.
            s.janitor_interval = Duration::from_secs(3600);
        })
        .await;
        let data = test_data(3 * 1024, 111);

        let expired = app.create_for(&data, 1024).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        app.send_chunks(&expired, &data, 1024, [0]).await;
        // A completed file outlives the TTL.
        let kept = app.upload_all(&data, 1024).await["id"]
            .as_str()
            .unwrap()
            .to_owned();

        // Past the TTL of the last chunk.
        app.ctx.clock.advance(Duration::from_secs(61));
        assert_error(app.status(&expired).await, 410, "upload_expired").await;
        assert_error(
            app.put_chunk(&expired, 1, data[1024..2048].to_vec()).await,
            410,
            "upload_expired",
        )
        .await;

        // Created just now, with a chunk refreshing it: alive at the sweep.
        let live = app.create_for(&data, 1024).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        app.send_chunks(&live, &data, 1024, [2]).await;
        let orphan = app
            .data_dir
            .join("uploads")
            .join(format!("{}.part", uuid::Uuid::new_v4().simple()));
        std::fs::write(&orphan, b"left over by a crash").unwrap();
        let long_ago = std::time::SystemTime::now() - Duration::from_secs(600);
        std::fs::File::options()
            .write(true)
            .open(&orphan)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
        assert!(app.part_path(&expired).exists());

        let report = tranche::janitor::sweep(&app.ctx).await.expect("sweep");
        assert_eq!(report.expired_uploads, 1, "{report:?}");
        assert_eq!(report.orphans, 1, "{report:?}");

        assert!(
            !app.part_path(&expired).exists(),
            "expired upload's bytes kept"
        );
        assert!(!orphan.exists(), "orphan part file kept");
        let resp = app.status(&expired).await;
        match resp.status().as_u16() {
            404 => assert_error(resp, 404, "upload_not_found").await,
            _ => assert_error(resp, 410, "upload_expired").await,
        };

        assert!(app.part_path(&live).exists(), "live upload's bytes deleted");
        let view = app.status_json(&live).await;
        assert_eq!(view["received_chunks"], 1);
        assert_eq!(view["missing_chunks"], serde_json::json!([0, 1]));

        let body = app.download(&kept).await;
        assert_eq!(body.status(), 200);
        assert_eq!(&body.bytes().await.unwrap()[..], &data[..]);
    })
    .await
}

#[tokio::test]
async fn a_stray_whose_name_is_not_utf8_is_removed_once() {
    use std::os::unix::ffi::OsStrExt;
    bounded(async {
        let app = spawn_app_with(|s| {
            s.orphan_grace = Duration::from_secs(60);
            s.janitor_interval = Duration::from_secs(3600);
        })
        .await;
        // The background janitor sweeps once at start: let it be done, so
        // that this test's sweep is the one that meets the stray.
        let started = std::time::Instant::now();
        while app.ctx.metrics.janitor_sweeps.get() == 0 {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "no sweep at start"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Not ours by name, and not even UTF-8 (a Latin-1 editor backup, say).
        let stray = app
            .data_dir
            .join("uploads")
            .join(std::ffi::OsStr::from_bytes(b"caf\xe9.part~"));
        std::fs::write(&stray, b"left behind").unwrap();
        let long_ago = std::time::SystemTime::now() - Duration::from_secs(600);
        std::fs::File::options()
            .write(true)
            .open(&stray)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();

        let report = tranche::janitor::sweep(&app.ctx).await.expect("sweep");
        assert_eq!(report.orphans, 1, "{report:?}");
        assert_eq!(report.freed_bytes, 11, "{report:?}");
        assert!(!stray.exists(), "the stray was reported removed but kept");

        let again = tranche::janitor::sweep(&app.ctx).await.expect("sweep");
        assert_eq!(again.orphans, 0, "counted again: {again:?}");
    })
    .await
}
