//! The read side of the collector over HTTP: `GET /` (the dashboard, admin
//! listener only) and `GET /api/stats/v1/summary.json` (the publishable
//! summary, on both listeners). The admin listener checks the bearer token
//! when one is set. Summaries are cached per range for a minute and loaded
//! one at a time, so however often the public port asks, the database sees
//! at most one query per range a minute.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::Full;
use hyper::header::{
    HeaderMap, HeaderValue, ACCESS_CONTROL_ALLOW_ORIGIN, ALLOW, AUTHORIZATION, CACHE_CONTROL,
    CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, WWW_AUTHENTICATE,
    X_CONTENT_TYPE_OPTIONS,
};
use hyper::{Method, Response, StatusCode, Uri};
use sha2::Sha256;
use tokio::sync::Mutex;

use super::render;
use crate::collector::store::StoreError;
use crate::collector::summary::{day_of, now, Range, Summary, SummarySource};

pub const SUMMARY_PATH: &str = "/api/stats/v1/summary.json";
/// A summary this fresh is served again instead of asking the database.
const CACHE_FOR: Duration = Duration::from_secs(60);
/// A request that has not got its summary by then (waiting for another
/// request's query included) is answered 503; a later one tries again.
const LOAD_TIMEOUT: Duration = Duration::from_secs(20);
/// What the page may load and run: its own inline style, nothing else.
const PAGE_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; \
form-action 'none'; frame-ancestors 'none'";

type Body = Full<Bytes>;

/// Which listener a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Public,
    Admin,
}

/// The object-safe form of [`SummarySource`] that the listeners hold.
trait Loader: Send + Sync {
    fn load(&self, from_day: i64, to_day: i64)
        -> Pin<Box<dyn Future<Output = Loaded> + Send + '_>>;
}

type Loaded = Result<Summary, StoreError>;

impl<S: SummarySource + Send + Sync> Loader for S {
    fn load(
        &self,
        from_day: i64,
        to_day: i64,
    ) -> Pin<Box<dyn Future<Output = Loaded> + Send + '_>> {
        Box::pin(self.load_summary(from_day, to_day))
    }
}

pub struct Pages {
    source: Arc<dyn Loader>,
    min_group: u64,
    token: Option<Token>,
    cache: Mutex<HashMap<&'static str, (Instant, Arc<Summary>)>>,
}

/// The admin token, kept as a MAC under a key of this process: a presented
/// token is MACed the same way and compared in constant time, whatever its
/// length.
struct Token {
    key: [u8; 32],
    expected: Vec<u8>,
}

impl Token {
    fn new(token: &str) -> Token {
        let key: [u8; 32] = rand::random();
        let expected = Token::mac(&key, token.as_bytes())
            .finalize()
            .into_bytes()
            .to_vec();
        Token { key, expected }
    }

    fn mac(key: &[u8; 32], token: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(token);
        mac
    }

    fn admits(&self, headers: &HeaderMap) -> bool {
        let Some(presented) = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
        else {
            return false;
        };
        Token::mac(&self.key, presented.as_bytes())
            .verify_slice(&self.expected)
            .is_ok()
    }
}

