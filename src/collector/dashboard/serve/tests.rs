use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};

use http_body_util::BodyExt;

use super::*;
use crate::collector::store::StoreError;
use crate::collector::summary::{DayGroups, DayTotals};

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

/// A rollup of one day with one version too small to publish; counts how
/// often it is asked.
#[derive(Default)]
struct OneDay {
    loads: AtomicUsize,
}

impl SummarySource for OneDay {
    fn load_summary(
        &self,
        from_day: i64,
        to_day: i64,
    ) -> impl Future<Output = Result<Summary, StoreError>> + Send {
        self.loads.fetch_add(1, Ordering::SeqCst);
        async move {
            let groups = BTreeMap::from([("8.7.30".to_owned(), 40), ("0.0.1-rare".to_owned(), 2)]);
            Ok(Summary {
                generated_at: 1_764_633_600,
                from_day,
                to_day,
                daily: vec![DayTotals {
                    day: to_day,
                    active: 42,
                    new: 1,
                    gone: 0,
                    reports: 1000,
                }],
                by: BTreeMap::from([(
                    "program_version".to_owned(),
                    vec![DayGroups {
                        day: to_day,
                        groups,
                    }],
                )]),
                ..Summary::default()
            })
        }
    }
}

fn pages(token: Option<&str>) -> (Arc<OneDay>, Pages) {
    let source = Arc::new(OneDay::default());
    (source.clone(), Pages::new(source, 10, token))
}

async fn get(
    pages: &Pages,
    listener: Listener,
    uri: &str,
    auth: Option<&str>,
) -> (StatusCode, HeaderMap, String) {
    let mut headers = HeaderMap::new();
    if let Some(a) = auth {
        headers.insert(AUTHORIZATION, HeaderValue::from_str(a).unwrap());
    }
    let resp = pages
        .respond(listener, &Method::GET, &uri.parse().unwrap(), &headers)
        .await;
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn the_public_listener_serves_the_summary_but_never_the_dashboard() {
    let (_, pages) = pages(Some(TOKEN));
    assert!(!Pages::serves(Listener::Public, "/"));
    assert!(Pages::serves(Listener::Public, SUMMARY_PATH));
    let (status, _, _) = get(&pages, Listener::Public, "/", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Publishable: no token asked, small groups folded.
    let (status, headers, body) = get(&pages, Listener::Public, SUMMARY_PATH, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers[CONTENT_TYPE], "application/json");
    assert!(!body.contains("0.0.1-rare"), "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["by"]["program_version"][0]["groups"]["other"], 2);
    assert_eq!(json["min_group"], 10);
}

#[tokio::test]
async fn the_admin_token_is_required_and_checked() {
    let (source, pages) = pages(Some(TOKEN));
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Bearer 0123456789abcdef0123456789abcde"),
        Some("Basic MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="),
    ] {
        for path in ["/", SUMMARY_PATH] {
            let (status, headers, _) = get(&pages, Listener::Admin, path, auth).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{path} {auth:?}");
            assert_eq!(
                headers[WWW_AUTHENTICATE],
                "Bearer realm=\"surveyd-collector\""
            );
        }
    }
    assert_eq!(
        source.loads.load(Ordering::SeqCst),
        0,
        "loaded before the check"
    );
    let auth = format!("Bearer {TOKEN}");
    let (status, headers, body) = get(&pages, Listener::Admin, "/", Some(&auth)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.starts_with("<!doctype html>"));
    assert!(headers[CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .starts_with("default-src 'none'"));
    // The admin sees the whole picture, unfolded.
    assert!(body.contains("0.0.1-rare"));
}

#[tokio::test]
async fn without_a_token_loopback_admin_is_open() {
    let (_, pages) = pages(None);
    let (status, _, _) = get(&pages, Listener::Admin, "/?range=1y", None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn unknown_paths_ranges_and_methods_are_refused() {
    let (_, pages) = pages(None);
    let (status, _, _) = get(&pages, Listener::Admin, "/api/stats/v1/submit", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    for uri in ["/?range=7d", "/?range=30d&x=1", "/?range"] {
        let (status, _, _) = get(&pages, Listener::Admin, uri, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
    }
    let resp = pages
        .respond(
            Listener::Admin,
            &Method::POST,
            &"/".parse().unwrap(),
            &HeaderMap::new(),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(resp.headers()[ALLOW], "GET, HEAD");
}

#[tokio::test]
async fn repeated_requests_are_served_from_one_load_per_range() {
    let (source, pages) = pages(None);
    for _ in 0..5 {
        get(&pages, Listener::Public, SUMMARY_PATH, None).await;
        get(&pages, Listener::Admin, "/?range=30d", None).await;
    }
    assert_eq!(source.loads.load(Ordering::SeqCst), 1);
    get(
        &pages,
        Listener::Public,
        &format!("{SUMMARY_PATH}?range=all"),
        None,
    )
    .await;
    assert_eq!(source.loads.load(Ordering::SeqCst), 2);
}

/// A rollup whose query never returns (a hung database).
struct Hung;

impl SummarySource for Hung {
    fn load_summary(
        &self,
        _from_day: i64,
        _to_day: i64,
    ) -> impl Future<Output = Result<Summary, StoreError>> + Send {
        std::future::pending()
    }
}

#[tokio::test(start_paused = true)]
async fn a_hung_rollup_query_is_answered_503_in_bounded_time_for_every_waiter() {
    let pages = Pages::new(Arc::new(Hung), 10, None);
    let one = get(&pages, Listener::Public, SUMMARY_PATH, None);
    let two = get(&pages, Listener::Admin, "/", None);
    let ((s1, h1, _), (s2, _, _)) = tokio::join!(one, two);
    assert_eq!(s1, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(s2, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(h1[hyper::header::RETRY_AFTER], "30");
}
