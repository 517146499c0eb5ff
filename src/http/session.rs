//! Dashboard sessions: a random session id in an HttpOnly, SameSite=Strict cookie, a CSRF token
//! per session for every mutation, one-time login codes, and the Host and Origin checks that
//! keep a hostile web page (or a DNS-rebound name) from driving the API through a browser.
//! Sessions live in memory: a restart asks people to log in again. Ending a session is
//! announced (see [`Sessions::watch_ended`]) so the streams it opened end with it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::watch;

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

/// One logged-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    /// SHA-256 of the token used to log in: the session acts as that token, so revoking the
    /// token ends the session.
    pub token_hash: [u8; 32],
    /// Sent back by the page in [`CSRF_HEADER`] on every mutation.
    pub csrf: String,
    /// When it ends.
    pub expires: Instant,
    /// The name of the principal it acts as.
    pub owner: String,
}

/// A SHA-256 digest.
type Digest32 = [u8; 32];

/// The live sessions and login codes.
pub struct Sessions {
    /// Most sessions one principal may have.
    per_owner: usize,
    sessions: Mutex<HashMap<[u8; 32], Session>>,
    /// Login code hash → (expiry, token hash).
    codes: Mutex<HashMap<Digest32, (Instant, Digest32)>>,
    /// Bumped whenever a session is ended before its time (logout, or evicted as the oldest).
    ended: watch::Sender<u64>,
}

fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// The key a session is kept under: the SHA-256 of its cookie value, so holding it (as a stream
/// does, to learn when its session ends) is no way to act as the session.
pub fn key(cookie: &str) -> [u8; 32] {
    digest(cookie)
}

fn random_hex() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

impl Default for Sessions {
    fn default() -> Self {
        Self::new(16)
    }
}

/// The key of the oldest of `sessions` that `keep` picks.
fn oldest(sessions: &HashMap<[u8; 32], Session>, keep: impl Fn(&Session) -> bool) -> Option<[u8; 32]> {
    sessions
        .iter()
        .filter(|(_, s)| keep(s))
        .min_by_key(|(_, s)| s.expires)
        .map(|(k, _)| *k)
}

impl Sessions {
    /// No sessions yet; one principal may have `per_owner` at once.
    pub fn new(per_owner: usize) -> Self {
        Self {
            per_owner: per_owner.max(1),
            sessions: Mutex::default(),
            codes: Mutex::default(),
            ended: watch::Sender::default(),
        }
    }

    /// Starts a session acting as the token with hash `token_hash`, which belongs to the
    /// principal `owner`; returns the cookie value. The owner's oldest session makes room when
    /// it has its limit already.
    pub fn create(&self, token_hash: [u8; 32], owner: &str) -> String {
        let id = random_hex();
        let session = Session {
            token_hash,
            csrf: random_hex(),
            expires: Instant::now() + SESSION_TTL,
            owner: owner.to_string(),
        };
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        sessions.retain(|_, s| s.expires > now);
        let mut evicted = false;
        if sessions.values().filter(|s| s.owner == owner).count() >= self.per_owner {
            if let Some(key) = oldest(&sessions, |s| s.owner == owner) {
                evicted = sessions.remove(&key).is_some();
            }
        }
        if sessions.len() >= MAX_SESSIONS {
            if let Some(key) = oldest(&sessions, |_| true) {
                evicted |= sessions.remove(&key).is_some();
            }
        }
        sessions.insert(key(&id), session);
        drop(sessions);
        if evicted {
            self.announce_end();
        }
        id
    }

    /// The live session behind a cookie value.
    pub fn get(&self, cookie: &str) -> Option<Session> {
        self.get_by_key(&key(cookie))
    }

    /// The live session kept under `key` (see [`key`]).
    pub fn get_by_key(&self, key: &[u8; 32]) -> Option<Session> {
        let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.get(key).filter(|s| s.expires > Instant::now()).cloned()
    }

    /// Ends a session.
    pub fn remove(&self, cookie: &str) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let removed = sessions.remove(&key(cookie)).is_some();
        drop(sessions);
        if removed {
            self.announce_end();
        }
    }

    /// Changes whenever a session ends before its time, so whoever holds a stream open for a
    /// session can look again at once. (Expiry is not announced: its time is known in advance.)
    pub fn watch_ended(&self) -> watch::Receiver<u64> {
        self.ended.subscribe()
    }

    fn announce_end(&self) {
        self.ended.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A one-time login code acting as the token with hash `token_hash`.
    pub fn login_code(&self, token_hash: [u8; 32]) -> String {
        let code = random_hex();
        let mut codes = self.codes.lock().unwrap_or_else(|p| p.into_inner());
        codes.insert(digest(&code), (Instant::now() + LOGIN_CODE_TTL, token_hash));
        code
    }

    /// Spends a login code: the token hash it acts as, once.
    pub fn redeem(&self, code: &str) -> Option<[u8; 32]> {
        let mut codes = self.codes.lock().unwrap_or_else(|p| p.into_inner());
        codes
            .remove(&digest(code))
            .filter(|(expires, _)| *expires > Instant::now())
            .map(|(_, hash)| hash)
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

    #[test]
    fn sessions_codes_and_cookies() {
        let sessions = Sessions::new(2);
        let id = sessions.create([1; 32], "a");
        let session = sessions.get(&id).unwrap();
        assert_eq!(session.token_hash, [1; 32]);
        let h = headers(&[
            ("cookie", &format!("a=b; {COOKIE}={id}")),
            (CSRF_HEADER, &session.csrf),
        ]);
        assert_eq!(cookie(&h), Some(id.as_str()));
        assert!(csrf_ok(&h, &session));
        assert!(!csrf_ok(&headers(&[(CSRF_HEADER, "nope")]), &session));
        let mut ended = sessions.watch_ended();
        sessions.remove(&id);
        assert!(sessions.get(&id).is_none());
        assert!(ended.has_changed().unwrap(), "a logout is announced");
        ended.mark_unchanged();
        sessions.remove(&id);
        assert!(
            !ended.has_changed().unwrap(),
            "ending no session announces nothing"
        );

        // One principal's sessions make room for each other, not for others'.
        let mine = [sessions.create([4; 32], "b"), sessions.create([4; 32], "b")];
        let other = sessions.create([5; 32], "c");
        let newest = sessions.create([4; 32], "b");
        assert!(sessions.get(&mine[0]).is_none(), "b's oldest made room");
        assert!(sessions.get(&mine[1]).is_some() && sessions.get(&newest).is_some());
        assert!(sessions.get(&other).is_some(), "c's session is not b's to end");

        // An expired session is gone, though nobody removed it.
        let id = sessions.create([3; 32], "a");
        sessions
            .sessions
            .lock()
            .unwrap()
            .get_mut(&key(&id))
            .unwrap()
            .expires = Instant::now();
        assert!(sessions.get(&id).is_none() && sessions.get_by_key(&key(&id)).is_none());

        assert!(set_cookie("v", secure_cookie(Some("https://yard.example.com"))).ends_with("; Secure"));
        assert!(set_cookie("v", secure_cookie(Some("HTTPS://yard.example.com/x"))).ends_with("; Secure"));
        assert!(!set_cookie("v", secure_cookie(Some("http://127.0.0.1:7311"))).contains("Secure"));
        assert!(!set_cookie("v", secure_cookie(None)).contains("Secure"));

        let code = sessions.login_code([2; 32]);
        assert_eq!(sessions.redeem(&code), Some([2; 32]));
        assert_eq!(sessions.redeem(&code), None, "a code works once");
    }
}
