//! The dashboard client (SPEC §7 `/`): built from `dashboards-client/` by
//! `build.rs` and embedded in the binary, so `serve` and `demo` need no files
//! beside them.
//!
//! `index.html` is never cached (it names the hashed bundles of this build);
//! files under `/assets/` carry a content hash in their names and are cached
//! for a year. Every answer says which process served it (`x-cspulse-boot`)
//! and which client build (`x-cspulse-build`): after a restart the client
//! knows the server's `seq` numbering started over and asks for fresh
//! snapshots instead of resuming, and a wall display reloads a new build.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::ApiError;

/// One embedded file of the client build.
pub struct Asset {
    /// URL path, from the root (`/index.html`, `/assets/index-…js`).
    pub path: &'static str,
    pub content_type: &'static str,
    pub bytes: &'static [u8],
}

include!(concat!(env!("OUT_DIR"), "/dashboard_assets.rs"));

/// Identifies this process (random per start).
static BOOT: LazyLock<String> = LazyLock::new(|| {
    use rand::Rng;
    format!("{:016x}", rand::rng().random::<u64>())
});

static BOOT_HEADER: HeaderName = HeaderName::from_static("x-cspulse-boot");
static BUILD_HEADER: HeaderName = HeaderName::from_static("x-cspulse-build");

/// The page loads only its own scripts and styles and talks only to this
/// origin (`/api`, `/ws`). Inline style attributes size the bars.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
                   connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

fn find(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

fn respond(asset: &'static Asset, cache: &'static str) -> Response {
    let mut res = asset.bytes.into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // Dashboard URLs carry the token: never send them on as a referrer.
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if let Ok(boot) = HeaderValue::from_str(&BOOT) {
        h.insert(BOOT_HEADER.clone(), boot);
    }
    h.insert(BUILD_HEADER.clone(), HeaderValue::from_static(BUILD_ID));
    res
}

/// `GET /` (and `/index.html`): the client's page.
pub async fn index() -> Response {
    match find("/index.html") {
        Some(page) => {
            let mut res = respond(page, "no-cache");
            res.headers_mut().insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
            res
        }
        None => ApiError::not_found("dashboard").into_response(),
    }
}

/// `GET /assets/{file}`: a hashed bundle of the client.
pub async fn asset(Path(file): Path<String>) -> Response {
    match find(&format!("/assets/{file}")) {
        Some(asset) => respond(asset, "public, max-age=31536000, immutable"),
        None => ApiError::not_found("asset").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_build_embeds_the_page_and_its_bundles() {
        let page = find("/index.html").expect("index.html is embedded");
        let html = std::str::from_utf8(page.bytes).unwrap();
        let bundles: Vec<&str> = html.split('"').filter(|s| s.starts_with("/assets/")).collect();
        assert!(bundles.iter().any(|b| b.ends_with(".js")), "{html}");
        for b in bundles {
            let asset = find(b).unwrap_or_else(|| panic!("{b} is referenced by index.html but not embedded"));
            assert!(!asset.bytes.is_empty());
        }
        assert!(ASSETS.iter().all(|a| !a.path.contains("..")));
    }
}
