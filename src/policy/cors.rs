//! PURE: which browser origins may call `/delegation` (CORS), from the SAMLApps'
//! `allowedOrigins` (Auth0's "Allowed Web Origins").
//!
//! auth0.js posts form-encoded bodies, which browsers send without a preflight, so the server
//! itself refuses a `POST` whose `Origin` the target app does not list: CORS headers alone only
//! stop the page from reading the answer, not the credentials from being issued. Cookies are
//! never involved: `Access-Control-Allow-Credentials` is never sent.

/// The methods a preflight for `/delegation` may ask for.
pub const ALLOWED_METHODS: &str = "POST";
/// The request headers a preflight may ask for (JSON bodies need `Content-Type`).
pub const ALLOWED_HEADERS: &str = "content-type";
/// How long a browser may cache a preflight answer, in seconds.
pub const MAX_AGE_SECONDS: u32 = 600;

/// An origin in the form browsers send it: `scheme://host[:port]`, lower-case, no default
/// port, no path. `None` when `text` is not one (a path, userinfo, `null`, a `*`, spaces…).
pub fn parse_origin(text: &str) -> Option<String> {
    let (scheme, rest) = text.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if !matches!(scheme.as_str(), "http" | "https") || rest.is_empty() {
        return None;
    }
    if rest.contains(['/', '?', '#', '@', '\\', '*'])
        || rest.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return None;
    }
    let host = rest.to_ascii_lowercase();
    let (name, port) = match host.rsplit_once(':') {
        Some((name, _)) if !name.ends_with(']') && name.contains(':') => (host.as_str(), None),
        Some((name, port)) => (name, Some(port)),
        None => (host.as_str(), None),
    };
    if name.is_empty() {
        return None;
    }
    let port = match port {
        Some(p) => {
            let n: u16 = p.parse().ok().filter(|n| *n > 0)?;
            let default = if scheme == "https" { 443 } else { 80 };
            (n != default).then_some(n)
        }
        None => None,
    };
    Some(match port {
        Some(p) => format!("{scheme}://{name}:{p}"),
        None => format!("{scheme}://{name}"),
    })
}

/// One entry of `allowedOrigins`: an exact origin, or, as Auth0's "Allowed Web Origins"
/// takes them, `scheme://*.domain[:port]`, which allows every origin of that scheme and port
/// whose host is one more DNS label in front of `domain` (`https://*.example.com` allows
/// `https://app.example.com`, not `https://example.com` nor `https://a.b.example.com`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedOrigin {
    /// Exactly this origin, normalised as [`parse_origin`] does.
    Exact(String),
    /// Any single label in front of the host of `origin` (itself normalised, without the `*.`).
    Subdomains {
        /// `scheme://`.
        scheme: String,
        /// The domain after `*.`, lower-case.
        domain: String,
        /// `:port` when not the scheme's default, else empty.
        port: String,
    },
}

/// An `allowedOrigins` entry, or `None` when it is neither an origin nor a subdomain wildcard
/// (a `*` anywhere but as the whole first label, a wildcard over an IP address or a single
/// label such as `*.com`).
pub fn parse_allowed(text: &str) -> Option<AllowedOrigin> {
    let (scheme, rest) = text.split_once("://")?;
    let Some(tail) = rest.strip_prefix("*.") else {
        return parse_origin(text).map(AllowedOrigin::Exact);
    };
    let origin = parse_origin(&format!("{scheme}://{tail}"))?;
    let (scheme, host_port) = origin.split_once("://")?;
    let (domain, port) = match host_port.rsplit_once(':') {
        Some((d, p)) if !d.ends_with(']') && !d.is_empty() => (d, format!(":{p}")),
        _ => (host_port, String::new()),
    };
    let is_ip = domain.starts_with('[') || domain.parse::<std::net::Ipv4Addr>().is_ok();
    if is_ip || !domain.contains('.') || domain.split('.').any(str::is_empty) {
        return None;
    }
    Some(AllowedOrigin::Subdomains {
        scheme: format!("{scheme}://"),
        domain: domain.to_owned(),
        port,
    })
}

