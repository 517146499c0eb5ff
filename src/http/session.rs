//! Dashboard sessions: a random session id in an HttpOnly, SameSite=Strict cookie, a CSRF token
//! per session for every mutation, one-time login codes, and the Host and Origin checks that
//! keep a hostile web page (or a DNS-rebound name) from driving the API through a browser.
//! Sessions and codes live in the registry (`store::DashboardSessions`), so a restart keeps
//! them and every server sharing the database honours them. Ending a session here is announced
//! (see [`Sessions::watch_ended`]) so the streams it opened end with it; a session ended by
//! another server is noticed by those streams' periodic check (`credential.rs`).

use std::time::Duration;

use axum::http::{header, HeaderMap};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::watch;

use crate::store::{DashboardSession, NewSession, SessionLimits, Store, StoreResult};

/// One logged-in browser, as the registry keeps it.
pub type Session = DashboardSession;

/// The session cookie's name.
pub const COOKIE: &str = "taskyard_session";
/// The header carrying a session's CSRF token on mutations.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// How long a session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// How long the one-time login link printed at startup stays valid.
pub const LOGIN_CODE_TTL: Duration = Duration::from_secs(3600);
/// Most sessions kept at once; the oldest go first. Each principal has its own, smaller limit
/// (`server.max_sessions_per_principal`), so no token holder can end others' sessions by
/// logging in again and again.
const MAX_SESSIONS: usize = 10_000;

/// Dashboard sessions and one-time login codes, kept in the registry.
pub struct Sessions {
    store: Store,
    /// How many sessions may live at once.
    limits: SessionLimits,
    /// How long a new session lasts.
    ttl: Duration,
    /// Bumped whenever this server ends a session before its time (logout, or evicted as the
    /// oldest).
    ended: watch::Sender<u64>,
}

/// The key a session is kept under: the SHA-256 of its cookie value, so holding it (as a stream
/// does, to learn when its session ends) is no way to act as the session, and the registry
/// never holds a cookie.
pub fn key(cookie: &str) -> [u8; 32] {
    Sha256::digest(cookie.as_bytes()).into()
}

fn random_hex() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

impl Sessions {
    /// Sessions kept in `store`; one principal may have `per_owner` at once.
    pub fn new(store: Store, per_owner: usize) -> Self {
        Self {
            store,
            limits: SessionLimits {
                per_owner: per_owner.max(1),
                total: MAX_SESSIONS,
            },
            ttl: SESSION_TTL,
            ended: watch::Sender::default(),
        }
    }

    /// Starts a session acting as the token with hash `token_hash`, which belongs to the
    /// principal `owner`; returns the cookie value. The owner's oldest session makes room when
    /// it has its limit already.
    pub async fn create(&self, token_hash: [u8; 32], owner: &str) -> StoreResult<String> {
        let id = random_hex();
        let session = NewSession {
            token_hash,
            csrf: random_hex(),
            owner: owner.to_string(),
            ttl: self.ttl,
        };
        let evicted = self.store.start_session(key(&id), session, self.limits).await?;
        if evicted > 0 {
            self.announce_end();
        }
        Ok(id)
    }

    /// The live session behind a cookie value.
    pub async fn get(&self, cookie: &str) -> StoreResult<Option<Session>> {
        self.get_by_key(&key(cookie)).await
    }

    /// The live session kept under `key` (see [`key`]).
    pub async fn get_by_key(&self, key: &[u8; 32]) -> StoreResult<Option<Session>> {
        self.store.session(*key).await
    }

    /// Ends a session.
    pub async fn remove(&self, cookie: &str) -> StoreResult<()> {
        if self.store.end_session(key(cookie)).await? {
            self.announce_end();
        }
        Ok(())
    }

    /// Changes whenever this server ends a session before its time, so whoever holds a stream
    /// open for a session can look again at once. (Expiry is not announced: its time is known
    /// in advance.)
    pub fn watch_ended(&self) -> watch::Receiver<u64> {
        self.ended.subscribe()
    }

