use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::Value;

use super::*;

fn groups(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|&(k, v)| (k.to_owned(), v)).collect()
}

#[test]
fn small_groups_fold_into_other_and_other_stays_when_small() {
    let folded = fold_small_groups(&groups(&[("8.7", 40), ("8.6", 3), ("8.5", 2)]), 10);
    assert_eq!(folded, groups(&[("8.7", 40), ("other", 5)]));
    let existing = fold_small_groups(&groups(&[("a", 12), ("b", 1), ("other", 4)]), 10);
    assert_eq!(existing, groups(&[("a", 12), ("other", 5)]));
    let nothing_small = fold_small_groups(&groups(&[("a", 12)]), 10);
    assert_eq!(nothing_small, groups(&[("a", 12)]));
}

#[test]
fn buckets_have_documented_bounds() {
    assert_eq!(bucket_of(0), 0);
    assert_eq!(bucket_of(1), 1);
    assert_eq!(bucket_of(2), 2);
    assert_eq!(bucket_of(3), 2);
    assert_eq!(bucket_of(4), 3);
    assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    assert_eq!(bucket_bounds(0), (0, Some(1)));
    assert_eq!(bucket_bounds(3), (4, Some(8)));
    assert_eq!(bucket_bounds(BUCKETS - 1), (1 << 31, None));
    for v in [0, 1, 5, 1000, 1 << 31, u64::MAX] {
        let (from, below) = bucket_bounds(bucket_of(v));
        assert!(from <= v && below.is_none_or(|b| v < b), "{v}");
    }
}

#[test]
fn small_buckets_merge_toward_the_median() {
    let mut h = vec![0; BUCKETS];
    h[1] = 3; // 1 user
    h[3] = 20; // 4..8
    h[4] = 30; // 8..16, the median
    h[6] = 4; // 32..64
    h[9] = 2; // 256..512
    let merged = merge_buckets(&h, 10);
    assert_eq!(
        merged,
        vec![
            UsersBucket {
                from: 1,
                below: Some(8),
                installations: 23
            },
            UsersBucket {
                from: 8,
                below: Some(512),
                installations: 36
            },
        ]
    );
    assert_eq!(
        percentile(&merged, 50),
        Some(Bounds {
            from: 8,
            below: Some(512)
        })
    );
    assert_eq!(
        percentile(&merged, 5),
        Some(Bounds {
            from: 1,
            below: Some(8)
        })
    );
}

#[test]
fn a_short_median_bucket_joins_its_smaller_neighbour() {
    let mut h = vec![0; BUCKETS];
    h[1] = 10;
    h[2] = 3; // the median, complete neighbours on both sides
    h[3] = 11;
    let merged = merge_buckets(&h, 10);
    let sizes: Vec<u64> = merged.iter().map(|b| b.installations).collect();
    assert_eq!(sizes, vec![13, 11]);
    assert_eq!((merged[0].from, merged[0].below), (1, Some(4)));
}

#[test]
fn a_day_with_too_few_installations_publishes_no_buckets_and_no_sum() {
    let mut h = vec![0; BUCKETS];
    h[5] = 9;
    let s = Summary {
        users: vec![DayUsers {
            day: 20_000,
            sum: 200,
            histogram: h,
        }],
        ..Summary::default()
    };
    let p = s.publishable(10);
    let u = &p.users[0];
    assert_eq!(u.installations, 9);
    assert_eq!((u.sum, u.p50, u.p95), (None, None, None));
    assert!(u.buckets.is_empty());
}

