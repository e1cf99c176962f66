//! The built-in usage page: a small static web app served at `/` with its
//! assets under `/ui/*`, compiled into the binary (`include_str!`), so a
//! fresh `agentmeter-api` shows usage without Grafana, a CDN or an npm build.
//!
//! The page is a client of the public API only: it calls the analytics
//! endpoints (`/api/v1/analytics/*`, `/api/v1/query/timeseries` for tokens,
//! cost and messages per organization) and the usage endpoints (`GET
//! /v1/limits` when the key is an admin key, `/api/organizations/{id}/usage`,
//! `/v1/api/usage/current`, and `POST /v1/usage/check` for the smallest
//! amount to read used / remaining / reset of each limit) with the key the
//! user enters, exactly as any other client would. The routes here are
//! therefore public and serve no data of their own.
//!
//! Charts are drawn by a hand-written SVG renderer (`svgchart.js`, a few
//! hundred lines) rather than a charting library: nothing to download or
//! audit, no supply chain behind a page that handles API keys, and the output
//! is plain SVG that screen readers and tests can inspect.
//!
//! The key never reaches this module: it is kept in the browser's
//! `sessionStorage` and may be handed to the page in the URL fragment
//! (`/#key=...`), which browsers never send to the server. The rest of the
//! fragment is the view (window, frequency, time zone, filters), so a link
//! to it can be shared; the page's "Share link" leaves the key out.
//!
//! Every response carries a strict Content-Security-Policy (scripts, styles
//! and connections from this origin only, no inline script), so even a bug in
//! the page cannot send the key elsewhere.

use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// One embedded file.
struct Asset {
    body: &'static str,
    content_type: &'static str,
}

const INDEX: Asset = Asset { body: include_str!("index.html"), content_type: "text/html; charset=utf-8" };
const APP_JS: Asset = Asset { body: include_str!("app.js"), content_type: "text/javascript; charset=utf-8" };
const CHART_JS: Asset = Asset { body: include_str!("svgchart.js"), content_type: "text/javascript; charset=utf-8" };
const STYLE: Asset = Asset { body: include_str!("style.css"), content_type: "text/css; charset=utf-8" };
const FAVICON: Asset = Asset { body: include_str!("favicon.svg"), content_type: "image/svg+xml" };

/// The page's policy: everything from this origin, nothing inline, no frames.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
                   base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Routes of the page (public: the assets hold no data).
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { serve(&INDEX) }))
        .route("/ui/app.js", get(|| async { serve(&APP_JS) }))
        .route("/ui/svgchart.js", get(|| async { serve(&CHART_JS) }))
        .route("/ui/style.css", get(|| async { serve(&STYLE) }))
        .route("/ui/favicon.svg", get(|| async { serve(&FAVICON) }))
}

fn serve(asset: &Asset) -> Response {
    let mut resp = asset.body.into_response();
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    // Assets change with the binary; a short cache keeps upgrades visible.
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_references_only_embedded_assets() {
        for src in ["/ui/app.js", "/ui/svgchart.js", "/ui/style.css", "/ui/favicon.svg"] {
            assert!(INDEX.body.contains(src), "index.html does not load {src}");
        }
        // No inline script or style: the CSP would block it.
        assert!(!INDEX.body.contains("<script>"));
        assert!(!INDEX.body.contains("style=\""));
        assert!(!INDEX.body.contains("http://") && !INDEX.body.contains("https://"), "no external URLs");
    }
}
