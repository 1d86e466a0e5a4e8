//! HTML building: every dynamic value goes through [`esc`]; the page layout and CSS.

use std::fmt::Write;

use chrono::{DateTime, Utc};

/// Escape text for HTML element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encode a query parameter value.
pub fn q(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A timestamp as `YYYY-MM-DD HH:MM:SS UTC`, or a dash.
pub fn ts(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "—".into())
}

/// Shorten to `n` characters.
pub fn short(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

const CSS: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}\
header{background:#1d2a44;color:#fff;padding:.6rem 1.2rem;display:flex;gap:1.2rem;align-items:center}\
header a{color:#dfe6f5;text-decoration:none}header a:hover{color:#fff}header .who{margin-left:auto;font-size:12px}\
main{padding:1rem 1.2rem;max-width:1300px}h1{font-size:20px;margin:.2rem 0 1rem}h2{font-size:16px;margin:1.4rem 0 .5rem}\
table{border-collapse:collapse;width:100%;background:#fff}th,td{padding:.35rem .5rem;border-bottom:1px solid #e3e6eb;text-align:left;vertical-align:top}\
th{background:#eef1f5;font-weight:600}td.num,th.num{text-align:right}code,pre{font:12px ui-monospace,monospace}\
pre{background:#fff;border:1px solid #e3e6eb;padding:.6rem;overflow:auto;max-height:26rem}\
.flash{background:#e7f5ea;border:1px solid #9fd3ab;padding:.5rem .8rem;margin-bottom:1rem}\
.error{background:#fdecea;border:1px solid #f1a9a0;padding:.5rem .8rem;margin-bottom:1rem}\
.st{display:inline-block;padding:0 .45rem;border-radius:.6rem;font-size:12px;background:#e4e7ec}\
.st-failed,.st-killed,.st-needs_reauth,.st-calendar_missing,.st-failing{background:#f9d6d2}.st-done,.st-ok{background:#d4efd9}\
.st-running{background:#d6e4fb}.st-retrying{background:#fbecc8}form.inline{display:inline}\
button{font:inherit;padding:.2rem .7rem;border:1px solid #8592a8;border-radius:.25rem;background:#fff;cursor:pointer}\
button.danger{border-color:#c0392b;color:#c0392b}input,select{font:inherit;padding:.2rem .3rem}\
.cards{display:flex;gap:.8rem;flex-wrap:wrap}.card{background:#fff;border:1px solid #e3e6eb;padding:.6rem .9rem;min-width:9rem}\
.card b{display:block;font-size:20px}.muted{color:#6b7587}.filters{margin-bottom:.8rem;display:flex;gap:.6rem;flex-wrap:wrap;align-items:end}";

/// The whole page around `body`.
pub fn page(title: &str, who: Option<&str>, csrf: &str, flash: Option<&str>, body: &str) -> String {
    let nav = match who {
        Some(role) => format!(
            "<a href=\"/\">Overview</a><a href=\"/jobs\">Jobs</a><a href=\"/runs\">Nightly runs</a>\
             <a href=\"/users\">Users</a><a href=\"/audit\">Audit log</a>\
             <span class=\"who\">{} · <form class=\"inline\" method=\"post\" action=\"/logout\">{}\
             <button>Log out</button></form></span>",
            esc(role),
            csrf_field(csrf)
        ),
        None => String::new(),
    };
    let flash = flash
        .filter(|f| !f.is_empty())
        .map(|f| format!("<div class=\"flash\" role=\"status\">{}</div>", esc(f)))
        .unwrap_or_default();
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{} · calsync</title><style>{CSS}</style></head><body>\
         <header><strong>calsync</strong>{nav}</header><main><h1>{}</h1>{flash}{body}</main></body></html>",
        esc(title),
        esc(title)
    )
}

/// The hidden CSRF input.
pub fn csrf_field(csrf: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(csrf)
    )
}

/// A state badge.
pub fn badge(state: &str) -> String {
    format!("<span class=\"st st-{0}\">{0}</span>", esc(state))
}

/// A POST button form.
pub fn button(
    action: &str,
    label: &str,
    csrf: &str,
    hidden: &[(&str, String)],
    danger: bool,
) -> String {
    let mut fields = csrf_field(csrf);
    for (k, v) in hidden {
        let _ = write!(
            fields,
            "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
            esc(k),
            esc(v)
        );
    }
    format!(
        "<form class=\"inline\" method=\"post\" action=\"{}\">{fields}<button{}>{}</button></form>",
        esc(action),
        if danger { " class=\"danger\"" } else { "" },
        esc(label)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(q("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }
}