    fn announce_end(&self) {
        self.ended.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A one-time login code acting as the token with hash `token_hash`, redeemable once on
    /// any server sharing the registry.
    pub async fn login_code(&self, token_hash: [u8; 32]) -> StoreResult<String> {
        let code = random_hex();
        self.store
            .add_login_code(key(&code), token_hash, LOGIN_CODE_TTL)
            .await?;
        Ok(code)
    }

    /// Spends a login code: the token hash it acts as, once.
    pub async fn redeem(&self, code: &str) -> StoreResult<Option<[u8; 32]>> {
        self.store.redeem_login_code(key(code)).await
    }
}

/// The session cookie's value in a request, if any.
pub fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|v| !v.is_empty())
}

/// True when session cookies carry `Secure`: whenever `server.public_url` is an `https://`
/// address. Behind a TLS proxy this server sees plain HTTP whatever the browser used, and the
/// Host a request names is no proof of how it came, so the URL the server is published under
/// decides; such a cookie is never sent over plain HTTP.
pub fn secure_cookie(public_url: Option<&str>) -> bool {
    public_url.is_some_and(|url| url.len() >= 8 && url[..8].eq_ignore_ascii_case("https://"))
}

/// The `Set-Cookie` value that stores a session (`Secure` when `secure`).
pub fn set_cookie(value: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        SESSION_TTL.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that deletes the session cookie.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// True when the CSRF header matches the session's token (compared in constant time).
pub fn csrf_ok(headers: &HeaderMap, session: &Session) -> bool {
    headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|sent| bool::from(sent.as_bytes().ct_eq(session.csrf.as_bytes())))
}

/// The host name of a `host[:port]` authority (IPv6 literals keep their brackets).
fn host_name(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority
            .split_once(']')
            .map_or(authority, |(h, _)| &authority[..=h.len()]);
    }
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

/// True when a browser addressed this server by a name it may be reached at: an IP literal,
/// `localhost`, or the host of `server.public_url`. Any other name may be a DNS-rebinding
/// attacker's domain resolving to this machine.
pub fn host_ok(headers: &HeaderMap, public_host: Option<&str>) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let name = host_name(host.trim()).to_ascii_lowercase();
    let bare = name.trim_start_matches('[').trim_end_matches(']');
    name == "localhost"
        || bare.parse::<std::net::IpAddr>().is_ok()
        || public_host.is_some_and(|p| p.eq_ignore_ascii_case(&name))
}

