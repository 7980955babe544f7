//! PURE: the sign-in pages, server-rendered HTML with every interpolated value escaped. No
//! front-end build: one stylesheet inline, and one inline script (allowed by its hash) that
//! submits the SAML form, with a button for browsers without JavaScript.

use aws_lc_rs::digest;
use base64::Engine as _;

/// The auto-submit script; the Content-Security-Policy allows exactly this text.
pub const AUTO_SUBMIT_SCRIPT: &str = "document.getElementById('saml').submit();";

/// Escapes text for HTML element content and double-quoted attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// The CSP `script-src` source of [`AUTO_SUBMIT_SCRIPT`].
pub fn auto_submit_hash() -> String {
    let d = digest::digest(&digest::SHA256, AUTO_SUBMIT_SCRIPT.as_bytes());
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(d.as_ref())
    )
}

const STYLE: &str = "\
:root{color-scheme:light dark;--fg:#1b1f24;--muted:#57606a;--bg:#f6f8fa;--card:#fff;--line:#d0d7de;--accent:#0b5cad;--bad:#b42318}\
@media (prefers-color-scheme:dark){:root{--fg:#e6edf3;--muted:#9da7b3;--bg:#0d1117;--card:#161b22;--line:#30363d;--accent:#4493f8;--bad:#f85149}}\
*{box-sizing:border-box}body{margin:0;font:16px/1.5 system-ui,-apple-system,'Segoe UI',sans-serif;background:var(--bg);color:var(--fg)}\
main{max-width:26rem;margin:10vh auto;padding:2rem;background:var(--card);border:1px solid var(--line);border-radius:12px}\
h1{font-size:1.35rem;margin:0 0 .25rem}p{margin:.5rem 0}.muted{color:var(--muted);font-size:.9rem}\
.brand{font-weight:700;letter-spacing:.02em;color:var(--accent);margin-bottom:1.25rem}\
ul{list-style:none;padding:0;margin:1rem 0}li{margin:.5rem 0}\
a.choice,button,input[type=submit]{display:block;width:100%;padding:.7rem 1rem;border-radius:8px;border:1px solid var(--line);background:var(--card);color:var(--fg);font:inherit;text-align:left;text-decoration:none;cursor:pointer}\
a.choice:hover,a.choice:focus,button:hover,button:focus{border-color:var(--accent);outline:2px solid var(--accent);outline-offset:1px}\
button.primary{background:var(--accent);border-color:var(--accent);color:#fff;text-align:center}\
label{display:block;font-weight:600;margin:.75rem 0 .25rem}input[type=text],input[type=password]{width:100%;padding:.6rem;border:1px solid var(--line);border-radius:8px;font:inherit;background:var(--bg);color:var(--fg)}\
.role{display:flex;gap:.75rem;align-items:flex-start;padding:.7rem 1rem;border:1px solid var(--line);border-radius:8px;margin:.5rem 0;cursor:pointer}\
.role:has(input:checked){border-color:var(--accent)}.role small{display:block;color:var(--muted)}\
.error{border-left:4px solid var(--bad);padding:.25rem .75rem;margin:1rem 0}\
a{color:var(--accent)}\
";

/// A whole page: `title` is text, `body` is already-escaped HTML.
fn layout(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<meta name=\"referrer\" content=\"no-referrer\"><title>{} · rolegate</title><style>{STYLE}</style></head>\
<body><main><div class=\"brand\" aria-hidden=\"true\">rolegate</div>{body}</main></body></html>",
        escape(title)
    )
}

/// One way to sign in, as offered on the chooser.
#[derive(Debug, Clone)]
pub struct Choice {
    /// Where the link goes.
    pub href: String,
    /// What it says.
    pub label: String,
}

/// "Sign in to `app`" with one link per Connection.
pub fn chooser(app: &str, choices: &[Choice]) -> String {
    let items: String = choices
        .iter()
        .map(|c| {
            format!(
                "<li><a class=\"choice\" href=\"{}\">Continue with {}</a></li>",
                escape(&c.href),
                escape(&c.label)
            )
        })
        .collect();
    layout(
        "Sign in",
        &format!(
            "<h1>Sign in</h1><p class=\"muted\">to <strong>{}</strong></p><nav aria-label=\"Identity providers\"><ul>{items}</ul></nav>",
            escape(app)
        ),
    )
}

