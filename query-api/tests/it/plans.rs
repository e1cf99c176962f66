//! Plans (docs/limits.md, "Plans"): a plan written and assigned through one
//! replica puts its limits on every organization on it, as seen by the
//! other replica; a plan change moves all of them in one step (one plan
//! version), and an unassignment takes them off. Also the `/v1/plans`
//! pages and the contract's shape.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::replicas::{valkey_url, Pair};

/// The messages check of `org` on replica `r` (one message).
async fn messages_check(pair: &Pair, r: usize, org: Uuid) -> Value {
    let (s, v) = pair.check(r, json!({"tokens": 1, "usage_type": "messages", "organization_id": org})).await;
    assert_eq!(s, 200, "{v}");
    v
}

/// Waits until `pred` holds for the messages check of every org on replica `r`
/// (normally within one refresh; the deadline leaves room for a busy machine).
async fn until_every_org(pair: &Pair, r: usize, orgs: &[Uuid], what: &str, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut answers = Vec::new();
        for o in orgs {
            answers.push(messages_check(pair, r, *o).await);
        }
        if answers.iter().all(&pred) {
            return answers;
        }
        assert!(Instant::now() < deadline, "replica {r} never showed {what}: {answers:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_change_moves_every_organization_on_it_on_the_other_replica() {
    let pair = Pair::start("plans", &valkey_url(), &[]).await;
    let r0 = &pair.replicas[0];

    // A plan with the contract's shortcuts and one template of its own.
    let (s, plan) = pair
        .send(
            r0,
            Method::POST,
            "/v1/plans",
            Some(json!({"name": "Pro Plan", "description": "For growing teams", "features": ["API Access"],
                "max_messages_per_month": 100, "max_cost_usd_per_month": "12.5", "price_monthly": 29.99,
                "limits": [{"metric": "tokens", "period": "day", "max_value": 1000}]})),
        )
        .await;
    assert_eq!(s, 201, "{plan}");
    let plan_id: Uuid = plan["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(plan["version"], 1);
    assert_eq!(plan["max_messages_per_month"], 100);
    assert_eq!(plan["max_cost_usd_per_month"], 12.5);
    assert_eq!(plan["max_tokens_per_month"], Value::Null);
    assert_eq!(plan["price_monthly"], Value::Null, "billing is not ours");
    assert_eq!(plan["stripe_price_id_monthly"], Value::Null);
    assert_eq!(plan["currency"], "USD");
    assert_eq!(plan["limits"].as_array().unwrap().len(), 3);

    // Three organizations on it, assigned through replica 0.
    let orgs: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    for o in &orgs {
        let (s, v) = pair.send(r0, Method::PUT, &format!("/v1/organizations/{o}/plan"), Some(json!({"plan_id": plan_id}))).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["plan_name"], "Pro Plan");
        assert_eq!(v["version"], 1);
    }
    // An organization on no plan stays unlimited.
    let outsider = Uuid::new_v4();

    // Replica 1 enforces the plan's limits on all three.
    let before = until_every_org(&pair, 1, &orgs, "the plan's limits", |v| v["max_limit"] == 100).await;
    for (v, o) in before.iter().zip(&orgs) {
        assert_eq!(v["plan_id"], plan_id.to_string(), "{v}");
        assert_eq!(v["plan_name"], "Pro Plan");
        assert_eq!(v["limits"][0]["plan_id"], plan_id.to_string());
        assert_eq!(v["limits"][0]["subject"], "organization");
        assert_eq!(v["limits"][0]["organization_id"], o.to_string());
        assert_eq!(v["limits"][0]["version"], 1);
    }
    let outside = messages_check(&pair, 1, outsider).await;
    assert_eq!(outside["max_limit"], "unlimited", "{outside}");
    assert_eq!(outside["plan_id"], Value::Null);

    // One change of the plan (expecting version 1) moves all three.
    let (s, changed) = pair
        .send(
            r0,
            Method::PUT,
            &format!("/v1/plans/{plan_id}"),
            Some(json!({"name": "Pro Plan", "max_messages_per_month": 5, "expected_version": 1})),
        )
        .await;
    assert_eq!(s, 200, "{changed}");
    assert_eq!(changed["version"], 2);
    assert_eq!(changed["limits"].as_array().unwrap().len(), 1);
    let after = until_every_org(&pair, 1, &orgs, "the changed plan", |v| v["max_limit"] == 5).await;
    for (a, b) in after.iter().zip(&before) {
        assert_eq!(a["limits"][0]["version"], 2, "{a}");
        assert_eq!(a["limits"][0]["limit_id"], b["limits"][0]["limit_id"], "the same limit, a higher version");
    }
    // Templates dropped by the change are gone everywhere.
    let (_, tokens) = pair.check(1, json!({"tokens": 5000, "usage_type": "tokens", "organization_id": orgs[0]})).await;
    assert_eq!(tokens["allowed"], true, "{tokens}");
    assert_eq!(tokens["max_limit"], "unlimited");
    // And the new maximum is enforced.
    let (_, over) = pair.check(1, json!({"tokens": 6, "usage_type": "messages", "organization_id": orgs[1]})).await;
    assert_eq!(over["allowed"], false, "{over}");

    // Current usage names the plan too.
    let (s, current) = pair.send(&pair.replicas[1], Method::GET, &format!("/v1/api/usage/current?organization_id={}", orgs[2]), None).await;
    assert_eq!(s, 200, "{current}");
    assert_eq!(current["plan_name"], "Pro Plan");
    assert_eq!(current["plan_id"], plan_id.to_string());
    assert_eq!(current["usage"]["messages"]["max"], 5);

    // So do the usage history and a user's limits.
    let (s, history) = pair.send(&pair.replicas[1], Method::GET, &format!("/v1/api/usage/history?organization_id={}", orgs[2]), None).await;
    assert_eq!(s, 200, "{history}");
    assert_eq!((history[0]["is_current"].as_bool(), history[0]["plan_name"].as_str()), (Some(true), Some("Pro Plan")), "{history}");
    let user_limits = format!("/v1/subscriptions/users/{}/usage/limits?organization_id={}", Uuid::new_v4(), orgs[2]);
    let (s, limits) = pair.send(&pair.replicas[1], Method::GET, &user_limits, None).await;
    assert_eq!(s, 200, "{limits}");
    assert_eq!(limits["plan_id"], plan_id.to_string());
    assert_eq!(limits["limits"]["messages"][0]["plan_id"], plan_id.to_string(), "{limits}");

    // A stale version is refused and changes nothing.
    let (s, v) = pair.send(r0, Method::PUT, &format!("/v1/plans/{plan_id}"), Some(json!({"name": "X", "expected_version": 1}))).await;
    assert_eq!(s, 409, "{v}");

    // Unassigning one organization takes its plan limits off.
    let (s, v) = pair.send(r0, Method::PUT, &format!("/v1/organizations/{}/plan", orgs[2]), Some(json!({"plan_id": null}))).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["version"], 2);
    assert_eq!(v["plan_id"], Value::Null);
    until_every_org(&pair, 1, &orgs[2..], "the unassignment", |v| v["max_limit"] == "unlimited" && v["plan_id"].is_null()).await;
    let (s, _) = pair.send(&pair.replicas[1], Method::GET, &format!("/v1/organizations/{}/plan", orgs[2]), None).await;
    assert_eq!(s, 404);
    let (s, v) = pair.send(&pair.replicas[1], Method::GET, &format!("/v1/organizations/{}/plan", orgs[0]), None).await;
    assert_eq!((s, v["plan_id"].as_str()), (200, Some(plan_id.to_string().as_str())), "{v}");
    let (s, members) = pair.send(&pair.replicas[1], Method::GET, &format!("/v1/plans/{plan_id}/organizations"), None).await;
    assert_eq!(s, 200, "{members}");
    assert_eq!(members["count"], 2);

    pair.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_are_listed_in_pages_and_inactive_ones_on_request() {
    let pair = Pair::start("plans_pages", &valkey_url(), &[]).await;
    let r0 = &pair.replicas[0];
    let mut ids = Vec::new();
    for (name, active) in [("Free", true), ("Team", true), ("Legacy", false)] {
        let (s, v) =
            pair.send(r0, Method::POST, "/v1/plans", Some(json!({"name": name, "is_active": active, "is_free": name == "Free"}))).await;
        assert_eq!(s, 201, "{v}");
        ids.push(v["id"].as_str().unwrap().to_owned());
    }
    let list = |q: &'static str| {
        let pair = &pair;
        async move {
            let (s, v) = pair.send(&pair.replicas[1], Method::GET, &format!("/v1/plans{q}"), None).await;
            assert_eq!(s, 200, "{v}");
            v
        }
    };
    let all = list("").await;
    assert_eq!(all["total"], 2, "{all}");
    assert_eq!(all["plans"][0]["name"], "Free");
    assert_eq!(all["plans"][0]["is_free"], true);
    assert_eq!((all["page"].as_u64(), all["per_page"].as_u64()), (Some(1), Some(100)));
    assert_eq!((all["has_next"].as_bool(), all["has_prev"].as_bool()), (Some(false), Some(false)));
    let second = list("?skip=1&limit=1&include_inactive=true").await;
    assert_eq!(second["total"], 3);
    assert_eq!(second["plans"].as_array().unwrap().len(), 1);
    assert_eq!(second["plans"][0]["name"], "Team");
    assert_eq!((second["page"].as_u64(), second["has_next"].as_bool(), second["has_prev"].as_bool()), (Some(2), Some(true), Some(true)));
    let (s, v) = pair.send(&pair.replicas[1], Method::GET, "/v1/plans?limit=1001", None).await;
    assert_eq!(s, 422, "{v}");
    // An inactive plan is readable by id but cannot be newly assigned.
    let (s, v) = pair.send(&pair.replicas[1], Method::GET, &format!("/v1/plans/{}", ids[2]), None).await;
    assert_eq!((s, v["is_active"].as_bool()), (200, Some(false)), "{v}");
    let (s, v) = pair.send(r0, Method::PUT, &format!("/v1/organizations/{}/plan", Uuid::new_v4()), Some(json!({"plan_id": ids[2]}))).await;
    assert_eq!(s, 409, "{v}");
    let (s, _) = pair.send(r0, Method::GET, &format!("/v1/plans/{}", Uuid::new_v4()), None).await;
    assert_eq!(s, 404);
    // `null` is "no plan"; leaving plan_id out is a mistake.
    let (s, v) = pair.send(r0, Method::PUT, &format!("/v1/organizations/{}/plan", Uuid::new_v4()), Some(json!({}))).await;
    assert_eq!(s, 422, "{v}");
    pair.drop_all().await;
}
