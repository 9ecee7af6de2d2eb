//! What a WebSocket peer's upgrade request said: method, URI and headers, kept for the
//! application (the token validator and every handler see them in
//! [`PeerInfo::upgrade`](crate::PeerInfo::upgrade)), and the origin check.
//!
//! The bearer token is taken out before the request is kept (it goes to the validator, never
//! into the peer's info), and `Debug` shows header names only, so that logging a peer's info
//! never prints a cookie or a token.

use bytes::BytesMut;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Uri};

/// The HTTP request a WebSocket peer upgraded with, without its bearer token.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UpgradeRequest {
    /// The method (`GET`).
    pub method: Method,
    /// The request target: path and query.
    pub uri: Uri,
    /// The headers, without `Authorization` and without `truflux.bearer.*` subprotocols.
    pub headers: HeaderMap,
}

impl std::fmt::Debug for UpgradeRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.keys().map(|name| name.as_str()).collect();
        f.debug_struct("UpgradeRequest")
            .field("method", &self.method)
            .field("path", &self.uri.path())
            .field("headers", &names)
            .finish_non_exhaustive()
    }
}

impl UpgradeRequest {
    /// Keeps what `request` said, without its token.
    pub(crate) fn of<B>(request: &Request<B>) -> UpgradeRequest {
        let source = request.headers();
        let token_free =
            |name: &HeaderName| *name != header::AUTHORIZATION && *name != header::SEC_WEBSOCKET_PROTOCOL;
        let mut headers = owned_headers(source, token_free);
        let protocols = source.get_all(header::SEC_WEBSOCKET_PROTOCOL).iter();
        for value in protocols.filter_map(without_bearer) {
            headers.append(header::SEC_WEBSOCKET_PROTOCOL, value);
        }
        UpgradeRequest {
            method: request.method().clone(),
            uri: owned_uri(request.uri()),
            headers,
        }
    }

    /// The raw query string, if the URI has one.
    pub fn query(&self) -> Option<&str> {
        self.uri.query()
    }

    /// The first value of query parameter `name`, percent-decoded (`+` as a space); `None`
    /// if absent or not UTF-8 once decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query()?.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(key)? == name).then(|| decode(value)).flatten()
        })
    }

    /// The value of cookie `name` from the `Cookie` headers, as sent.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|line| line.split(';'))
            .find_map(|pair| {
                let (key, value) = pair.trim().split_once('=')?;
                (key == name).then_some(value)
            })
    }

    /// The `Origin` header: sent by browsers, usually absent from other clients.
    pub fn origin(&self) -> Option<&str> {
        self.headers.get(header::ORIGIN)?.to_str().ok()
    }
}

/// The headers of `headers` whose names pass `keep`, in memory of their own. The values hyper
/// parsed are slices of its read buffer (8 KiB): a clone would keep that buffer for as long as
/// the peer is connected. The copies share one buffer, as long as the values kept.
fn owned_headers(headers: &HeaderMap, keep: impl Fn(&HeaderName) -> bool) -> HeaderMap {
    let kept = || headers.iter().filter(|(name, _)| keep(name));
    let mut copied = BytesMut::with_capacity(kept().map(|(_, value)| value.len()).sum());
    for (_, value) in kept() {
        copied.extend_from_slice(value.as_bytes());
    }
    let mut copied = copied.freeze();
    let mut owned = HeaderMap::with_capacity(kept().count());
    for (name, value) in kept() {
        // Valid already (the same bytes); a failure would only keep the shared value.
        let mut own =
            HeaderValue::from_maybe_shared(copied.split_to(value.len())).unwrap_or_else(|_| value.clone());
        own.set_sensitive(value.is_sensitive());
        owned.append(name.clone(), own);
    }
    owned
}

/// `uri` in memory of its own (hyper's is a slice of its read buffer, as header values are).
fn owned_uri(uri: &Uri) -> Uri {
    uri.to_string().parse().unwrap_or_else(|_| uri.clone())
}

/// A `Sec-WebSocket-Protocol` value without its `truflux.bearer.*` entries; `None` if
/// nothing else was in it.
fn without_bearer(value: &HeaderValue) -> Option<HeaderValue> {
    let text = value.to_str().ok()?;
    let kept: Vec<&str> = text
        .split(',')
        .map(str::trim)
        .filter(|protocol| !protocol.starts_with(crate::auth::SUBPROTOCOL_PREFIX))
        .collect();
    if kept.is_empty() {
        return None;
    }
    HeaderValue::from_str(&kept.join(", ")).ok()
}

