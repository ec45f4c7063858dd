//! `GET /api/v1/uploads/{id}/events`: an upload's progress, completion or
//! failure, and its worker's reports, live as Server-Sent Events. The
//! stream is [`core::follow`]'s; this turns it into `text/event-stream`.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use futures::StreamExt;

use crate::context::AppContext;
use crate::core::{self, Opening, Update};
use crate::http::error::ApiError;
use crate::http::extract::UploadId;
use crate::http::forwarded;
use crate::http::v1::uploads::header_str;

#[tracing::instrument(skip_all, fields(upload_id = %id))]
pub async fn events(
    ctx: web::Data<AppContext>,
    id: UploadId,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    // An id the server did not send counts as none, whatever its bytes.
    let last_event_id = header_str(&req, "last-event-id").ok().flatten();
    let stream = match core::follow(&ctx, *id, last_event_id.as_deref()).await? {
        // What tells an EventSource to stop reconnecting (HTML, "Server-sent
        // events": any answer but 200 with this type fails the connection).
        Opening::Ended => return Ok(HttpResponse::NoContent().finish()),
        Opening::Stream(stream) => stream,
    };
    let origin = forwarded::external_origin(&req, &ctx.settings);
    let body = stream.map(move |update| {
        Ok::<_, std::convert::Infallible>(web::Bytes::from(render(&update, origin.as_deref())))
    });
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/event-stream"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        // nginx would otherwise buffer the stream (proxy_buffering).
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body))
}

/// One SSE message: the event's name, id and the upload object (as
/// `GET /api/v1/uploads/{id}` answers it) on one line; or a comment.
fn render(update: &Update, origin: Option<&str>) -> String {
    match update {
        Update::Heartbeat => ": heartbeat\n\n".to_owned(),
        Update::Event { kind, id, record } => {
            let view = super::uploads::view_at(record, origin);
            let data = serde_json::to_string(&view).expect("the upload object serialises");
            format!("event: {}\nid: {id}\ndata: {data}\n\n", kind.as_str())
        }
    }
}
