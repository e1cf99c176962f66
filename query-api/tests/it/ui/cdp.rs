//! A small Chrome DevTools Protocol client, so the usage-page tests can
//! drive a real headless Chromium like a person does: load a URL, click an
//! element with the mouse, read what the page shows and which requests it
//! made. (`--dump-dom` alone cannot click.)
//!
//! Chromium is started with `--remote-debugging-port=0` and a fresh profile;
//! it writes the port it chose into `<profile>/DevToolsActivePort`. The
//! client talks to the first page target over one WebSocket
//! (`tokio-tungstenite`), sending a command and reading until the answer
//! with its id arrives (events in between are dropped).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

/// The flags of every headless Chromium of the tests: no sandbox, GPU or
/// QUIC, no first-run, background, update or sync traffic, no scrollbars.
pub const HEADLESS: [&str; 9] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
];

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub struct Browser {
    child: Child,
    profile: PathBuf,
    ws: Socket,
    next_id: u64,
}

impl Browser {
    /// Starts headless Chromium (`chromium` is the binary) with a window of
    /// `width` x `height` and connects to its page.
    pub async fn launch(chromium: PathBuf, width: u32, height: u32) -> Self {
        let profile = std::env::temp_dir().join(format!("agentmeter-ui-cdp-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&profile).unwrap();
        let child = Command::new(chromium)
            .args(HEADLESS)
            .args(["--remote-debugging-port=0", "--remote-allow-origins=*"])
            .arg(format!("--window-size={width},{height}"))
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromium");
        let port_file = profile.join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(30);
        let port = loop {
            if let Some(port) =
                std::fs::read_to_string(&port_file).ok().and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<u16>().ok()))
            {
                break port;
            }
            assert!(Instant::now() < deadline, "chromium wrote no DevToolsActivePort");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let targets: Value = loop {
            match reqwest::get(format!("http://127.0.0.1:{port}/json/list")).await {
                Ok(r) => break r.json().await.unwrap(),
                Err(e) => {
                    assert!(Instant::now() < deadline, "DevTools endpoint does not answer: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        let url = targets
            .as_array()
            .and_then(|a| a.iter().find(|t| t["type"] == "page"))
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .unwrap_or_else(|| panic!("no page target: {targets}"))
            .to_owned();
        let (ws, _) = tokio_tungstenite::connect_async(url).await.expect("connect to the page");
        let mut b = Browser { child, profile, ws, next_id: 0 };
        b.call("Page.enable", json!({})).await;
        b.call("Runtime.enable", json!({})).await;
        b
    }

    /// Sends one command and returns its `result`; panics on a protocol error.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        self.ws.send(Message::Text(json!({"id": id, "method": method, "params": params}).to_string().into())).await.unwrap();
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(30), self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no answer to {method}"))
                .expect("DevTools connection closed")
                .unwrap();
            let Message::Text(text) = msg else { continue };
            let v: Value = serde_json::from_str(&text).unwrap();
            if v["id"] == json!(id) {
                assert!(v.get("error").is_none(), "{method} failed: {}", v["error"]);
                return v["result"].clone();
            }
        }
    }

    /// Evaluates `expr` in the page (awaiting a promise) and returns its value.
    pub async fn eval(&mut self, expr: &str) -> Value {
        let r = self.call("Runtime.evaluate", json!({"expression": expr, "awaitPromise": true, "returnByValue": true})).await;
        assert!(r.get("exceptionDetails").is_none(), "{expr} threw: {}", r["exceptionDetails"]);
        r["result"]["value"].clone()
    }

    pub async fn eval_str(&mut self, expr: &str) -> String {
        match self.eval(expr).await {
            Value::String(s) => s,
            Value::Null => String::new(),
            v => v.to_string(),
        }
    }

    /// Loads `url` (a change of the fragment only is a same-document
    /// navigation, as when a person edits it).
    pub async fn goto(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url})).await;
    }

    /// Polls `expr` until it is `true`; panics with `what` after 60 s (a
    /// refresh of the page is a score of API requests, slow on a busy machine).
    pub async fn wait_until(&mut self, expr: &str, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.eval(&format!("(() => {{ try {{ return !!({expr}); }} catch (_) {{ return false; }} }})()")).await == json!(true) {
                return;
            }
            if Instant::now() > deadline {
                let state = self
                    .eval_str("document.body && document.body.dataset.state + ' / ' + document.getElementById('status').textContent")
                    .await;
                panic!("{what}: `{expr}` never became true (page: {state})");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Clicks the centre of the first element matching `selector` with the
    /// mouse (scrolled into view first), as a person would.
    pub async fn click(&mut self, selector: &str) {
        let sel = serde_json::to_string(selector).unwrap();
        let rect = self
            .eval(&format!(
                "(() => {{ const e = document.querySelector({sel}); if (!e) return null; e.scrollIntoView({{block: 'center'}}); \
                 const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()"
            ))
            .await;
        let (x, y) = match rect.as_array() {
            Some(a) => (a[0].as_f64().unwrap(), a[1].as_f64().unwrap()),
            None => panic!("nothing matches {selector}"),
        };
        for kind in ["mouseMoved", "mousePressed", "mouseReleased"] {
            self.call("Input.dispatchMouseEvent", json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1})).await;
        }
    }

    /// URLs (path and query) of the API requests the page made since the
    /// last call of this function.
    pub async fn take_requests(&mut self) -> Vec<String> {
        let v = self
            .eval(
                "(() => { const o = location.origin; const r = performance.getEntriesByType('resource').map((e) => e.name) \
                 .filter((n) => n.startsWith(o + '/api/') || n.startsWith(o + '/v1/')).map((n) => n.slice(o.length)); \
                 performance.clearResourceTimings(); return r; })()",
            )
            .await;
        v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_owned()).collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
