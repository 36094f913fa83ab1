//! Answers through a path prefix (`/services/NAME/…`) come from an
//! application that thinks it lives at `/`: its redirects, content
//! locations, refreshes and cookie paths point at its own root and would
//! leave the prefix. They are rewritten to go through it:
//!
//! - an absolute path `/a` becomes `PREFIX/a`;
//! - a relative reference (`a`, `../a`, `?q`) is resolved against the
//!   path the application was asked for, then prefixed, so one that
//!   climbs above the application's root stays inside the prefix;
//! - an absolute URL whose authority is the public host the client used,
//!   or the address of one of the release's instances (`localhost` with
//!   an instance's port too), becomes `SCHEME://PUBLIC-HOST/PREFIX/…`;
//! - `Set-Cookie`'s `Path=/a` becomes `Path=PREFIX/a` (`Path=/`:
//!   `Path=PREFIX`).
//!
//! Anything already under the prefix (an application that reads
//! `X-Forwarded-Prefix`), other hosts and other schemes stay as they are.
//! Only prefix routes get here, and only answers that carry one of these
//! headers cost more than a look at the header map.

use std::net::SocketAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::Authority;

/// `Refresh` is not among `http`'s constants.
const REFRESH: HeaderName = HeaderName::from_static("refresh");

/// What an answer's links are rewritten with.
pub(crate) struct Links<'a> {
    /// `/services/NAME` or `/services/NAME_VERSION`.
    pub prefix: &'a str,
    /// The path and query the application was asked for (its own).
    pub asked: &'a str,
    /// The `Host` the client sent, when it sent one.
    pub public_host: Option<&'a HeaderValue>,
    /// The release's instances: an absolute URL naming one of them points
    /// back at the application.
    pub instances: &'a [SocketAddr],
}

/// The header fields whose links are rewritten.
pub(crate) const LINKING: [HeaderName; 4] = [
    header::LOCATION,
    header::CONTENT_LOCATION,
    header::SET_COOKIE,
    REFRESH,
];

/// Whether the answer carries a header that may point back at the
/// application: the only cost when none does. The names are compared, not
/// looked up: an answer's map holds few names (the others travel outside
/// it, `VerbatimFields`), and comparing a standard name costs less than
/// hashing it.
pub(crate) fn has_links(headers: &HeaderMap) -> bool {
    headers.keys().any(|name| LINKING.contains(name))
}

/// Rewrites every link of the answer's headers that points back at the
/// application so that it goes through the prefix.
pub(crate) fn rewrite(headers: &mut HeaderMap, links: &Links<'_>) {
    for name in [header::LOCATION, header::CONTENT_LOCATION] {
        if let Some(new) = headers
            .get(&name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| links.url(v))
            .and_then(|v| HeaderValue::from_str(&v).ok())
        {
            headers.insert(name, new);
        }
    }
    if let Some(new) = headers
        .get(&REFRESH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| links.refresh(v))
        .and_then(|v| HeaderValue::from_str(&v).ok())
    {
        headers.insert(REFRESH, new);
    }
    if headers.contains_key(header::SET_COOKIE) {
        let cookies: Vec<HeaderValue> = headers
            .get_all(header::SET_COOKIE)
            .iter()
            .cloned()
            .collect();
        let rewritten: Vec<Option<HeaderValue>> = cookies
            .iter()
            .map(|c| {
                c.to_str()
                    .ok()
                    .and_then(|c| links.cookie(c))
                    .and_then(|c| HeaderValue::from_str(&c).ok())
            })
            .collect();
        if rewritten.iter().any(Option::is_some) {
            headers.remove(header::SET_COOKIE);
            for (old, new) in cookies.into_iter().zip(rewritten) {
                headers.append(header::SET_COOKIE, new.unwrap_or(old));
            }
        }
    }
}

