//! Every window/frequency pair of the contract is served: up to its
//! longest window (`1mon`) at 5 minutes, with one bucket per step, and
//! the figures of the buckets add up to the events produced.

use chrono::Utc;

use super::{deliver, events};
use crate::analytics::{time_of, App, KEY_A};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_month_at_five_minutes_and_the_other_fine_pairs_are_served() {
    let app = App::start("dash_buckets", &[]).await;
    let (_, calls, execs) = events(app.tenant_a, 60, "buckets", Utc::now());
    deliver(&app, "dash_buckets", &calls, &execs).await;
    for (window, frequency, step_s) in [("1mon", "5m", 300), ("1w", "5m", 300), ("1mon", "15m", 900), ("1w", "1m", 0), ("24h", "1m", 60)] {
        let path = format!("/api/v1/analytics/tool-calls-processed-graph?window={window}&frequency={frequency}");
        let (status, body) = app.get(Some(KEY_A), &path).await;
        if step_s == 0 {
            // Outside the contract's pairs (10,080 buckets): refused by the cap.
            assert_eq!(status, 422, "{path}: {body}");
            assert_eq!(body["detail"][0]["loc"][1], "frequency", "{body}");
            continue;
        }
        assert_eq!(status, 200, "{path}: {body}");
        let d = &body["data"];
        let points = d["data_points"].as_array().expect("data_points");
        // One bucket per step from the one the window starts in.
        let (from, to) = (time_of(d, "from").timestamp(), time_of(d, "to").timestamp());
        let first = from - from.rem_euclid(step_s);
        let expected = (to - first + step_s - 1) / step_s;
        assert_eq!(points.len() as i64, expected, "{path}");
        if window == "1mon" && frequency == "5m" {
            assert!(points.len() >= 28 * 288, "{} buckets", points.len());
        }
        let total: u64 = points.iter().map(|p| p["count"].as_u64().unwrap()).sum();
        assert_eq!(total, calls.len() as u64, "{path}");
    }
    app.drop_db().await;
}
