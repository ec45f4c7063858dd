//! `POST /api/v1/uploads/{id}/complete`: missing chunks, idempotency, races,
//! the whole-file digest check.

use serde_json::{json, Value};

use crate::helpers::*;

const CS: usize = 4096;

async fn start(app: &TestApp, data: &[u8], sha256: Option<String>) -> String {
    let mut req = json!({"filename": "f.bin", "size": data.len(), "chunk_size": CS});
    if let Some(sha) = sha256 {
        req["sha256"] = json!(sha);
    }
    expect_json(app.create(req).await, 201).await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn complete_with_missing_chunks_answers_409_with_the_list() {
    bounded(async {
        let app = spawn_app().await;
        let data = test_data(5 * CS, 51);
        let id = start(&app, &data, None).await;
        app.send_chunks(&id, &data, CS, [0, 2]).await;
        let err = assert_error(app.complete(&id).await, 409, "upload_incomplete").await;
        assert_eq!(err["missing_chunks"], json!([1, 3, 4]));
        // Nothing changed: still uploading, and finishing still works.
        assert_eq!(app.status_json(&id).await["status"], "uploading");
        app.send_chunks(&id, &data, CS, [4, 3, 1]).await;
        assert_eq!(
            expect_json(app.complete(&id).await, 200).await["status"],
            "completed"
        );
    })
    .await
}

#[tokio::test]
async fn complete_twice_answers_200_with_the_same_file() {
    bounded(async {
        let app = spawn_app().await;
        let data = test_data(3 * CS + 7, 52);
        let id = start(&app, &data, None).await;
        app.send_chunks(&id, &data, CS, [3, 2, 1, 0]).await;
        let first = expect_json(app.complete(&id).await, 200).await;
        let second = expect_json(app.complete(&id).await, 200).await;
        assert_eq!(first["status"], "completed");
        assert_eq!(second["status"], "completed");
        assert_eq!(first["file"], second["file"]);
        assert_eq!(first["file"]["sha256"], sha256_hex(&data));
        assert_eq!(first["file"]["size"], data.len() as u64);
    })
    .await
}

#[tokio::test]
async fn racing_completes_both_answer_200_with_the_same_file() {
    bounded(async {
        let app = spawn_app().await;
        // Big enough, and out of order, so that assembly has hashing to do.
        let data = test_data(256 * 1024, 53);
        let id = start(&app, &data, None).await;
        let n = data.len().div_ceil(CS) as u64;
        app.send_chunks(&id, &data, CS, (0..n).rev()).await;
        let (a, b, c) = tokio::join!(app.complete(&id), app.complete(&id), app.complete(&id));
        let mut files = Vec::new();
        for resp in [a, b, c] {
            let body: Value = expect_json(resp, 200).await;
            assert_eq!(body["status"], "completed");
            files.push(body["file"].clone());
        }
        assert!(files.iter().all(|f| *f == files[0]), "{files:?}");
        assert_eq!(files[0]["sha256"], sha256_hex(&data));
        let body = app.download(&id).await.bytes().await.unwrap();
        assert_eq!(sha256_hex(&body), sha256_hex(&data));
    })
    .await
}

#[tokio::test]
async fn wrong_sha256_at_create_fails_the_upload_with_422() {
    bounded(async {
        let app = spawn_app().await;
        let data = test_data(2 * CS + 1, 54);
        let wrong = sha256_hex(b"something else");
        let id = start(&app, &data, Some(wrong.clone())).await;
        app.send_chunks(&id, &data, CS, 0..3).await;
        assert_error(app.complete(&id).await, 422, "digest_mismatch").await;
        let view = app.status_json(&id).await;
        assert_eq!(view["status"], "failed", "{view}");
        assert!(
            view.get("error").is_some_and(|e| !e.is_null()),
            "a failed upload says why: {view}"
        );
        assert!(view.get("file").is_none_or(Value::is_null), "{view}");
        // Completing again gives the same answer, like a retried call would
        // want; chunks for it are refused with 409.
        let again = assert_error(app.complete(&id).await, 422, "digest_mismatch").await;
        assert_eq!(again["expected"], wrong, "{again}");
        assert_eq!(again["actual"], sha256_hex(&data), "{again}");
        let chunk = app.put_chunk(&id, 0, data[..CS].to_vec()).await;
        let refused = assert_error(chunk, 409, "upload_failed").await;
        assert_eq!(refused["cause"], "digest_mismatch", "{refused}");
        // No file may be served for it.
        assert_error(app.download(&id).await, 404, "file_not_found").await;
    })
    .await
}

#[tokio::test]
async fn correct_sha256_at_create_completes_in_either_letter_case() {
    bounded(async {
        // Without dedup: the second create would be answered from the first file.
        let app = spawn_app_with(|s| s.dedup = tranche::config::Dedup::Off).await;
        let data = test_data(2 * CS + 1, 55);
        for sha in [sha256_hex(&data), sha256_hex(&data).to_uppercase()] {
            let id = start(&app, &data, Some(sha)).await;
            app.send_chunks(&id, &data, CS, [2, 0, 1]).await;
            let done = expect_json(app.complete(&id).await, 200).await;
            assert_eq!(done["status"], "completed");
            assert_eq!(done["file"]["sha256"], sha256_hex(&data));
        }
    })
    .await
}

#[tokio::test]
async fn chunks_after_completion_answer_409_upload_completed() {
    bounded(async {
        let app = spawn_app().await;
        let data = test_data(2 * CS, 56);
        let done = app.upload_all(&data, CS as u64).await;
        let id = done["id"].as_str().unwrap();
        let chunks = chunks_of(&data, CS);
        assert_error(
            app.put_chunk(id, 0, chunks[0].clone()).await,
            409,
            "upload_completed",
        )
        .await;
        // The file is untouched.
        let body = app.download(id).await.bytes().await.unwrap();
        assert_eq!(&body[..], &data[..]);
    })
    .await
}

#[tokio::test]
async fn an_assembly_that_died_is_resumed_when_a_client_polls() {
    use tranche::state::{StateStore, Update};
    bounded(async {
        let app = spawn_app().await;
        let data = test_data(3 * CS + 11, 57);
        let id = start(&app, &data, Some(sha256_hex(&data))).await;
        app.send_chunks(&id, &data, CS, [1, 0, 3, 2]).await;
        // What a crash after a 202 leaves behind: the upload marked
        // `assembling` and no task (and no lease) working on it.
        let uuid = uuid::Uuid::parse_str(&id).unwrap();
        assert!(matches!(
            app.ctx.store.begin_assembly(uuid).await.unwrap(),
            Update::Done(_)
        ));
        // A client polling GET, as it does after a 202, must see it finish.
        let mut last = Value::Null;
        for _ in 0..200 {
            last = app.status_json(&id).await;
            if last["status"] == "completed" {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        assert_eq!(last["status"], "completed", "{last}");
        assert_eq!(last["file"]["sha256"], sha256_hex(&data));
        let body = app.download(&id).await.bytes().await.unwrap();
        assert_eq!(&body[..], &data[..]);
    })
    .await
}

#[tokio::test]
async fn the_janitor_resumes_an_assembly_that_died() {
    use tranche::state::{StateStore, Update};
    bounded(async {
        let app =
            spawn_app_with(|s| s.janitor_interval = std::time::Duration::from_secs(3600)).await;
        let data = test_data(3 * CS + 5, 58);
        let id = start(&app, &data, Some(sha256_hex(&data))).await;
        app.send_chunks(&id, &data, CS, [0, 1, 2, 3]).await;
        let uuid = uuid::Uuid::parse_str(&id).unwrap();
        assert!(matches!(
            app.ctx.store.begin_assembly(uuid).await.unwrap(),
            Update::Done(_)
        ));
        // No client polls: only the janitor looks at it (the store is read
        // directly, since a GET would resume it by itself).
        let report = tranche::janitor::sweep(&app.ctx).await.unwrap();
        assert_eq!(report.resumed_assemblies, 1, "{report:?}");
        assert_eq!(
            report.orphans, 0,
            "an assembling upload's part is not an orphan"
        );
        let mut status = None;
        for _ in 0..200 {
            let rec = app.ctx.store.get_upload(uuid).await.unwrap().unwrap();
            status = Some(rec.status);
            if rec.status == tranche::wire::Status::Completed {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        assert_eq!(status, Some(tranche::wire::Status::Completed));
        let body = app.download(&id).await.bytes().await.unwrap();
        assert_eq!(&body[..], &data[..]);
    })
    .await
}