impl Links<'_> {
    /// The URL rewritten to go through the prefix, or `None` when it does
    /// not point back at the application (or does so already).
    fn url(&self, url: &str) -> Option<String> {
        let url = url.trim();
        if let Some(rest) = url.strip_prefix("//") {
            let (authority, path) = split_authority(rest);
            let host = self.ours(authority)?;
            return Some(format!("//{host}{}", self.prefixed(path)?));
        }
        if url.starts_with('/') {
            return self.prefixed(url);
        }
        if let Some((scheme, rest)) = url.split_once("://") {
            if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
                return None;
            }
            let (authority, path) = split_authority(rest);
            let host = self.ours(authority)?;
            let public = self.public_host.and_then(|h| h.to_str().ok());
            // An instance's own address is reached by plain HTTP; the
            // public host with the scheme the application named.
            let scheme = if public.is_some_and(|p| p.eq_ignore_ascii_case(authority)) {
                scheme
            } else {
                "http"
            };
            return Some(format!("{scheme}://{host}{}", self.prefixed(path)?));
        }
        if has_scheme(url) || url.is_empty() {
            return None;
        }
        self.prefixed(&self.resolve(url)?)
    }

    /// `PREFIX` + the application's absolute path (`/` when empty), or
    /// `None` when it is under the prefix already.
    fn prefixed(&self, path: &str) -> Option<String> {
        let path = if path.is_empty() { "/" } else { path };
        let within = path
            .strip_prefix(self.prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['/', '?', '#']));
        if within {
            return None;
        }
        if !path.starts_with(['/', '?', '#']) {
            return None;
        }
        Some(format!("{}{path}", self.prefix))
    }

    /// A relative reference resolved against the path the application
    /// was asked for (RFC 3986 5.2): an absolute path, query included.
    fn resolve(&self, reference: &str) -> Option<String> {
        let asked = if self.asked.starts_with('/') {
            self.asked.to_owned()
        } else {
            format!("/{}", self.asked)
        };
        let base = url::Url::parse(&format!("http://application{asked}")).ok()?;
        let joined = base.join(reference).ok()?;
        let mut out = joined.path().to_owned();
        if let Some(q) = joined.query() {
            out.push('?');
            out.push_str(q);
        }
        if let Some(f) = joined.fragment() {
            out.push('#');
            out.push_str(f);
        }
        Some(out)
    }

    /// The public host to put in place of `authority` when it names the
    /// application (the public host itself, or one of its instances).
    fn ours(&self, authority: &str) -> Option<&str> {
        let public = self.public_host.and_then(|h| h.to_str().ok())?;
        if authority.eq_ignore_ascii_case(public) {
            return Some(public);
        }
        let named: Authority = authority.parse().ok()?;
        let port = named.port_u16()?;
        let host = named.host().trim_start_matches('[').trim_end_matches(']');
        let instance = self.instances.iter().any(|addr| {
            addr.port() == port
                && (host.parse::<std::net::IpAddr>().ok() == Some(addr.ip())
                    || (addr.ip().is_loopback() && host.eq_ignore_ascii_case("localhost")))
        });
        instance.then_some(public)
    }

    /// `Refresh: 5; url=/a` with its URL rewritten.
    fn refresh(&self, value: &str) -> Option<String> {
        let lower = value.to_ascii_lowercase();
        let at = lower.find("url=")? + "url=".len();
        let (head, target) = value.split_at(at);
        let trimmed = target.trim();
        let quote = trimmed
            .chars()
            .next()
            .filter(|c| (*c == '\'' || *c == '"') && trimmed.len() >= 2);
        let inner = match quote {
            Some(q) => trimmed.strip_prefix(q)?.strip_suffix(q)?,
            None => trimmed,
        };
        let new = self.url(inner)?;
        let q = quote.map(String::from).unwrap_or_default();
        Some(format!("{head}{q}{new}{q}"))
    }

    /// `Set-Cookie` with its `Path` under the prefix.
    fn cookie(&self, value: &str) -> Option<String> {
        let mut changed = false;
        let parts: Vec<String> = value
            .split(';')
            .enumerate()
            .map(|(i, part)| {
                let trimmed = part.trim_start();
                let is_path = i > 0
                    && trimmed
                        .get(..5)
                        .is_some_and(|p| p.eq_ignore_ascii_case("path="));
                if !is_path {
                    return part.to_owned();
                }
                let path = trimmed[5..].trim();
                if !path.starts_with('/') {
                    return part.to_owned();
                }
                let new = if path == "/" {
                    Some(self.prefix.to_owned())
                } else {
                    self.prefixed(path)
                };
                match new {
                    Some(new) => {
                        changed = true;
                        let lead = &part[..part.len() - trimmed.len()];
                        format!("{lead}{}={new}", &trimmed[..4])
                    }
                    None => part.to_owned(),
                }
            })
            .collect();
        changed.then(|| parts.join(";"))
    }
}

/// `host:port/path?q` → (`host:port`, `/path?q`).
fn split_authority(rest: &str) -> (&str, &str) {
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    rest.split_at(end)
}

