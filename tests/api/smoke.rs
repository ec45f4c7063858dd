use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn upload_in_order_and_download() {
    let app = spawn_app().await;
    let data = test_data(300_000, 1);
    let done = app.upload_all(&data, 64 * 1024).await;
    assert_eq!(done["status"], "completed");
    assert_eq!(done["file"]["sha256"], sha256_hex(&data));
    let id = done["id"].as_str().unwrap();
    let body = app.download(id).await.bytes().await.unwrap();
    assert_eq!(&body[..], &data[..]);
    let _ = json!({});
}