impl Pages {
    pub fn new(
        source: Arc<impl SummarySource + Send + Sync + 'static>,
        min_group: u64,
        token: Option<&str>,
    ) -> Pages {
        Pages {
            source,
            min_group,
            token: token.map(Token::new),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `path` is served by [`Pages::respond`] on `listener`; the
    /// public listener keeps everything else for ingest.
    pub fn serves(listener: Listener, path: &str) -> bool {
        listener == Listener::Admin || path == SUMMARY_PATH
    }

    pub async fn respond(
        &self,
        listener: Listener,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Response<Body> {
        let page = match uri.path() {
            "/" if listener == Listener::Admin => Page::Dashboard,
            SUMMARY_PATH => Page::Summary,
            _ => return plain(StatusCode::NOT_FOUND, "not found"),
        };
        if listener == Listener::Admin {
            if let Some(token) = &self.token {
                if !token.admits(headers) {
                    let mut resp = plain(
                        StatusCode::UNAUTHORIZED,
                        "send the admin token as Authorization: Bearer TOKEN",
                    );
                    resp.headers_mut().insert(
                        WWW_AUTHENTICATE,
                        HeaderValue::from_static("Bearer realm=\"surveyd-collector\""),
                    );
                    return resp;
                }
            }
        }
        if method != Method::GET && method != Method::HEAD {
            let mut resp = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET is allowed here");
            resp.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return resp;
        }
        let Some(range) = range_of(uri) else {
            return plain(StatusCode::BAD_REQUEST, "range must be one of 30d, 1y, all");
        };
        let loaded = tokio::time::timeout(LOAD_TIMEOUT, self.summary(range))
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "no summary within {LOAD_TIMEOUT:?} (the rollup query is slow or hung)"
                ))
            });
        let summary = match loaded {
            Ok(s) => s,
            Err(why) => {
                tracing::warn!("summary for {} not available: {why}", range.name());
                let mut resp = plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the summary could not be read; try again later",
                );
                resp.headers_mut()
                    .insert(hyper::header::RETRY_AFTER, HeaderValue::from_static("30"));
                return resp;
            }
        };
        match page {
            Page::Summary => {
                let json = serde_json::to_vec(&summary.publishable(self.min_group))
                    .expect("the published summary serialises");
                let mut resp = ok(json, "application/json");
                let h = resp.headers_mut();
                h.insert(
                    CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=60"),
                );
                h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
                resp
            }
            Page::Dashboard => {
                let rendered = tokio::task::spawn_blocking(move || render(&summary, range)).await;
                match rendered {
                    Ok(Ok(html)) => {
                        let mut resp = ok(html.into_bytes(), "text/html; charset=utf-8");
                        let h = resp.headers_mut();
                        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
                        h.insert(
                            CONTENT_SECURITY_POLICY,
                            HeaderValue::from_static(PAGE_POLICY),
                        );
                        h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
                        resp
                    }
                    Ok(Err(e)) => {
                        tracing::error!("{e}");
                        plain(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "the page could not be drawn",
                        )
                    }
                    Err(e) => {
                        tracing::error!("drawing the dashboard failed: {e}");
                        plain(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "the page could not be drawn",
                        )
                    }
                }
            }
        }
    }

    /// The summary for `range` ending today, from the cache while fresh.
    /// The lock is held while loading: concurrent requests wait for one
    /// query instead of each starting their own.
    async fn summary(&self, range: Range) -> Result<Arc<Summary>, String> {
        let mut cache = self.cache.lock().await;
        if let Some((at, summary)) = cache.get(range.name()) {
            if at.elapsed() < CACHE_FOR {
                return Ok(summary.clone());
            }
        }
        let (from, to) = range.days(day_of(now() as i64));
        let loaded = self
            .source
            .load(from, to)
            .await
            .map_err(|e| e.to_string())?;
        let loaded = Arc::new(loaded);
        cache.insert(range.name(), (Instant::now(), loaded.clone()));
        Ok(loaded)
    }
}

enum Page {
    Dashboard,
    Summary,
}

/// `?range=` (default 30d); None for anything else.
fn range_of(uri: &Uri) -> Option<Range> {
    let Some(query) = uri.query() else {
        return Some(Range::default());
    };
    let mut range = Range::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("range", value)) => range = Range::parse(value)?,
            _ => return None,
        }
    }
    Some(range)
}

fn ok(body: Vec<u8>, content_type: &'static str) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    resp
}

fn plain(status: StatusCode, reason: &str) -> Response<Body> {
    let mut resp = ok(
        format!("{reason}\n").into_bytes(),
        "text/plain; charset=utf-8",
    );
    *resp.status_mut() = status;
    resp
}

#[cfg(test)]
mod tests;
