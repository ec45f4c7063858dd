//! The HTTP server around the application, and the JSON bodies of the answers
//! that actix-http's HTTP/1 dispatcher gives on its own: `400` for framing it
//! refuses (`Content-Length` with `Transfer-Encoding`, two `Content-Length`s,
//! a malformed head), `408` for a head that stalls past the header timeout and
//! `431` for a head too large. The dispatcher writes these with an empty body
//! before any tranche code runs, and has no hook to change them, so this module
//! builds the server that actix-web's `HttpServer` would (same workers,
//! timeouts, graceful shutdown, peer address, host) over a socket wrapper that
//! recognises such an answer on its way out and gives it tranche's JSON body.
//!
//! Recognising it without touching response bodies rests on what the
//! dispatcher (actix-http 3.20, `h1/dispatcher.rs`) guarantees:
//! - it writes a response only from its write buffer, and calls the socket's
//!   `poll_flush` only once that buffer is empty, i.e. every byte encoded so
//!   far has gone out;
//! - it encodes a response's body in full (the last chunk included) in the
//!   same poll in which the body stream ends;
//! - one of these answers is the last thing it ever encodes on a connection,
//!   and it is encoded only once no response from the application is left.
//!
//! So every response body the application hands over is counted while it
//! lives (see [`LiveBody`]); a flush while none lives means the next write
//! starts a response. Only that first write is looked at, and only when it is
//! exactly one empty `400`/`408`/`431` head of the form the dispatcher writes
//! (`content-length: 0`, at most `connection` and `date` beside it): tranche's
//! own answers always have a body and a `content-type`. Anything else, and
//! every write in the middle of a response, passes through untouched and
//! unread, so a body, however it is cut into writes and whatever it contains,
//! is never taken for such a head. When the answer shares a write with the
//! tail of an earlier response (pipelining), it is left as it is. A `HEAD`
//! request with bad framing gets the body too (the parser never learnt its
//! method); the connection closes after it, so nothing can be misread.

use std::future::Future;
use std::io;
use std::marker::PhantomData;
use std::net::TcpListener;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use actix_http::body::{BodySize, BoxBody, EitherBody, MessageBody};
use actix_http::{HttpService, Protocol, Request, Response};
use actix_server::ServerBuilder;
use actix_service::{
    apply_fn_factory, fn_service, map_config, IntoServiceFactory, Service, ServiceFactory,
    ServiceFactoryExt as _,
};
use actix_web::dev::{AppConfig, Server};
use actix_web::rt::net::TcpStream;
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Builds and starts the HTTP server like actix-web's `HttpServer` (the
/// methods tranche uses, with the same defaults), with the dispatcher's own
/// error answers in JSON. Set the options before [`FramingServer::listen`].
pub struct FramingServer<F, S, B> {
    factory: F,
    builder: ServerBuilder,
    client_request_timeout: Duration,
    _app: PhantomData<fn() -> (S, B)>,
}