/// The username and password form of a `static` Connection.
pub fn password_form(app: &str, action: &str, username: &str, error: Option<&str>) -> String {
    let error = error.map_or_else(String::new, |e| {
        format!("<p class=\"error\" role=\"alert\">{}</p>", escape(e))
    });
    layout(
        "Sign in",
        &format!(
            "<h1>Sign in</h1><p class=\"muted\">to <strong>{}</strong></p>{error}\
<form method=\"post\" action=\"{}\"><label for=\"username\">Username</label>\
<input type=\"text\" id=\"username\" name=\"username\" autocomplete=\"username\" required autofocus value=\"{}\">\
<label for=\"password\">Password</label>\
<input type=\"password\" id=\"password\" name=\"password\" autocomplete=\"current-password\" required>\
<p><button class=\"primary\" type=\"submit\">Sign in</button></p></form>",
            escape(app),
            escape(action),
            escape(username)
        ),
    )
}

/// One role on the picker.
#[derive(Debug, Clone)]
pub struct RoleOption {
    /// The form value: `role-arn,provider-arn`.
    pub value: String,
    /// The role's name.
    pub name: String,
    /// What tells roles of the same name apart (their account).
    pub detail: String,
}

/// The hidden field that carries the session's CSRF token back.
fn csrf_field(csrf: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        escape(csrf)
    )
}

/// The role picker; its form carries the session's `csrf` token.
pub fn role_picker(app: &str, who: &str, action: &str, roles: &[RoleOption], csrf: &str) -> String {
    let items: String = roles
        .iter()
        .enumerate()
        .map(|(i, r)| {
            format!(
                "<label class=\"role\" for=\"role{i}\"><input type=\"radio\" id=\"role{i}\" name=\"role\" value=\"{}\"{}>\
<span>{}<small>{}</small></span></label>",
                escape(&r.value),
                if i == 0 { " checked" } else { "" },
                escape(&r.name),
                escape(&r.detail)
            )
        })
        .collect();
    layout(
        "Choose a role",
        &format!(
            "<h1>Choose a role</h1><p class=\"muted\">Signed in as <strong>{}</strong> to <strong>{}</strong></p>\
<form method=\"post\" action=\"{}\">{}<fieldset style=\"border:0;padding:0;margin:0\"><legend class=\"muted\">Roles mapped to you</legend>{items}</fieldset>\
<p><button class=\"primary\" type=\"submit\">Continue</button></p></form>\
<p class=\"muted\">Not you? <a href=\"/login/signout\">Sign in as someone else</a></p>",
            escape(who),
            escape(app),
            escape(action),
            csrf_field(csrf)
        ),
    )
}

/// "Continue to `app`?": shown instead of posting the Response at once when the sign-in was
/// started from another site. One click posts `role` (if the app takes one) with the session's
/// `csrf` token; nothing is signed before it.
pub fn confirm(
    app: &str,
    who: &str,
    action: &str,
    role: Option<&RoleOption>,
    csrf: &str,
) -> String {
    let (role_field, as_role) = role.map_or_else(
        || (String::new(), String::new()),
        |r| {
            (
                format!(
                    "<input type=\"hidden\" name=\"role\" value=\"{}\">",
                    escape(&r.value)
                ),
                format!(
                    " as <strong>{}</strong> <span class=\"muted\">({})</span>",
                    escape(&r.name),
                    escape(&r.detail)
                ),
            )
        },
    );
    layout(
        "Continue to your app",
        &format!(
            "<h1>Continue to {}?</h1><p class=\"muted\">Signed in as <strong>{}</strong></p>\
<p>A link from another site opened this sign-in. Continue only if you meant to sign in to \
<strong>{}</strong>{as_role}.</p>\
<form method=\"post\" action=\"{}\">{}{role_field}<input type=\"hidden\" name=\"confirm\" value=\"yes\">\
<p><button class=\"primary\" type=\"submit\">Continue</button></p></form>\
<p class=\"muted\">Not you? <a href=\"/login/signout\">Sign in as someone else</a></p>",
            escape(app),
            escape(who),
            escape(app),
            escape(action),
            csrf_field(csrf)
        ),
    )
}

