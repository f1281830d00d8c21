use super::*;

#[test]
fn a_reason_is_one_safe_line_of_bounded_length() {
    assert_eq!(
        reason_line(b"stats.osrelease: longer than 256 bytes\n").as_deref(),
        Some("stats.osrelease: longer than 256 bytes")
    );
    assert_eq!(
        reason_line("a\nb\x1b[2J\u{202e}c\r".as_bytes()).as_deref(),
        Some("a\\nb\\u{1b}[2J\\u{202e}c")
    );
    assert_eq!(reason_line(b" \n"), None);
    // 512 bytes end inside the 256th "é": it is dropped, not mangled.
    let long = format!("a{}", "é".repeat(400));
    let line = reason_line(long.as_bytes()).unwrap();
    assert_eq!(line, format!("a{}…", "é".repeat(255)));
}

#[test]
fn html_error_pages_are_not_taken_as_reasons() {
    assert!(is_textual("text/plain; charset=utf-8"));
    assert!(is_textual("Application/JSON"));
    assert!(!is_textual("text/html"));
}

#[test]
fn certificate_names_are_shown_bare_and_escaped() {
    let presented = [
        "DnsName(\"collector.example\")".to_string(),
        "IpAddress(192.0.2.1)".to_string(),
        "DnsName(\"evil\nline\")".to_string(),
    ];
    assert_eq!(
        certificate_names(&presented),
        "collector.example, 192.0.2.1, evil\\nline"
    );
    assert_eq!(certificate_names(&[]), "no name at all");
}

#[test]
fn retry_after_in_seconds_and_as_a_date() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    assert_eq!(
        parse_retry_after("120", now),
        Some(Duration::from_secs(120))
    );
    let later = httpdate::fmt_http_date(now + Duration::from_secs(90));
    assert_eq!(
        parse_retry_after(&later, now),
        Some(Duration::from_secs(90))
    );
    let earlier = httpdate::fmt_http_date(now - Duration::from_secs(90));
    assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
    assert_eq!(parse_retry_after("soon", now), None);
}