impl<F, I, S, B> FramingServer<F, S, B>
where
    F: Fn() -> I + Send + Clone + 'static,
    I: IntoServiceFactory<S, Request>,
    S: ServiceFactory<Request, Config = AppConfig> + 'static,
    S::Error: Into<actix_web::Error> + 'static,
    S::InitError: std::fmt::Debug,
    S::Response: Into<Response<B>> + 'static,
    <S::Service as Service<Request>>::Future: 'static,
    S::Service: 'static,
    B: MessageBody + 'static,
{
    pub fn new(factory: F) -> Self {
        FramingServer {
            factory,
            builder: ServerBuilder::default(),
            // actix-web's default.
            client_request_timeout: Duration::from_secs(5),
            _app: PhantomData,
        }
    }

    pub fn workers(mut self, n: usize) -> Self {
        self.builder = self.builder.workers(n);
        self
    }

    /// How long a client has to send a request head; past it, a `408`.
    pub fn client_request_timeout(mut self, timeout: Duration) -> Self {
        self.client_request_timeout = timeout;
        self
    }

    /// Seconds that in-flight requests get to finish on a graceful stop.
    pub fn shutdown_timeout(mut self, secs: u64) -> Self {
        self.builder = self.builder.shutdown_timeout(secs);
        self
    }

    /// Leaves SIGINT/SIGTERM to the caller (stop through the server handle).
    pub fn disable_signals(mut self) -> Self {
        self.builder = self.builder.disable_signals();
        self
    }

    /// Serves HTTP/1 on `listener`, as `HttpServer::listen` does.
    pub fn listen(mut self, listener: TcpListener) -> io::Result<Self> {
        let addr = listener.local_addr()?;
        let factory = self.factory.clone();
        let request_timeout = self.client_request_timeout;
        let answers = Arc::new(Answers::new(request_timeout));
        let shutdown = self.builder.graceful_shutdown_signal();
        self.builder =
            self.builder
                .listen(format!("tranche-http-{addr}"), listener, move || {
                    let answers = answers.clone();
                    let shutdown = shutdown.clone();
                    // What `HttpServer::listen` builds (actix-web 4.18), with
                    // its defaults: keep-alive 5 s, disconnect timeout 1 s,
                    // half-closed connections allowed. Two of its calls are
                    // hidden from actix's docs (`__priv_test_new`, the
                    // graceful shutdown signal) but are what actix-test and
                    // `HttpServer` use; Cargo.lock pins them, and a change
                    // would break the build, not the behaviour.
                    let app = map_config(factory().into_factory(), move |()| {
                        // The host `connection_info()` falls back to without
                        // a Host header, as `HttpServer` sets it.
                        AppConfig::__priv_test_new(false, addr.to_string(), addr)
                    })
                    .map_err(|e| Response::from(e.into().error_response()));
                    let http = HttpService::build()
                        .graceful_shutdown_signal(move || {
                            let signal = shutdown.clone();
                            async move { signal.notified().await }
                        })
                        .client_request_timeout(request_timeout)
                        .client_disconnect_timeout(Duration::from_secs(1))
                        .local_addr(addr)
                        // Lets the application's responses reach their
                        // connection's count of live bodies.
                        .on_connect_ext(|io: &FramingIo, ext| {
                            ext.insert(io.live.clone());
                        })
                        .finish(apply_fn_factory(app, count_live::<_, B>));
                    fn_service(move |io: TcpStream| {
                        let peer = io.peer_addr().ok();
                        let io = FramingIo::new(io, answers.clone());
                        async move { Ok((io, Protocol::Http1, peer)) }
                    })
                    .and_then(http)
                })?;
        Ok(self)
    }

    pub fn run(self) -> Server {
        self.builder.run()
    }
}

/// The application's answer to `req`, its body counted for its connection
/// while it lives. An error becomes its response here, as in `HttpServer`.
fn count_live<S, B>(
    req: Request,
    app: &S,
) -> impl Future<Output = Result<Response<LiveBody<EitherBody<B>>>, Response<BoxBody>>>
where
    S: Service<Request, Error = Response<BoxBody>>,
    S::Response: Into<Response<B>>,
    B: MessageBody,
{
    let live = req.conn_data::<LiveBodies>().cloned();
    let fut = app.call(req);
    async move {
        let res = match fut.await {
            Ok(res) => res.into().map_body(|_, body| EitherBody::left(body)),
            Err(res) => res.map_body(|_, body| EitherBody::right(body)),
        };
        Ok(res.map_body(|_, body| LiveBody::new(body, live)))
    }
}

/// How many response bodies of one connection's application are alive: handed
/// to the dispatcher and not yet ended or dropped. At most one in HTTP/1.
#[derive(Clone, Default)]
struct LiveBodies(Rc<std::cell::Cell<usize>>);

impl LiveBodies {
    fn none(&self) -> bool {
        self.0.get() == 0
    }
}

/// One live body; ends when dropped.
struct Alive(LiveBodies);

impl Alive {
    fn new(live: LiveBodies) -> Self {
        live.0.set(live.0.get() + 1);
        Alive(live)
    }
}

impl Drop for Alive {
    fn drop(&mut self) {
        self.0 .0.set(self.0 .0.get() - 1);
    }
}

pin_project_lite::pin_project! {
    /// A response body of the application, counted from the moment it is
    /// made until its stream ends (or fails, or is dropped). The dispatcher
    /// encodes the end in the poll that sees it, so once no body is alive
    /// every byte of the application's responses is in its write buffer.
    pub struct LiveBody<B> {
        #[pin]
        body: B,
        alive: Option<Alive>,
    }
}

impl<B> LiveBody<B> {
    fn new(body: B, live: Option<LiveBodies>) -> Self {
        LiveBody {
            body,
            alive: live.map(Alive::new),
        }
    }
}

