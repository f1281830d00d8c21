//! Benchmark ceiling for benches/collector-bench.sh: the same hyper HTTP/1.1
//! server setup as the collector (tokio multi-thread runtime, keep-alive,
//! header timeout), answering every request with 204 after reading the
//! body, and doing nothing else. Prints "listening on ADDR" like the
//! collector. Usage: bare204 [ADDR] (default 127.0.0.1:0).

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

async fn no_content(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    // Read the body as the collector must, so the comparison is fair.
    let _ = req.into_body().collect().await;
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::NO_CONTENT;
    Ok(resp)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let listener = TcpListener::bind(&addr).await?;
    eprintln!("listening on {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30))
                .max_buf_size(16 * 1024)
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service_fn(no_content))
                .await;
        });
    }
}
