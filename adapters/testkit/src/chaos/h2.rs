//! The HTTP/2 side of [`ChaosUpstream`](super::ChaosUpstream) (prior
//! knowledge), served by hyper: a reset mid-response is a stream reset, a
//! close before the response closes the whole connection.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::{Behaviour, Shared, ANNOUNCED_LENGTH, PARTIAL_BODY, RESET_PAUSE};

type Body = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

pub(super) async fn serve(stream: TcpStream, shared: Arc<Shared>) {
    // A `CloseBeforeResponse` request closes the whole connection.
    let close = Arc::new(Notify::new());
    let service = {
        let close = close.clone();
        hyper::service::service_fn(move |req| answer_h2(shared.clone(), close.clone(), req))
    };
    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = conn => {}
        _ = close.notified() => {}
    }
}

async fn answer_h2(
    shared: Arc<Shared>,
    close: Arc<Notify>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let method = req.method().as_str().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let Some(behaviour) = shared.arrived(&method, &path) else {
        return Ok(respond(shared.health_status(), &[], full("health\n")));
    };
    let name = shared.name.clone();
    let echo = [
        ("x-upstream", name.as_str()),
        ("x-seen-method", method.as_str()),
        ("x-seen-path", path.as_str()),
    ];
    let resp = match behaviour {
        Behaviour::Normal => respond(200, &echo, full(name.clone())),
        Behaviour::Status(s) => respond(s, &echo, full(name.clone())),
        Behaviour::Slow(d) => {
            tokio::time::sleep(d).await;
            respond(200, &echo, full(name.clone()))
        }
        Behaviour::GrpcStatus(code) => {
            // As a gRPC server's handler: it runs once the call's message
            // has been read.
            let _ = req.into_body().collect().await;
            let code = code.to_string();
            let grpc = [
                ("x-upstream", name.as_str()),
                ("content-type", "application/grpc"),
                ("grpc-status", code.as_str()),
            ];
            respond(200, &grpc, full(Bytes::new()))
        }
        Behaviour::Hang => std::future::pending().await,
        Behaviour::CloseBeforeResponse => {
            close.notify_one();
            std::future::pending().await
        }
        Behaviour::ResetMidResponse => {
            use futures_util::StreamExt as _;
            type Item = Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>;
            let data: Item = Ok(Frame::data(Bytes::from_static(&[b'x'; PARTIAL_BODY])));
            let reset = futures_util::stream::once(async {
                tokio::time::sleep(RESET_PAUSE).await;
                Err::<Frame<Bytes>, _>("chaos: reset mid-response".into())
            });
            let frames = futures_util::stream::iter([data]).chain(reset);
            let body = BodyExt::boxed(StreamBody::new(frames));
            let len = ANNOUNCED_LENGTH.to_string();
            respond(
                200,
                &[("x-upstream", name.as_str()), ("content-length", &len)],
                body,
            )
        }
    };
    Ok(resp)
}

fn respond(status: u16, headers: &[(&str, &str)], body: Body) -> Response<Body> {
    let mut resp = Response::new(body);
    *resp.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in headers {
        if let (Ok(n), Ok(v)) = (
            hyper::header::HeaderName::from_bytes(name.as_bytes()),
            hyper::header::HeaderValue::from_str(value),
        ) {
            resp.headers_mut().append(n, v);
        }
    }
    resp
}