impl<B: MessageBody> MessageBody for LiveBody<B> {
    type Error = B::Error;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.project();
        let next = this.body.poll_next(cx);
        if matches!(next, Poll::Ready(None | Some(Err(_)))) {
            *this.alive = None;
        }
        next
    }
}

/// The TCP connection as the dispatcher sees it: reads pass straight through;
/// writes too, but for the first write after a response boundary, which may be
/// one of the dispatcher's empty answers (see the module doc).
pub struct FramingIo {
    inner: TcpStream,
    live: LiveBodies,
    answers: Arc<Answers>,
    /// Every byte encoded so far has been written and no application body is
    /// alive: the next write starts a response.
    at_boundary: bool,
    rewrite: Option<Rewrite>,
}

/// An empty answer being replaced: `bytes` go out instead of the `consumes`
/// bytes the dispatcher asked to write, which are reported written only once
/// all of `bytes` are, since the dispatcher may drop the connection as soon as
/// its own buffer is empty.
struct Rewrite {
    bytes: Vec<u8>,
    written: usize,
    consumes: usize,
}

impl FramingIo {
    fn new(inner: TcpStream, answers: Arc<Answers>) -> Self {
        FramingIo {
            inner,
            live: LiveBodies::default(),
            answers,
            at_boundary: true,
            rewrite: None,
        }
    }

    /// Writes what is left of the replacement; Ready with the dispatcher's
    /// byte count once all of it is out.
    fn poll_rewrite(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let Some(rw) = self.rewrite.as_mut() else {
            return Poll::Ready(Ok(0));
        };
        while rw.written < rw.bytes.len() {
            match ready!(Pin::new(&mut self.inner).poll_write(cx, &rw.bytes[rw.written..]))? {
                0 => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                n => rw.written += n,
            }
        }
        let consumed = rw.consumes;
        self.rewrite = None;
        Poll::Ready(Ok(consumed))
    }
}