/// True unless the request comes from another site: an `Origin` other than the `Host` it was
/// sent to (or than `public_origin`, the origin of `server.public_url`, behind a proxy that
/// rewrites Host), or a browser's `Sec-Fetch-Site` saying so (which also covers requests
/// without an Origin, such as an `<img>` or `<script>` pointing at the API).
pub fn origin_ok(headers: &HeaderMap, public_origin: Option<&str>) -> bool {
    let fetch_site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if fetch_site.is_some_and(|site| site != "same-origin" && site != "none") {
        return false;
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let (Some(origin), Some(host)) = (
        origin.to_str().ok(),
        headers.get(header::HOST).and_then(|v| v.to_str().ok()),
    ) else {
        return false;
    };
    if public_origin.is_some_and(|p| p.eq_ignore_ascii_case(origin)) {
        return true;
    }
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .unwrap_or("");
    authority.eq_ignore_ascii_case(host.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn hosts_and_origins() {
        let ok = |host: &str| host_ok(&headers(&[("host", host)]), Some("yard.example.com"));
        assert!(ok("127.0.0.1:7311") && ok("localhost:7311") && ok("[::1]:7311") && ok("10.0.0.5"));
        assert!(ok("yard.example.com") && ok("YARD.example.com:443"));
        assert!(!ok("evil.example.net:7311") && !ok("localhost.evil.net"));
        assert!(!host_ok(&HeaderMap::new(), None));

        let origin =
            |pairs: &[(&'static str, &str)]| origin_ok(&headers(pairs), Some("https://yard.example.com"));
        assert!(origin(&[("host", "127.0.0.1:7311")]));
        assert!(origin(&[
            ("host", "127.0.0.1:7311"),
            ("origin", "http://127.0.0.1:7311")
        ]));
        assert!(origin(&[
            ("host", "10.0.0.2:7311"),
            ("origin", "https://yard.example.com")
        ]));
        assert!(!origin(&[
            ("host", "127.0.0.1:7311"),
            ("origin", "http://evil.net")
        ]));
        assert!(!origin(&[("host", "127.0.0.1:7311"), ("origin", "null")]));
        assert!(origin(&[
            ("host", "127.0.0.1:7311"),
            ("sec-fetch-site", "same-origin")
        ]));
        assert!(!origin(&[
            ("host", "127.0.0.1:7311"),
            ("sec-fetch-site", "same-site")
        ]));
        assert!(!origin(&[
            ("host", "127.0.0.1:7311"),
            ("sec-fetch-site", "cross-site")
        ]));
    }

    #[tokio::test]
    async fn sessions_codes_and_cookies() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::sqlite::open(&dir.path().join("t.db"), Default::default())
            .await
            .unwrap();
        let sessions = Sessions::new(store.clone(), 2);
        let id = sessions.create([1; 32], "a").await.unwrap();
        let session = sessions.get(&id).await.unwrap().unwrap();
        assert_eq!(session.token_hash, [1; 32]);
        let h = headers(&[
            ("cookie", &format!("a=b; {COOKIE}={id}")),
            (CSRF_HEADER, &session.csrf),
        ]);
        assert_eq!(cookie(&h), Some(id.as_str()));
        assert!(csrf_ok(&h, &session));
        assert!(!csrf_ok(&headers(&[(CSRF_HEADER, "nope")]), &session));
        let lives = |id: String| {
            let sessions = &sessions;
            async move { sessions.get(&id).await.unwrap().is_some() }
        };
        let mut ended = sessions.watch_ended();
        sessions.remove(&id).await.unwrap();
        assert!(!lives(id.clone()).await);
        assert!(ended.has_changed().unwrap(), "a logout is announced");
        ended.mark_unchanged();
        sessions.remove(&id).await.unwrap();
        assert!(
            !ended.has_changed().unwrap(),
            "ending no session announces nothing"
        );

        // One principal's sessions make room for each other, not for others'.
        let mine = [
            sessions.create([4; 32], "b").await.unwrap(),
            sessions.create([4; 32], "b").await.unwrap(),
        ];
        let other = sessions.create([5; 32], "c").await.unwrap();
        let newest = sessions.create([4; 32], "b").await.unwrap();
        assert!(ended.has_changed().unwrap(), "making room is announced");
        assert!(!lives(mine[0].clone()).await, "b's oldest made room");
        assert!(lives(mine[1].clone()).await && lives(newest).await);
        assert!(lives(other).await, "c's session is not b's to end");

        // An expired session is gone, though nobody removed it.
        let mut brief = Sessions::new(store.clone(), 2);
        brief.ttl = Duration::ZERO;
        let id = brief.create([3; 32], "a").await.unwrap();
        assert!(!lives(id.clone()).await && sessions.get_by_key(&key(&id)).await.unwrap().is_none());

        assert!(set_cookie("v", secure_cookie(Some("https://yard.example.com"))).ends_with("; Secure"));
        assert!(set_cookie("v", secure_cookie(Some("HTTPS://yard.example.com/x"))).ends_with("; Secure"));
        assert!(!set_cookie("v", secure_cookie(Some("http://127.0.0.1:7311"))).contains("Secure"));
        assert!(!set_cookie("v", secure_cookie(None)).contains("Secure"));

        let code = sessions.login_code([2; 32]).await.unwrap();
        assert_eq!(sessions.redeem(&code).await.unwrap(), Some([2; 32]));
        assert_eq!(sessions.redeem(&code).await.unwrap(), None, "a code works once");
        assert_eq!(sessions.redeem("never issued").await.unwrap(), None);
        store.close().await;
    }
}