/// Percent-decoding of a query component (`+` is a space).
fn decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Whether a request from `origin` may upgrade, given the allowed list (`None`: any).
/// A request without an `Origin` header is not from a browser page and is let through.
pub(crate) fn origin_allowed(allowed: Option<&[String]>, origin: Option<&HeaderValue>) -> bool {
    match (allowed, origin) {
        (None, _) | (_, None) => true,
        (Some(list), Some(origin)) => {
            let origin = origin.as_bytes();
            list.iter()
                .any(|allowed| allowed == "*" || allowed.as_bytes().eq_ignore_ascii_case(origin))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> UpgradeRequest {
        let request = Request::get("/chat?room=caf%C3%A9&nick=a+b&flag")
            .header(header::COOKIE, "theme=dark; sid=abc=1")
            .header(header::AUTHORIZATION, "Bearer secret")
            .header(header::SEC_WEBSOCKET_PROTOCOL, "truflux.bearer.secret, chat")
            .header(header::ORIGIN, "http://127.0.0.1:7879")
            .body(())
            .unwrap();
        UpgradeRequest::of(&request)
    }

    #[test]
    fn the_kept_request_answers_query_cookie_and_origin_without_the_token() {
        let kept = request();
        assert_eq!(kept.query_param("room").as_deref(), Some("café"));
        assert_eq!(kept.query_param("nick").as_deref(), Some("a b"));
        assert_eq!(kept.query_param("flag").as_deref(), Some(""));
        assert_eq!(kept.query_param("none"), None);
        assert_eq!(kept.cookie("sid"), Some("abc=1"));
        assert_eq!(kept.cookie("theme"), Some("dark"));
        assert_eq!(kept.origin(), Some("http://127.0.0.1:7879"));
        assert!(kept.headers.get(header::AUTHORIZATION).is_none());
        assert_eq!(
            kept.headers
                .get(header::SEC_WEBSOCKET_PROTOCOL)
                .map(|v| v.as_bytes()),
            Some(&b"chat"[..])
        );
        let debug = format!("{kept:?}");
        assert!(!debug.contains("secret") && !debug.contains("abc"), "{debug}");
    }

    #[test]
    fn the_kept_request_holds_no_part_of_the_buffer_it_was_parsed_from() {
        // As hyper parses: the URI and every value are slices of one read buffer.
        let buffer = bytes::Bytes::from(b"/chat?room=1 theme=dark http://127.0.0.1:7879".to_vec());
        let value =
            |range: std::ops::Range<usize>| HeaderValue::from_maybe_shared(buffer.slice(range)).unwrap();
        let mut request = Request::new(());
        *request.uri_mut() = Uri::from_maybe_shared(buffer.slice(0..12)).unwrap();
        request.headers_mut().insert(header::COOKIE, value(13..23));
        request.headers_mut().insert(header::ORIGIN, value(24..45));
        let kept = UpgradeRequest::of(&request);
        let within = |bytes: &[u8]| buffer.as_ptr_range().contains(&bytes.as_ptr());
        assert!(kept.headers.values().all(|value| !within(value.as_bytes())));
        assert!(!within(kept.uri.path().as_bytes()));
        assert_eq!(
            (kept.uri.query(), kept.cookie("theme")),
            (Some("room=1"), Some("dark"))
        );
        assert_eq!(kept.origin(), Some("http://127.0.0.1:7879"));
    }

    #[test]
    fn origins_are_checked_only_when_a_list_is_set_and_a_browser_sent_one() {
        let list = vec!["http://127.0.0.1:7879".to_string()];
        let ok = HeaderValue::from_static("HTTP://127.0.0.1:7879");
        let evil = HeaderValue::from_static("http://evil.example");
        assert!(origin_allowed(None, Some(&evil)));
        assert!(origin_allowed(Some(&list), None));
        assert!(origin_allowed(Some(&list), Some(&ok)));
        assert!(!origin_allowed(Some(&list), Some(&evil)));
        assert!(origin_allowed(Some(&["*".to_string()]), Some(&evil)));
    }
}
