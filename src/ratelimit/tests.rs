use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::google::protobuf::UInt64Value;

use super::descriptor::{BUCKET, LIMIT, RESPONSE, SHADOW};
use super::store::Memory;
use super::*;

fn descriptor(entries: &[(&str, &str)], hits: Option<u64>) -> RateLimitDescriptor {
    RateLimitDescriptor {
        entries: entries
            .iter()
            .map(|(k, v)| Entry { key: k.to_string(), value: v.to_string() })
            .collect(),
        hits_addend: hits.map(|value| UInt64Value { value }),
        ..Default::default()
    }
}

fn request(descriptors: Vec<RateLimitDescriptor>) -> RateLimitRequest {
    RateLimitRequest { domain: "aixds".into(), descriptors, hits_addend: 0 }
}

fn memory() -> RateLimiter {
    RateLimiter::with_store(Store::Memory(Memory::default()), false)
}

fn codes(r: &RateLimitResponse) -> Vec<i32> {
    r.statuses.iter().map(|s| s.code).collect()
}

const OK: i32 = Code::Ok as i32;
const OVER: i32 = Code::OverLimit as i32;

#[tokio::test]
async fn a_token_budget_refuses_once_spent_and_charges_after_the_response() {
    let limiter = memory();
    let user = |id: &str, extra: &[(&'static str, &'static str)], hits| {
        let mut entries =
            vec![(BUCKET, "BackendTrafficPolicy/ns/p/0"), (LIMIT, "100/Minute"), ("x-user-id", id)];
        entries.extend_from_slice(extra);
        let entries: Vec<(&str, &str)> = entries.iter().map(|(k, v)| (*k, *v)).collect();
        request(vec![descriptor(&entries, Some(hits))])
    };
    let now = 6_000; // the start of a minute
    let check = |r: RateLimitRequest| {
        let limiter = limiter.clone();
        async move { limiter.check(&r, now).await }
    };
    assert_eq!(codes(&check(user("alice", &[], 0)).await.unwrap()), [OK]);
    assert_eq!(codes(&check(user("alice", &[(RESPONSE, "true")], 99)).await.unwrap()), [OK]);
    let before = check(user("alice", &[], 0)).await.unwrap();
    assert_eq!(codes(&before), [OK], "99 of 100 spent: still let in");
    assert_eq!(before.statuses[0].limit_remaining, 1);
    assert_eq!(before.statuses[0].duration_until_reset.unwrap().seconds, 60);
    check(user("alice", &[(RESPONSE, "true")], 30)).await.unwrap();
    let refused = check(user("alice", &[], 0)).await.unwrap();
    assert_eq!(refused.overall_code, OVER);
    assert_eq!(refused.statuses[0].limit_remaining, 0);
    assert_eq!(codes(&check(user("bob", &[], 0)).await.unwrap()), [OK], "bob's own bucket");
    let next_minute = limiter.check(&user("alice", &[], 0), now + 60).await.unwrap();
    assert_eq!(codes(&next_minute), [OK], "a new window");
    let m = render(&limiter);
    assert!(m.contains(r#"aixds_ratelimit_checks_total{bucket="BackendTrafficPolicy/ns/p/0",result="limited"} 1"#), "{m}");
    assert!(
        m.contains(r#"aixds_ratelimit_charged_total{bucket="BackendTrafficPolicy/ns/p/0"} 129"#),
        "{m}"
    );
}

#[tokio::test]
async fn request_counts_refuse_past_the_limit_and_shadow_mode_only_counts() {
    let limiter = memory();
    let req = |shadow: bool| {
        let mut entries = vec![(BUCKET, "b"), (LIMIT, "2/Second")];
        if shadow {
            entries.push((SHADOW, "true"));
        }
        request(vec![descriptor(&entries, None)])
    };
    for expected in [OK, OK, OVER] {
        assert_eq!(limiter.check(&req(false), 10).await.unwrap().overall_code, expected);
    }
    assert_eq!(limiter.check(&req(true), 10).await.unwrap().overall_code, OK, "shadow");
    let m = render(&limiter);
    assert!(m.contains(r#"{bucket="b",result="shadow_limited"} 1"#), "{m}");
}

#[tokio::test]
async fn descriptors_aixds_did_not_shape_are_answered_ok_in_place() {
    let limiter = memory();
    let foreign = descriptor(&[("generic_key", "x")], None);
    let ours = descriptor(&[(BUCKET, "b"), (LIMIT, "0/Hour")], None);
    let r = limiter.check(&request(vec![foreign.clone(), ours]), 10).await.unwrap();
    assert_eq!(codes(&r), [OK, OVER], "statuses line up with the descriptors");
    let r = limiter.check(&request(vec![foreign]), 10).await.unwrap();
    assert_eq!(r.overall_code, OK);
}

#[tokio::test]
async fn an_unreachable_store_fails_open_unless_told_to_fail_closed() {
    // A port nothing listens on: connecting fails at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let redis = Some(redis::RedisConfig::parse(&format!("redis://127.0.0.1:{port}")).unwrap());
    let timeout = std::time::Duration::from_millis(200);
    let open =
        RateLimiter::new(&RateLimitOptions { redis: redis.clone(), timeout, fail_closed: false });
    let spent = request(vec![descriptor(&[(BUCKET, "b"), (LIMIT, "0/Hour")], None)]);
    assert_eq!(open.check(&spent, 10).await.unwrap().overall_code, OK);
    let m = render(&open);
    assert!(m.contains("aixds_ratelimit_failed_open_total 1"), "{m}");
    assert!(m.contains("aixds_ratelimit_store_errors_total 1"), "{m}");
    let closed = RateLimiter::new(&RateLimitOptions { redis, timeout, fail_closed: true });
    let err = closed.check(&spent, 10).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert!(render(&closed).contains("aixds_ratelimit_failed_closed_total 1"));
}

#[test]
fn counter_keys_differ_per_identity_and_window_not_per_limit() {
    let check = |limit: &str, user: &str| {
        descriptor::read(&descriptor(&[(BUCKET, "b"), (LIMIT, limit), ("x-user-id", user)], None))
            .unwrap()
    };
    let key = |c: &Check, now| counter_key("aixds", c, now);
    assert_eq!(key(&check("1/Minute", "a"), 60), key(&check("5/Minute", "a"), 119));
    assert_ne!(key(&check("1/Minute", "a"), 60), key(&check("1/Minute", "a"), 120));
    assert_ne!(key(&check("1/Minute", "a"), 60), key(&check("1/Minute", "b"), 60));
    assert_ne!(key(&check("1/Minute", "a"), 60), key(&check("1/Hour", "a"), 60));
    // Entries are length-prefixed: shifting a boundary changes the key.
    let ab = descriptor::read(&descriptor(&[(BUCKET, "b"), (LIMIT, "1/Hour"), ("k", "ab")], None))
        .unwrap();
    let a_b = descriptor::read(&descriptor(&[(BUCKET, "b"), (LIMIT, "1/Hour"), ("ka", "b")], None))
        .unwrap();
    assert_ne!(key(&ab, 60), key(&a_b, 60));
}

fn render(limiter: &RateLimiter) -> String {
    let mut out = String::new();
    limiter.metrics().render(&mut out);
    out
}