impl AllowedOrigin {
    /// Whether `origin` (normalised by [`parse_origin`]) is allowed.
    pub fn allows(&self, origin: &str) -> bool {
        match self {
            Self::Exact(exact) => exact == origin,
            Self::Subdomains {
                scheme,
                domain,
                port,
            } => {
                let Some(rest) = origin.strip_prefix(scheme.as_str()) else {
                    return false;
                };
                let (host, origin_port) = match rest.rsplit_once(':') {
                    Some((host, p)) if !host.ends_with(']') => (host, format!(":{p}")),
                    _ => (rest, String::new()),
                };
                // Another port (or none where the pattern names one) is another origin.
                origin_port == *port
                    && host
                        .strip_suffix(domain.as_str())
                        .and_then(|label| label.strip_suffix('.'))
                        .is_some_and(|label| {
                            !label.is_empty() && !label.contains(['.', ':', '[', ']'])
                        })
            }
        }
    }
}

/// The headers of a preflight answer for the allowed `origin` (beside `Vary: Origin`).
pub fn preflight_headers(origin: &str) -> [(&'static str, String); 4] {
    [
        ("access-control-allow-origin", origin.to_owned()),
        ("access-control-allow-methods", ALLOWED_METHODS.to_owned()),
        ("access-control-allow-headers", ALLOWED_HEADERS.to_owned()),
        ("access-control-max-age", MAX_AGE_SECONDS.to_string()),
    ]
}

/// What to do with a request's `Origin`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No `Origin`: not a browser's cross-origin request (curl, SDKs); no CORS headers.
    NoOrigin,
    /// The origin is allowed: answer with `Access-Control-Allow-Origin: <origin>` and
    /// `Vary: Origin`.
    Allowed(String),
    /// Refused, with the reason for the 403.
    Refused(String),
}

fn shown(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(200).collect()
}

fn allows(allowed: &[String], origin: &str) -> bool {
    allowed
        .iter()
        .filter_map(|a| parse_allowed(a))
        .any(|a| a.allows(origin))
}

/// A `POST /delegation` for SAMLApp `app` (whose `allowedOrigins` are `allowed`, empty when the
/// app does not exist) from `origin`.
pub fn for_request(origin: Option<&str>, app: &str, allowed: &[String]) -> Decision {
    let Some(raw) = origin else {
        return Decision::NoOrigin;
    };
    match parse_origin(raw) {
        Some(origin) if allows(allowed, &origin) => Decision::Allowed(origin),
        Some(origin) => Decision::Refused(format!(
            "origin {origin:?} may not call /delegation for SAMLApp {app:?}: it is not in the app's allowedOrigins"
        )),
        None => Decision::Refused(format!(
            "origin {:?} is not a web origin; browser applications may call /delegation only from an origin a SAMLApp lists in allowedOrigins",
            shown(raw)
        )),
    }
}