impl AsyncRead for FramingIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for FramingIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.rewrite.is_some() {
            // The dispatcher asks again for the same bytes until they are
            // reported written (it never takes bytes back).
            return this.poll_rewrite(cx).map_ok(|n| n.min(buf.len()));
        }
        if std::mem::take(&mut this.at_boundary) && this.live.none() {
            if let Some(bytes) = this.answers.replace(buf) {
                this.rewrite = Some(Rewrite {
                    bytes,
                    written: 0,
                    consumes: buf.len(),
                });
                return this.poll_rewrite(cx);
            }
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_rewrite(cx))?;
        // The dispatcher flushes only once its write buffer is empty.
        if this.live.none() {
            this.at_boundary = true;
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_rewrite(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// The JSON bodies of the dispatcher's answers, rendered once.
struct Answers {
    bad_request: String,
    request_timeout: String,
    too_large: String,
}

/// The longest head the dispatcher writes for these answers, with room to spare;
/// a longer write is not one of them and is not looked at further.
const MAX_EMPTY_HEAD: usize = 256;

impl Answers {
    fn new(header_timeout: Duration) -> Self {
        let body = |code: &str, message: String| {
            serde_json::json!({ "error": code, "message": message }).to_string()
        };
        Answers {
            bad_request: body(
                "bad_request",
                "the request is not valid HTTP/1.1 framing (for example Content-Length together \
                 with Transfer-Encoding, two different Content-Length values, or a malformed \
                 header line); fix the client or proxy that sent it, then retry on a new \
                 connection"
                    .into(),
            ),
            request_timeout: body(
                "request_timeout",
                format!(
                    "the request head did not arrive in full within {} (limits.header_timeout); \
                     send the whole head at once, then retry on a new connection",
                    humantime::format_duration(header_timeout)
                ),
            ),
            too_large: body(
                "request_header_fields_too_large",
                "the request head is too large (too many or too long header fields); send \
                 fewer or shorter headers (large cookies or tokens are the usual cause), then \
                 retry on a new connection"
                    .into(),
            ),
        }
    }

    /// If `head` is exactly one of the dispatcher's empty answers, the same
    /// answer with its JSON body.
    fn replace(&self, head: &[u8]) -> Option<Vec<u8>> {
        if head.len() > MAX_EMPTY_HEAD {
            return None;
        }
        let text = std::str::from_utf8(head).ok()?;
        let mut lines = text.strip_suffix("\r\n\r\n")?.split("\r\n");
        let status_line = lines.next()?;
        let rest = status_line
            .strip_prefix("HTTP/1.1 ")
            .or_else(|| status_line.strip_prefix("HTTP/1.0 "))?;
        let body = match rest.get(..4)? {
            "400 " => &self.bad_request,
            "408 " => &self.request_timeout,
            "431 " => &self.too_large,
            _ => return None,
        };
        let (mut empty, mut connection, mut date) = (false, false, None);
        for line in lines {
            let (name, value) = line.split_once(':')?;
            let value = value.trim();
            let seen = if name.eq_ignore_ascii_case("content-length") && value == "0" {
                std::mem::replace(&mut empty, true)
            } else if name.eq_ignore_ascii_case("connection") {
                std::mem::replace(&mut connection, true)
            } else if name.eq_ignore_ascii_case("date") {
                date.replace(value).is_some()
            } else {
                return None;
            };
            if seen {
                return None;
            }
        }
        if !empty {
            return None;
        }
        // The dispatcher closes the connection after each of these answers
        // (it stops reading after a bad head), so the answer says so.
        let mut out = format!(
            "{status_line}\r\ncontent-length: {}\r\ncontent-type: application/json\r\n\
             connection: close\r\n",
            body.len()
        );
        if let Some(date) = date {
            out.push_str("date: ");
            out.push_str(date);
            out.push_str("\r\n");
        }
        out.push_str("\r\n");
        out.push_str(body);
        Some(out.into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answers() -> Answers {
        Answers::new(Duration::from_secs(10))
    }

    fn json_of(out: &[u8]) -> (String, serde_json::Value) {
        let text = String::from_utf8(out.to_vec()).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(length, body.len(), "{text}");
        assert!(head.contains("\r\ncontent-type: application/json\r\n"));
        (head.to_owned(), serde_json::from_str(body).unwrap())
    }

    #[test]
    fn the_dispatchers_empty_answers_get_their_json() {
        let date = "date: Tue, 15 Nov 1994 08:12:31 GMT";
        for (head, code) in [
            (
                format!("HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n{date}\r\n\r\n"),
                "bad_request",
            ),
            (
                format!("HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\n{date}\r\n\r\n"),
                "request_timeout",
            ),
            (
                format!("HTTP/1.0 431 Request Header Fields Too Large\r\ncontent-length: 0\r\nconnection: close\r\n{date}\r\n\r\n"),
                "request_header_fields_too_large",
            ),
        ] {
            let out = answers().replace(head.as_bytes()).expect(&head);
            let (new_head, json) = json_of(&out);
            assert_eq!(json["error"], code);
            assert!(json["message"].as_str().unwrap().contains("retry"));
            assert!(new_head.starts_with(head.lines().next().unwrap()));
            assert!(new_head.contains(date), "{new_head}");
            assert!(new_head.contains("connection: close"), "{new_head}");
        }
    }

    #[test]
    fn the_timeout_answer_names_the_limit() {
        let out = answers()
            .replace(b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\n\r\n")
            .unwrap();
        let message = json_of(&out).1["message"].as_str().unwrap().to_owned();
        assert!(message.contains("10s") && message.contains("limits.header_timeout"));
    }

    #[test]
    fn anything_else_is_left_alone() {
        let a = answers();
        for head in [
            // Tranche's own answers: a body, a content-type.
            "HTTP/1.1 400 Bad Request\r\ncontent-length: 57\r\ncontent-type: application/json\r\n\r\n",
            "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ncontent-type: text/plain\r\n\r\n",
            // Other statuses, other framing.
            "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n",
            "HTTP/1.1 100 Continue\r\n\r\n",
            "HTTP/1.1 400 Bad Request\r\ntransfer-encoding: chunked\r\n\r\n",
            "HTTP/1.1 400 Bad Request\r\n\r\n",
            "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ncontent-length: 0\r\n\r\n",
            // More after the head: not written alone, so not at a boundary of ours.
            "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
            "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\nx",
            // Cut short.
            "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n",
            "HTTP/2 400\r\ncontent-length: 0\r\n\r\n",
        ] {
            assert!(a.replace(head.as_bytes()).is_none(), "{head:?}");
        }
        let long = format!(
            "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ndate: {}\r\n\r\n",
            "x".repeat(MAX_EMPTY_HEAD)
        );
        assert!(a.replace(long.as_bytes()).is_none());
    }
}
