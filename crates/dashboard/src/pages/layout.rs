//! The page layout, the stylesheet and small shared components. Everything is a maud
//! template: dynamic values are escaped by construction (`PreEscaped` is never used on
//! data).
//!
//! Why maud rather than askama: templates are plain Rust functions returning `Markup`,
//! so components (tables, badges, buttons; later SVG charts and the week grid) compose
//! as functions with type-checked arguments, there is no template file and context
//! struct to keep in sync, and the only way around escaping is an explicit, greppable
//! `PreEscaped`.

use axum::{
    http::{HeaderValue, header},
    response::{Html, IntoResponse, Response},
};
use calsync_domain::queue::JobState;
use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// The stylesheet, served as `/static/dashboard.css` (the CSP allows no inline styles).
pub const CSS: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}\
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
.st-running{background:#d6e4fb}.st-retrying,.st-retried{background:#fbecc8}.st-abandoned{background:#e6dcf5}form.inline{display:inline}\
.cls{font-size:12px}.cls-interactive{font-weight:600}.cls-maintenance{color:#667}\
button{font:inherit;padding:.2rem .7rem;border:1px solid #8592a8;border-radius:.25rem;background:#fff;cursor:pointer}\
button.danger{border-color:#c0392b;color:#c0392b}input,select{font:inherit;padding:.2rem .3rem}\
.cards{display:flex;gap:.8rem;flex-wrap:wrap}.card{background:#fff;border:1px solid #e3e6eb;padding:.6rem .9rem;min-width:9rem}\
.card b{display:block;font-size:20px}.muted{color:#6b7587}.filters{margin-bottom:.8rem;display:flex;gap:.6rem;flex-wrap:wrap;align-items:end}\
.card.bad b{color:#c0392b}.note{color:#6b7587;font-size:12px;margin:.2rem 0 .6rem}\
svg.chart{display:block;width:100%;height:auto;background:#fff;border:1px solid #e3e6eb}\
.grid line{stroke:#e3e6eb}.grid line.tick{stroke:#8592a8}.xlabel,.ylabel{font-size:11px;fill:#6b7587}\
.xlabel{text-anchor:middle}.xlabel.start{text-anchor:start}.xlabel.end{text-anchor:end}.ylabel{text-anchor:end}polyline.line{fill:none;stroke:var(--c);stroke-width:1.5}\
.bar,.dot{fill:var(--c)}.sw{display:inline-block;width:.8rem;height:.8rem;margin-right:.3rem;vertical-align:-1px;background:var(--c)}\
.s-done,.s-succeeded{--c:#3f9a4a}.s-retried{--c:#e0a100}.s-abandoned{--c:#9b6bd1}.s-failed{--c:#c0392b}\
.s-due{--c:#8592a8}.s-duration,.s-running{--c:#3867d6}\
ul.legend{list-style:none;display:flex;gap:1rem;padding:0;margin:.3rem 0 .4rem;font-size:12px}\
.pair{display:grid;grid-template-columns:repeat(auto-fit,minmax(22rem,1fr));gap:1rem}\
details{margin:.2rem 0 1rem}summary{cursor:pointer;color:#3867d6}td pre{margin:0;max-height:10rem;white-space:pre-wrap}\
svg.week{margin:.4rem 0 .8rem}.week .hour{stroke:#d5dae2}.week .half{stroke:#eef1f5}.week .day{stroke:#d5dae2}.week .weekend{fill:#f6f7f9}\
.week .dayname{font-size:13px;font-weight:600;fill:#1d2330;text-anchor:middle}.week .block rect.box{fill:var(--c);fill-opacity:.16;stroke:var(--c);stroke-width:1.2}\
.week .block-title{font-size:12px;font-weight:600;fill:#1d2330}.week .block-line{font-size:11px;fill:#3d4656}\
.wk-0{--c:#3867d6}.wk-1{--c:#3f9a4a}.wk-2{--c:#c0392b}.wk-3{--c:#e0a100}.wk-4{--c:#9b6bd1}.wk-5{--c:#17a2b8}.wk-6{--c:#d35400}.wk-7{--c:#6b7587}\
.ch-insert{background:#d4efd9}.ch-update{background:#fbecc8}.ch-restore{background:#d6e4fb}.ch-delete{background:#f9d6d2}\
ul.fields{margin:.3rem 0 0;padding-left:1.1rem}del{background:#fdecea;text-decoration:line-through}ins{background:#e7f5ea;text-decoration:none}\
p.change-note{margin:0;color:#3d4656;font-style:italic}.card.count-insert b{color:#3f9a4a}.card.count-update b{color:#b07d00}\
.check-counts{margin-bottom:1rem}.card.count-restore b{color:#3867d6}.card.count-delete b{color:#c0392b}p.actions{margin-top:1rem}";

/// `GET /static/dashboard.css`.
pub async fn stylesheet() -> Response {
    let mut resp = ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], CSS).into_response();
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    resp
}

/// Who is logged in, for the header.
pub struct Who<'a> {
    /// "admin" or "read-only".
    pub role: &'a str,
    pub csrf: &'a str,
}

/// The whole page around `body`.
pub fn page(title: &str, who: Option<Who<'_>>, flash: Option<&str>, body: Markup) -> Html<String> {
    page_refreshing(title, who, flash, None, body)
}

/// [`page`], reloaded by the browser every `refresh` seconds when set (no script).
pub fn page_refreshing(
    title: &str,
    who: Option<Who<'_>>,
    flash: Option<&str>,
    refresh: Option<u32>,
    body: Markup,
) -> Html<String> {
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width,initial-scale=1";
                    @if let Some(secs) = refresh {
                        meta http-equiv="refresh" content=(secs);
                    }
                    title { (title) " · calsync" }
                    link rel="stylesheet" href="/static/dashboard.css";
                }
                body {
                    header {
                        strong { "calsync" }
                        @if let Some(who) = who {
                            a href="/" { "Overview" }
                            a href="/jobs" { "Jobs" }
                            a href="/runs" { "Nightly runs" }
                            a href="/users" { "Users" }
                            a href="/audit" { "Audit log" }
                            span.who {
                                (who.role) " · "
                                form.inline method="post" action="/logout" {
                                    (csrf_field(who.csrf))
                                    button { "Log out" }
                                }
                            }
                        }
                    }
                    main {
                        h1 { (title) }
                        @if let Some(f) = flash.filter(|f| !f.is_empty()) {
                            div.flash role="status" { (f) }
                        }
                        (body)
                    }
                }
            }
        }
        .into_string(),
    )
}

/// An error page (no navigation: the caller may not be logged in).
pub fn error_page(title: &str, message: &str) -> Html<String> {
    page(
        title,
        None,
        None,
        html! { div.error role="alert" { (message) } },
    )
}

/// The hidden CSRF input.
pub fn csrf_field(csrf: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(csrf); }
}

/// A state badge.
pub fn badge(state: &str) -> Markup {
    html! { span class={ "st st-" (state) } { (state) } }
}

/// A job state badge.
pub fn job_badge(state: JobState) -> Markup {
    badge(state.as_str())
}

/// A POST button form with hidden fields.
pub fn button(
    action: &str,
    label: &str,
    csrf: &str,
    hidden: &[(&str, String)],
    danger: bool,
) -> Markup {
    html! {
        form.inline method="post" action=(action) {
            (csrf_field(csrf))
            @for (k, v) in hidden {
                input type="hidden" name=(k) value=(v);
            }
            button.danger[danger] { (label) }
        }
    }
}

/// Characters left as they are in a query value (RFC 3986 unreserved).
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encode a query parameter value or a path segment.
pub fn enc(s: &str) -> String {
    utf8_percent_encode(s, QUERY_VALUE).to_string()
}

/// A query string from name/value pairs (without the `?`).
pub fn query(pairs: &[(&str, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// A timestamp as `YYYY-MM-DD HH:MM:SS UTC`, or a dash.
pub fn ts(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "—".into())
}

/// A duration in milliseconds for people: `850 ms`, `12.3 s`, `4 min 05 s`,
/// `2 h 03 min`, `3 d 04 h`.
pub fn duration_text(ms: i64) -> String {
    let ms = ms.max(0);
    let s = ms / 1000;
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{} min {:02} s", s / 60, s % 60),
        3_600_000..86_400_000 => format!("{} h {:02} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {:02} h", s / 86_400, s % 86_400 / 3600),
    }
}

/// Shorten to `n` characters.
pub fn short(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_and_encoded() {
        let m = html! { p title=("\"><script>") { ("<img src=x onerror=alert(1)>") } };
        let s = m.into_string();
        assert!(!s.contains("<script>") && !s.contains("<img"), "{s}");
        assert_eq!(enc("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
        assert_eq!(
            query(&[("state", "failed".into()), ("q", "x y".into())]),
            "state=failed&q=x%20y"
        );
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration_text(-5), "0 ms");
        assert_eq!(duration_text(850), "850 ms");
        assert_eq!(duration_text(12_345), "12.3 s");
        assert_eq!(duration_text(245_000), "4 min 05 s");
        assert_eq!(duration_text(7_380_000), "2 h 03 min");
        assert_eq!(duration_text(3 * 86_400_000 + 4 * 3_600_000), "3 d 04 h");
    }
}
