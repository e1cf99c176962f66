//! Kafka unreachable for 20 s in the middle of a stream: nothing lost,
//! nothing counted twice, and the same worker carries on when the broker
//! is back.
//!
//! A proxy in front of the shared broker would not cut anything: clients
//! bootstrap through it, then connect to the address the broker
//! *advertises* in its metadata (Tansu advertises its own listener). So the
//! test starts its own broker (Tansu, memory storage, a free port) whose
//! advertised listener **is** the proxy: every connection of the worker,
//! its dead-letter and forwarding producers and the test's producer goes
//! through the proxy, and switching the proxy off cuts them all (open
//! connections are closed, new ones refused), as a network partition would.
//! (The test's producer goes through the proxy too, so its messages wait in
//! its queue during the outage and reach the broker after it; the worker
//! must reconnect to read them.)
//!
//! The broker binary: `AGENTMETER_TANSU_BIN` (./dev/test sets it to the one
//! the local stack runs).

use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

use crate::support::*;

fn tansu_binary() -> String {
    std::env::var("AGENTMETER_TANSU_BIN").unwrap_or_else(|_| {
        panic!("AGENTMETER_TANSU_BIN must name the Tansu broker binary (./dev/test sets it; dev/stack shows where it is)")
    })
}

/// A private Tansu broker listening on a free port and advertising `advertised`.
async fn start_broker(advertised: std::net::SocketAddr) -> (Child, String) {
    let port = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    let child = Command::new(tansu_binary())
        .args(["broker", "--listener-url", &format!("tcp://{listen}")])
        .args(["--advertised-listener-url", &format!("tcp://{advertised}")])
        .args(["--storage-engine", "memory://tansu/", "--silent"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start tansu");
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(&listen).await.is_err() {
        assert!(Instant::now() < deadline, "the private broker never listened on {listen}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (child, listen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_away_for_twenty_seconds_loses_nothing_and_recovers_without_restart() {
    // The proxy's address must be known before the broker starts (it
    // advertises it); its target is the broker's listener, set right after.
    let proxy = Proxy::start_unbound().await;
    let (_broker, listen) = start_broker(proxy.addr).await;
    proxy.set_target(listen);
    let f = Fixture::new_on("kafka_away", 2, &proxy.addr.to_string()).await;

    let messages = traffic(61, event_count(20_000) / 2);
    let producing = produce_over(&f, messages.clone(), Duration::from_secs(30));
    let (stop, metrics, worker) = spawn_worker(f.config());
    let consumed = || {
        metrics.events_consumed.with_label_values(&["tool_call"]).get()
            + metrics.events_consumed.with_label_values(&["agent_execution"]).get()
    };

    // Wait until the worker is reading, then cut Kafka off.
    let deadline = Instant::now() + Duration::from_secs(60);
    while consumed() == 0 {
        assert!(Instant::now() < deadline, "the worker never read a message");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.set_up(false);
    let cut_at = consumed();
    // What librdkafka had fetched before the cut is still handed out (for
    // longer on a busy machine); after that nothing can arrive.
    let drained = steady(consumed, Duration::from_secs(3), Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(17)).await;
    let during = consumed();
    proxy.set_up(true);
    assert_eq!(drained, during, "nothing read while Kafka was away");
    assert!(cut_at > 0);
    // The cut was real: the worker's and producers' open connections were
    // closed, and their reconnection attempts refused.
    assert!(proxy.cut.load(std::sync::atomic::Ordering::SeqCst) > 0, "connections were cut");
    assert!(proxy.refused.load(std::sync::atomic::Ordering::SeqCst) > 0, "reconnections were refused while away");

    let positions = producing.await.unwrap();
    let expected = expect(&messages, &positions);
    let found = wait_for_rows(&f.ch, &expected.totals, Duration::from_secs(180)).await;
    // The duplicates and bad messages behind the last unique event read and
    // handled (a stray row in, every dead letter out) before the worker stops.
    wait_until_committed(&f, &positions, Duration::from_secs(120)).await;
    assert!(consumed() > during, "the same worker read again once Kafka was back");
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), worker).await.expect("worker stops").unwrap();

    assert_exact(&f, &expected, found).await;
    assert_every_rollup_matches_raw(&f.ch).await;
    assert_dead_lettered(&f, &expected).await;
    f.drop_database().await;
}