/// The form that carries the Response to the service provider: submitted by script at once,
/// or by the button without JavaScript.
pub fn auto_post(acs: &str, saml_response: &str, relay_state: Option<&str>) -> String {
    let relay = relay_state.map_or_else(String::new, |r| {
        format!(
            "<input type=\"hidden\" name=\"RelayState\" value=\"{}\">",
            escape(r)
        )
    });
    layout(
        "Signing you in",
        &format!(
            "<h1>Signing you in…</h1><form id=\"saml\" method=\"post\" action=\"{}\">\
<input type=\"hidden\" name=\"SAMLResponse\" value=\"{}\">{relay}\
<noscript><p>JavaScript is off; continue with the button.</p></noscript>\
<p><button class=\"primary\" type=\"submit\">Continue</button></p></form><script>{AUTO_SUBMIT_SCRIPT}</script>",
            escape(acs),
            escape(saml_response)
        ),
    )
}

/// An error page: what went wrong and what to do, with an optional way on (`href`, `label`).
pub fn error(title: &str, message: &str, next: Option<(&str, &str)>) -> String {
    let retry = next.map_or_else(String::new, |(href, label)| {
        format!(
            "<p><a class=\"choice\" href=\"{}\">{}</a></p>",
            escape(href),
            escape(label)
        )
    });
    layout(
        title,
        &format!(
            "<h1>{}</h1><p class=\"error\" role=\"alert\">{}</p>{retry}",
            escape(title),
            escape(message)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_everything_interpolated() {
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        let page = chooser(
            "<app>",
            &[Choice {
                href: "/login/x?a=1&b=\"".into(),
                label: "<b>".into(),
            }],
        );
        assert!(!page.contains("<app>") && !page.contains("<b>"));
        assert!(page.contains("/login/x?a=1&amp;b=&quot;"));
        let page = error("Oops", "<script>alert(1)</script>", None);
        assert!(!page.contains("<script>alert"));
    }

    #[test]
    fn auto_post_has_a_no_script_fallback_and_the_hashed_script() {
        let page = auto_post("https://sp.test/acs", "PHNhbWw+", Some("r&s"));
        assert!(page.contains("action=\"https://sp.test/acs\""));
        assert!(page.contains("name=\"SAMLResponse\" value=\"PHNhbWw+\""));
        assert!(page.contains("name=\"RelayState\" value=\"r&amp;s\""));
        assert!(page.contains("<button class=\"primary\" type=\"submit\">"));
        assert!(page.contains(&format!("<script>{AUTO_SUBMIT_SCRIPT}</script>")));
        assert!(auto_submit_hash().starts_with("'sha256-"));
    }

    #[test]
    fn the_confirmation_posts_the_role_and_token_without_a_script() {
        let role = RoleOption {
            value: "arn:r,arn:p".into(),
            name: "reader".into(),
            detail: "Account 1".into(),
        };
        let page = confirm("aws", "carol", "/login/continue", Some(&role), "t0k");
        assert!(page.contains("name=\"role\" value=\"arn:r,arn:p\""));
        assert!(page.contains("name=\"csrf\" value=\"t0k\""));
        assert!(page.contains("<button class=\"primary\" type=\"submit\">Continue</button>"));
        assert!(!page.contains("<script") && !page.contains("SAMLResponse"));
        assert!(!confirm("wiki", "carol", "/login/continue", None, "t").contains("name=\"role\""));
    }

    #[test]
    fn pages_are_labelled_for_assistive_technology() {
        let page = password_form("aws", "/login/people", "al\"ice", Some("Wrong password"));
        assert!(page.contains("<html lang=\"en\">"));
        assert!(page.contains("<label for=\"password\">"));
        assert!(page.contains("role=\"alert\""));
        assert!(page.contains("value=\"al&quot;ice\""));
        let page = role_picker(
            "aws",
            "alice",
            "/login/continue",
            &[RoleOption {
                value: "a,b".into(),
                name: "admin".into(),
                detail: "123".into(),
            }],
            "tok<en>",
        );
        assert!(page.contains("name=\"csrf\" value=\"tok&lt;en&gt;\""));
        assert!(page.contains("<legend"));
        assert!(page.contains("<label class=\"role\" for=\"role0\">"));
    }
}