/// `mailto:x`, `urn:y`: a scheme of its own (RFC 3986 3.1).
fn has_scheme(url: &str) -> bool {
    match url.split_once(':') {
        Some((scheme, _)) => {
            let mut bytes = scheme.bytes();
            bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
                && bytes.all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links<'a>(asked: &'a str, host: &'a HeaderValue, instances: &'a [SocketAddr]) -> Links<'a> {
        Links {
            prefix: "/services/app",
            asked,
            public_host: Some(host),
            instances,
        }
    }

    fn check(asked: &str, cases: &[(&str, Option<&str>)]) {
        let host = HeaderValue::from_static("proxy.example:8080");
        let instances = [SocketAddr::from(([127, 0, 0, 1], 41000))];
        let l = links(asked, &host, &instances);
        for (given, wanted) in cases {
            assert_eq!(l.url(given).as_deref(), *wanted, "{given}");
        }
    }

    #[test]
    fn absolute_paths_go_through_the_prefix() {
        check(
            "/relative-redirect/2",
            &[
                (
                    "/relative-redirect/1",
                    Some("/services/app/relative-redirect/1"),
                ),
                ("/", Some("/services/app/")),
                ("/get?a=1#x", Some("/services/app/get?a=1#x")),
                ("/services/app/already", None),
                ("/services/app", None),
                ("/services/apple", Some("/services/app/services/apple")),
            ],
        );
    }

    #[test]
    fn relative_references_are_resolved_against_the_asked_path() {
        check(
            "/a/b/c?x=1",
            &[
                ("d", Some("/services/app/a/b/d")),
                ("../d", Some("/services/app/a/d")),
                ("../../../../d", Some("/services/app/d")),
                ("?y=2", Some("/services/app/a/b/c?y=2")),
                ("", None),
                ("mailto:someone@example.com", None),
            ],
        );
    }

    #[test]
    fn absolute_urls_naming_the_application_get_the_public_host_and_prefix() {
        check(
            "/",
            &[
                (
                    "http://proxy.example:8080/absolute-redirect/1",
                    Some("http://proxy.example:8080/services/app/absolute-redirect/1"),
                ),
                (
                    "https://PROXY.example:8080/x",
                    Some("https://proxy.example:8080/services/app/x"),
                ),
                (
                    "http://127.0.0.1:41000/get",
                    Some("http://proxy.example:8080/services/app/get"),
                ),
                (
                    "http://localhost:41000",
                    Some("http://proxy.example:8080/services/app/"),
                ),
                (
                    "//127.0.0.1:41000/a",
                    Some("//proxy.example:8080/services/app/a"),
                ),
                ("http://127.0.0.1:41001/other", None),
                ("http://elsewhere.example/x", None),
                ("ftp://proxy.example:8080/x", None),
                ("http://proxy.example:8080/services/app/x", None),
            ],
        );
    }

    #[test]
    fn refresh_keeps_its_delay_and_quotes() {
        let host = HeaderValue::from_static("h");
        let l = links("/", &host, &[]);
        assert_eq!(
            l.refresh("5; url=/next").as_deref(),
            Some("5; url=/services/app/next")
        );
        assert_eq!(
            l.refresh("0;URL='/next'").as_deref(),
            Some("0;URL='/services/app/next'")
        );
        assert_eq!(l.refresh("5").as_deref(), None);
        assert_eq!(l.refresh("5; url=http://other/").as_deref(), None);
    }

    #[test]
    fn cookie_paths_go_under_the_prefix() {
        let host = HeaderValue::from_static("h");
        let l = links("/", &host, &[]);
        assert_eq!(
            l.cookie("k=v; Path=/").as_deref(),
            Some("k=v; Path=/services/app")
        );
        assert_eq!(
            l.cookie("k=v; HttpOnly; path=/admin; Max-Age=60")
                .as_deref(),
            Some("k=v; HttpOnly; path=/services/app/admin; Max-Age=60")
        );
        assert_eq!(l.cookie("k=v; Path=/services/app/x"), None);
        assert_eq!(l.cookie("k=v"), None, "no Path: the client's default fits");
        assert_eq!(l.cookie("path=/; x=y"), None, "a cookie named path");
    }

    #[test]
    fn an_answer_has_links_when_it_carries_any_linking_field() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("2"));
        h.insert("x-request-id", HeaderValue::from_static("id"));
        assert!(!has_links(&h));
        for name in LINKING {
            let mut with = h.clone();
            with.insert(name.clone(), HeaderValue::from_static("/a"));
            assert!(has_links(&with), "{name}");
        }
    }

    #[test]
    fn every_header_is_rewritten_and_others_kept() {
        let host = HeaderValue::from_static("h:1");
        let l = links("/cookies/set?k=v", &host, &[]);
        let mut h = HeaderMap::new();
        h.insert(header::LOCATION, HeaderValue::from_static("/cookies"));
        h.insert(header::CONTENT_LOCATION, HeaderValue::from_static("x"));
        h.insert(REFRESH, HeaderValue::from_static("1; url=/"));
        h.append(header::SET_COOKIE, HeaderValue::from_static("a=1; Path=/"));
        h.append(header::SET_COOKIE, HeaderValue::from_static("b=2"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
        assert!(has_links(&h));
        rewrite(&mut h, &l);
        assert_eq!(h[header::LOCATION], "/services/app/cookies");
        assert_eq!(h[header::CONTENT_LOCATION], "/services/app/cookies/x");
        assert_eq!(h[REFRESH], "1; url=/services/app/");
        let cookies: Vec<_> = h.get_all(header::SET_COOKIE).iter().collect();
        assert_eq!(cookies, ["a=1; Path=/services/app", "b=2"]);
        assert_eq!(h[header::CONTENT_TYPE], "text/html");
    }
}