/// A preflight `OPTIONS /delegation` from `origin` asking for `method`: allowed when some app
/// lists the origin (the preflight names no app; the `POST` itself is checked against its
/// target) and the method is `POST`.
pub fn for_preflight<'a>(
    origin: Option<&str>,
    method: Option<&str>,
    mut apps: impl Iterator<Item = &'a [String]>,
) -> Decision {
    let Some(raw) = origin else {
        return Decision::NoOrigin;
    };
    let Some(origin) = parse_origin(raw) else {
        return Decision::Refused(format!("origin {:?} is not a web origin", shown(raw)));
    };
    if method.is_some_and(|m| m != ALLOWED_METHODS) {
        return Decision::Refused(format!(
            "/delegation answers only {ALLOWED_METHODS}, not {:?}",
            method.map(shown).unwrap_or_default()
        ));
    }
    if apps.any(|allowed| allows(allowed, &origin)) {
        Decision::Allowed(origin)
    } else {
        Decision::Refused(format!(
            "origin {origin:?} is in no SAMLApp's allowedOrigins"
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn list(origins: &[&str]) -> Vec<String> {
        origins.iter().map(|o| (*o).to_owned()).collect()
    }

    #[test]
    fn origins_are_normalised_as_browsers_send_them() {
        assert_eq!(
            parse_origin("HTTPS://App.Example.com:443").as_deref(),
            Some("https://app.example.com")
        );
        assert_eq!(
            parse_origin("http://127.0.0.1:8080").as_deref(),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(
            parse_origin("http://[::1]:3000").as_deref(),
            Some("http://[::1]:3000")
        );
        for bad in [
            "null",
            "https://app.example.com/",
            "https://app.example.com/path",
            "https://user@app.example.com",
            "ftp://app.example.com",
            "https://",
            "https://app.example.com:0",
            "https://app.example.com:99999",
            "https://app .example.com",
            "app.example.com",
        ] {
            assert_eq!(parse_origin(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_subdomain_wildcard_allows_one_label_of_the_same_scheme_and_port() {
        let allowed = list(&["https://*.example.com", "http://*.dev.test:3000"]);
        let allowed_for = |origin: &str| matches!(for_request(Some(origin), "aws", &allowed), Decision::Allowed(o) if o == origin);
        for yes in [
            "https://app.example.com",
            "https://app.example.com:443",
            "HTTPS://App.Example.com",
            "http://web.dev.test:3000",
        ] {
            assert!(allowed_for(&parse_origin(yes).unwrap()), "{yes}");
        }
        for no in [
            "https://example.com",
            "https://a.b.example.com",
            "https://app.example.com:8443",
            "http://app.example.com",
            "https://appexample.com",
            "https://app.example.com.evil.test",
            "https://evil.test",
            "http://web.dev.test",
            "http://web.dev.test:3001",
        ] {
            assert!(!allowed_for(no), "{no}");
        }
        // Only a whole first label may be a wildcard, over a domain name.
        for bad in [
            "https://*",
            "https://*.com",
            "https://app*.example.com",
            "https://app.*.example.com",
            "https://*.*.example.com",
            "https://*.10.0.0.1",
            "https://*.[::1]",
            "*.example.com",
            "https://*.example.com/path",
        ] {
            assert_eq!(parse_allowed(bad), None, "{bad}");
        }
        // An Origin header is never a pattern.
        assert_eq!(parse_origin("https://*.example.com"), None);
    }

    #[test]
    fn no_origin_is_not_cors() {
        assert_eq!(
            for_request(None, "aws", &list(&["https://app.test"])),
            Decision::NoOrigin
        );
        assert_eq!(for_request(None, "aws", &[]), Decision::NoOrigin);
        assert_eq!(
            for_preflight(None, Some("POST"), std::iter::empty()),
            Decision::NoOrigin
        );
    }

    #[test]
    fn an_allowed_origin_is_echoed_exactly() {
        let allowed = list(&["https://app.test", "http://localhost:3000"]);
        assert_eq!(
            for_request(Some("https://app.test"), "aws", &allowed),
            Decision::Allowed("https://app.test".into())
        );
        assert_eq!(
            for_request(Some("http://localhost:3000"), "aws", &allowed),
            Decision::Allowed("http://localhost:3000".into())
        );
    }

    #[test]
    fn another_origin_is_refused_with_the_reason() {
        let allowed = list(&["https://app.test"]);
        assert_eq!(
            for_request(Some("https://evil.test"), "aws", &allowed),
            Decision::Refused(
                "origin \"https://evil.test\" may not call /delegation for SAMLApp \"aws\": it is not in the app's allowedOrigins".into()
            )
        );
        // Same host, other scheme or port: another origin.
        for other in ["http://app.test", "https://app.test:8443", "null"] {
            assert!(
                matches!(
                    for_request(Some(other), "aws", &allowed),
                    Decision::Refused(_)
                ),
                "{other}"
            );
        }
        // An app that lists none allows no browser application.
        assert!(matches!(
            for_request(Some("https://app.test"), "other", &[]),
            Decision::Refused(_)
        ));
    }

    #[test]
    fn a_preflight_is_answered_for_an_origin_some_app_allows() {
        let apps = [list(&[]), list(&["https://app.test"])];
        let iter = || apps.iter().map(Vec::as_slice);
        assert_eq!(
            for_preflight(Some("https://app.test"), Some("POST"), iter()),
            Decision::Allowed("https://app.test".into())
        );
        assert!(matches!(
            for_preflight(Some("https://evil.test"), Some("POST"), iter()),
            Decision::Refused(_)
        ));
        assert!(matches!(
            for_preflight(Some("https://app.test"), Some("DELETE"), iter()),
            Decision::Refused(_)
        ));
    }
}