#[test]
fn wire_forms_of_days_and_hours() {
    assert_eq!(day_text(0), "1970-01-01");
    assert_eq!(day_text(20_424), "2025-12-02");
    assert_eq!(parse_day("2025-12-02"), Ok(20_424));
    assert!(parse_day("2025-12-2").is_err());
    assert!(parse_day("not a day").is_err());
    let h = HourCount {
        hour: 20_424 * 24 + 5,
        reports: 7,
    };
    let json = serde_json::to_string(&h).unwrap();
    assert_eq!(json, r#"{"hour":"2025-12-02T05:00:00Z","reports":7}"#);
    assert_eq!(serde_json::from_str::<HourCount>(&json).unwrap(), h);
}

#[test]
fn ranges_parse_by_their_names() {
    for r in Range::ALL {
        assert_eq!(Range::parse(r.name()), Some(r));
    }
    assert_eq!(Range::parse("7d"), None);
    assert_eq!(Range::Days30.days(100), (71, 100));
}

/// Keys of the document itself (not the values inside `groups`, which are
/// whatever the installations reported).
fn schema_keys(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                out.push(k.clone());
                if k != "groups" {
                    schema_keys(v, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| schema_keys(v, out)),
        _ => {}
    }
}

fn names_an_extreme(key: &str) -> bool {
    key != "min_group"
        && key.split('_').any(|word| {
            ["min", "max", "minimum", "maximum", "largest", "smallest"]
                .contains(&word.to_ascii_lowercase().as_str())
        })
}

fn arb_groups() -> impl Strategy<Value = BTreeMap<String, u64>> {
    proptest::collection::btree_map("[a-z0-9.]{1,6}", 0u64..40, 0..12)
}

fn arb_summary() -> impl Strategy<Value = Summary> {
    let day = (
        arb_groups(),
        arb_groups(),
        proptest::collection::vec(
            prop_oneof![3 => Just(0u64), 2 => 0u64..15, 1 => 0u64..200],
            BUCKETS,
        ),
        0u64..100_000,
    );
    proptest::collection::vec(day, 1..6).prop_map(|days| {
        let mut s = Summary {
            generated_at: 1_764_633_600,
            from_day: 20_000,
            to_day: 20_000 + days.len() as i64 - 1,
            min_group: DEFAULT_MIN_GROUP,
            ..Summary::default()
        };
        for (i, (versions, os, histogram, sum)) in days.into_iter().enumerate() {
            let day = 20_000 + i as i64;
            let active: u64 = versions.values().sum();
            s.daily.push(DayTotals {
                day,
                active,
                new: active / 3,
                gone: active / 5,
                reports: active * 24,
            });
            for (dim, groups) in [("program_version", versions), ("osrelease", os)] {
                s.by.entry(dim.to_owned())
                    .or_default()
                    .push(DayGroups { day, groups });
            }
            s.users.push(DayUsers {
                day,
                sum,
                histogram,
            });
            s.reports_per_hour.push(HourCount {
                hour: day * 24,
                reports: active,
            });
        }
        s
    })
}

proptest! {
    #[test]
    fn no_group_below_min_group_survives_and_totals_are_kept(
        s in arb_summary(),
        min_group in 1u64..30,
    ) {
        let p = s.publishable(min_group);
        for (dim, days) in &p.by {
            for (before, after) in s.by[dim].iter().zip(days) {
                for (value, &n) in &after.groups {
                    prop_assert!(
                        value == OTHER || n >= min_group,
                        "{dim} {value} = {n} published with min_group {min_group}"
                    );
                }
                prop_assert_eq!(
                    after.groups.values().sum::<u64>(),
                    before.groups.values().sum::<u64>()
                );
            }
        }
        for (before, after) in s.users.iter().zip(&p.users) {
            let total: u64 = before.histogram.iter().sum();
            prop_assert_eq!(after.installations, total);
            prop_assert_eq!(after.sum.is_some(), total >= min_group);
            if total >= min_group {
                prop_assert_eq!(
                    after.buckets.iter().map(|b| b.installations).sum::<u64>(),
                    total
                );
            } else {
                prop_assert!(after.buckets.is_empty());
            }
            for b in &after.buckets {
                prop_assert!(b.installations >= min_group, "{b:?} below {min_group}");
            }
            for pair in after.buckets.windows(2) {
                prop_assert!(pair[0].below.is_some_and(|b| b <= pair[1].from), "{pair:?}");
            }
        }
    }

    #[test]
    fn percentiles_are_the_bounds_of_the_bucket_holding_them(s in arb_summary()) {
        let p = s.publishable(1);
        for (before, after) in s.users.iter().zip(&p.users) {
            let total: u64 = before.histogram.iter().sum();
            let Some(p50) = after.p50 else {
                prop_assert_eq!(total, 0);
                continue;
            };
            // With min_group 1 nothing merges: the median's own bucket.
            let mut seen = 0;
            let k = before.histogram.iter().position(|&n| {
                seen += n;
                seen * 2 >= total
            }).unwrap();
            let (from, below) = bucket_bounds(k);
            prop_assert_eq!(p50, Bounds { from, below });
            prop_assert!(after.p95.unwrap().from >= p50.from);
        }
    }

    #[test]
    fn published_json_names_no_minimum_or_maximum(
        s in arb_summary(),
        min_group in 1u64..30,
    ) {
        let json = serde_json::to_value(s.publishable(min_group)).unwrap();
        let mut keys = Vec::new();
        schema_keys(&json, &mut keys);
        for key in keys {
            prop_assert!(!names_an_extreme(&key), "key {key:?} in the published JSON");
        }
    }

    #[test]
    fn published_json_reads_back_equal(s in arb_summary(), min_group in 1u64..30) {
        let p = s.publishable(min_group);
        let json = serde_json::to_string(&p).unwrap();
        prop_assert_eq!(serde_json::from_str::<Published>(&json).unwrap(), p);
    }
}

const SCHEMA: &str = include_str!("../../../docs/summary.schema.json");
const SCHEMA_DOC: &str = include_str!("../../../docs/summary.md");

/// Checks `value` against the part of JSON Schema that
/// docs/summary.schema.json uses: type, const, minimum, required,
/// properties, additionalProperties, items, $ref into $defs, and the
/// day and time formats. Returns the first mismatch with its JSON path.
fn conforms(root: &Value, schema: &Value, value: &Value, path: &str) -> Result<(), String> {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = r.strip_prefix("#/$defs/").expect("local $ref");
        return conforms(root, &root["$defs"][name], value, path);
    }
    if let Some(types) = schema.get("type") {
        let types: Vec<&str> = match types {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => panic!("bad type in schema at {path}"),
        };
        let actual = match value {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(n) if n.is_u64() || n.is_i64() => "integer",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        };
        if !types.contains(&actual) {
            return Err(format!("{path}: {actual}, schema wants {types:?}"));
        }
    }
    if let Some(c) = schema.get("const") {
        if c != value {
            return Err(format!("{path}: {value}, schema wants {c}"));
        }
    }
    if let (Some(min), Some(n)) = (
        schema.get("minimum").and_then(Value::as_i64),
        value.as_i64(),
    ) {
        if n < min {
            return Err(format!("{path}: {n} below {min}"));
        }
    }
    if let (Some(pattern), Some(text)) = (
        schema.get("pattern").and_then(Value::as_str),
        value.as_str(),
    ) {
        let ok = if pattern.contains('T') {
            text.len() == 20 && humantime::parse_rfc3339(text).is_ok()
        } else {
            parse_day(text).is_ok()
        };
        if !ok {
            return Err(format!("{path}: {text:?} does not match {pattern}"));
        }
    }
    match value {
        Value::Object(map) => {
            for key in schema["required"].as_array().into_iter().flatten() {
                let key = key.as_str().unwrap();
                if !map.contains_key(key) {
                    return Err(format!("{path}: required key {key} missing"));
                }
            }
            for (key, v) in map {
                let sub = match (
                    schema["properties"].get(key),
                    schema.get("additionalProperties"),
                ) {
                    (Some(s), _) => s,
                    (None, Some(Value::Bool(false))) => {
                        return Err(format!("{path}: key {key} is not in the schema"))
                    }
                    (None, Some(s)) => s,
                    (None, None) => continue,
                };
                conforms(root, sub, v, &format!("{path}.{key}"))?;
            }
        }
        Value::Array(items) => {
            if let Some(sub) = schema.get("items") {
                for (i, v) in items.iter().enumerate() {
                    conforms(root, sub, v, &format!("{path}[{i}]"))?;
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// Every property name the schema defines.
fn schema_property_names(schema: &Value, out: &mut std::collections::BTreeSet<String>) {
    match schema {
        Value::Object(map) => {
            if let Some(Value::Object(props)) = map.get("properties") {
                out.extend(props.keys().cloned());
            }
            map.values().for_each(|v| schema_property_names(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| schema_property_names(v, out)),
        _ => {}
    }
}

#[test]
fn the_schema_and_the_document_describe_every_published_key() {
    let schema: Value = serde_json::from_str(SCHEMA).unwrap();
    let mut names = std::collections::BTreeSet::new();
    schema_property_names(&schema, &mut names);
    for name in &names {
        assert!(
            SCHEMA_DOC.contains(&format!("`{name}`")),
            "docs/summary.md does not describe `{name}`"
        );
    }
    for dimension in DIMENSIONS {
        assert!(
            SCHEMA_DOC.contains(&format!("`{dimension}`")),
            "{dimension}"
        );
    }
}

proptest! {
    #[test]
    fn published_json_conforms_to_the_schema(s in arb_summary(), min_group in 1u64..30) {
        let schema: Value = serde_json::from_str(SCHEMA).unwrap();
        let json = serde_json::to_value(s.publishable(min_group)).unwrap();
        if let Err(e) = conforms(&schema, &schema, &json, "$") {
            prop_assert!(false, "{e}\n{json}");
        }
    }
}

#[test]
fn a_json_missing_a_documented_key_does_not_conform() {
    let schema: Value = serde_json::from_str(SCHEMA).unwrap();
    let mut json = serde_json::to_value(Summary::default().publishable(10)).unwrap();
    assert_eq!(conforms(&schema, &schema, &json, "$"), Ok(()));
    json.as_object_mut().unwrap().remove("reports_per_hour");
    assert!(conforms(&schema, &schema, &json, "$").is_err());
    json["reports_per_hour"] = Value::Array(vec![]);
    json["max_users"] = Value::from(5);
    assert!(conforms(&schema, &schema, &json, "$").is_err());
}
