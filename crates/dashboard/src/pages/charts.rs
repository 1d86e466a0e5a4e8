//! Server-rendered SVG charts (no JavaScript, nothing from other origins): a line chart,
//! stacked and grouped bar charts, and a timeline of job attempts. Colours come from
//! the stylesheet (`s-<series>` classes), so the strict CSP needs no inline style.
//!
//! Every chart is an `<svg role="img">` labelled by its `<title>` and `<desc>` (a
//! sentence with the totals), with a legend in HTML; pages put a data table next to it.
//! Series carry `data-series` / `data-total` (lines) and bars `data-value`, so tests
//! (and curious operators) can read the numbers back.

use maud::{Markup, html};

const W: f64 = 900.0;
const ML: f64 = 48.0; // room for the y labels
const MR: f64 = 12.0;
const MT: f64 = 10.0;
const MB: f64 = 26.0; // room for the x labels

/// One data series.
pub struct Series<'a> {
    /// CSS class suffix (`s-<key>`) and `data-series` value.
    pub key: &'a str,
    /// Legend text.
    pub label: &'a str,
    pub values: Vec<f64>,
}

impl Series<'_> {
    fn total(&self) -> f64 {
        self.values.iter().sum()
    }
}

/// A label on the x axis at a point or bar index.
pub type Tick = (usize, String);

/// The smallest 1, 2 or 5 × 10ⁿ at or above `max` (at least 1).
fn nice_ceiling(max: f64) -> f64 {
    if max.is_nan() || max <= 1.0 {
        return 1.0;
    }
    let mag = 10f64.powf(max.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|v| *v >= max)
        .unwrap_or(10.0 * mag)
}

/// A number for an axis or a tooltip: integers without decimals.
pub fn num(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round() as i64)
    } else {
        format!("{v:.1}")
    }
}

fn frame(id: &str, title: &str, desc: &str, (width, height): (f64, f64), body: Markup) -> Markup {
    html! {
        svg.chart id=(id) role="img" aria-labelledby={ (id) "-t " (id) "-d" }
            viewBox={ "0 0 " (width) " " (height) } preserveAspectRatio="xMidYMid meet"
            xmlns="http://www.w3.org/2000/svg" {
            title id={ (id) "-t" } { (title) }
            desc id={ (id) "-d" } { (desc) }
            (body)
        }
    }
}

/// Horizontal grid lines with y labels (0, half, max) and the x tick labels.
fn axes(
    (width, height): (f64, f64),
    y_max: f64,
    x_ticks: &[(f64, String)],
    y_unit: &str,
) -> Markup {
    let ph = height - MT - MB;
    html! {
        g.grid {
            @for k in 0..=2 {
                @let v = y_max * f64::from(k) / 2.0;
                @let y = MT + ph - ph * f64::from(k) / 2.0;
                line x1=(ML) x2=(width - MR) y1=(y) y2=(y) {}
                text.ylabel x=(ML - 6.0) y=(y + 4.0) { (num(v)) (y_unit) }
            }
            @for (x, label) in x_ticks {
                line.tick x1=(x) x2=(x) y1=(MT + ph) y2=(MT + ph + 4.0) {}
                text.xlabel x=(x) y=(height - 8.0) { (label) }
            }
        }
    }
}

/// The legend, in HTML.
pub fn legend(items: &[(&str, &str)]) -> Markup {
    html! {
        ul.legend {
            @for (key, label) in items {
                li { span class={ "sw s-" (key) } {} (label) }
            }
        }
    }
}

/// Most non-zero points of one series that get a marker with a tooltip (beyond that
/// the line alone keeps the page small).
const MAX_MARKERS: usize = 240;

/// A line per series over `n` evenly spaced points; non-zero points get a marker whose
/// tooltip names `labels[i]` (while a series has at most [`MAX_MARKERS`] of them).
pub fn lines(
    id: &str,
    title: &str,
    desc: &str,
    ticks: &[Tick],
    labels: &[String],
    series: &[Series],
) -> Markup {
    let height = 220.0;
    let n = series.iter().map(|s| s.values.len()).max().unwrap_or(0);
    let pw = W - ML - MR;
    let ph = height - MT - MB;
    let y_max = nice_ceiling(
        series
            .iter()
            .flat_map(|s| s.values.iter().copied())
            .fold(0.0, f64::max),
    );
    let x = |i: usize| ML + pw * i as f64 / (n.max(2) - 1) as f64;
    let y = |v: f64| MT + ph - ph * v / y_max;
    let ticks: Vec<(f64, String)> = ticks.iter().map(|(i, l)| (x(*i), l.clone())).collect();
    let body = html! {
        (axes((W, height), y_max, &ticks, ""))
        @for s in series {
            @let points = s.values.iter().enumerate()
                .map(|(i, v)| format!("{:.1},{:.1}", x(i), y(*v)))
                .collect::<Vec<_>>().join(" ");
            polyline class={ "line s-" (s.key) } data-series=(s.key) data-total=(num(s.total()))
                points=(points) {}
        }
        @for s in series {
            @let dots: Vec<(usize, f64)> = s.values.iter().copied().enumerate().filter(|(_, v)| *v > 0.0).collect();
            @if dots.len() <= MAX_MARKERS {
                @for (i, v) in dots {
                    circle class={ "dot s-" (s.key) } cx=(format!("{:.1}", x(i))) cy=(format!("{:.1}", y(v))) r="3" {
                        title { (labels.get(i).map(String::as_str).unwrap_or("")) ": " (num(v)) " " (s.label) }
                    }
                }
            }
        }
    };
    html! {
        (frame(id, title, desc, (W, height), body))
        (legend(&series.iter().map(|s| (s.key, s.label)).collect::<Vec<_>>()))
    }
}

/// One column per index, the series stacked bottom to top; `labels[i]` names column
/// `i` in its tooltip. Empty columns draw nothing.
pub fn stacked_bars(
    id: &str,
    title: &str,
    desc: &str,
    ticks: &[Tick],
    labels: &[String],
    series: &[Series],
) -> Markup {
    let height = 220.0;
    let n = labels.len().max(1);
    let pw = W - ML - MR;
    let ph = height - MT - MB;
    let sums: Vec<f64> = (0..n)
        .map(|i| {
            series
                .iter()
                .map(|s| s.values.get(i).copied().unwrap_or(0.0))
                .sum()
        })
        .collect();
    let y_max = nice_ceiling(sums.iter().copied().fold(0.0, f64::max));
    let slot = pw / n as f64;
    let bar = (slot * 0.8).max(1.0);
    let ticks: Vec<(f64, String)> = ticks
        .iter()
        .map(|(i, l)| (ML + slot * (*i as f64 + 0.5), l.clone()))
        .collect();
    // Each non-empty column: its label and (series, value, value below it) per series.
    type Part<'s, 'v> = (&'s Series<'v>, f64, f64);
    let columns: Vec<(usize, &String, Vec<Part>)> = labels
        .iter()
        .enumerate()
        .filter(|(i, _)| sums[*i] > 0.0)
        .map(|(i, label)| {
            let mut base = 0.0;
            let parts = series
                .iter()
                .map(|s| {
                    let v = s.values.get(i).copied().unwrap_or(0.0);
                    base += v;
                    (s, v, base - v)
                })
                .collect();
            (i, label, parts)
        })
        .collect();
    let body = html! {
        (axes((W, height), y_max, &ticks, ""))
        @for (i, label, parts) in &columns {
            g.col {
                title {
                    (label) ": "
                    (parts.iter().map(|(s, v, _)| format!("{} {}", num(*v), s.label)).collect::<Vec<_>>().join(", "))
                }
                @for (s, v, below) in parts.iter().filter(|p| p.1 > 0.0) {
                    rect class={ "bar s-" (s.key) } data-series=(s.key) data-value=(num(*v))
                        x=(format!("{:.1}", ML + slot * *i as f64 + (slot - bar) / 2.0))
                        y=(format!("{:.1}", MT + ph - ph * (below + v) / y_max))
                        width=(format!("{bar:.1}"))
                        height=(format!("{:.1}", ph * v / y_max)) {}
                }
            }
        }
    };
    html! {
        (frame(id, title, desc, (W, height), body))
        (legend(&series.iter().map(|s| (s.key, s.label)).collect::<Vec<_>>()))
    }
}

/// Side-by-side bars per category (e.g. per nightly run), each series one bar.
/// `width`: of the drawing (the SVG scales to its box; a half-width chart reads best
/// drawn about half as wide, so its text stays the page's size).
pub fn grouped_bars(
    id: &str,
    title: &str,
    desc: &str,
    width: f64,
    categories: &[String],
    series: &[Series],
    y_unit: &str,
) -> Markup {
    let height = 200.0;
    let n = categories.len().max(1);
    let pw = width - ML - MR;
    let ph = height - MT - MB;
    let y_max = nice_ceiling(
        series
            .iter()
            .flat_map(|s| s.values.iter().copied())
            .fold(0.0, f64::max),
    );
    let slot = pw / n as f64;
    let group = (slot * 0.8).min(36.0 * series.len() as f64);
    let bar = (group / series.len().max(1) as f64).max(1.0);
    let ticks: Vec<(f64, String)> = categories
        .iter()
        .enumerate()
        .map(|(i, c)| (ML + slot * (i as f64 + 0.5), c.clone()))
        .collect();
    let body = html! {
        (axes((width, height), y_max, &ticks, y_unit))
        @for (i, c) in categories.iter().enumerate() {
            @for (k, s) in series.iter().enumerate() {
                @let v = s.values.get(i).copied().unwrap_or(0.0);
                rect class={ "bar s-" (s.key) } data-series=(s.key) data-value=(num(v))
                    x=(format!("{:.1}", ML + slot * i as f64 + (slot - group) / 2.0 + bar * k as f64))
                    y=(format!("{:.1}", MT + ph - ph * v / y_max))
                    width=(format!("{bar:.1}"))
                    height=(format!("{:.1}", ph * v / y_max)) {
                    title { (c) ": " (num(v)) (y_unit) " " (s.label) }
                }
            }
        }
    };
    html! {
        (frame(id, title, desc, (width, height), body))
        (legend(&series.iter().map(|s| (s.key, s.label)).collect::<Vec<_>>()))
    }
}

/// One bar of a [`timeline`]: seconds from the timeline's start.
pub struct Span {
    /// Row label (e.g. "#2").
    pub label: String,
    /// Start offset in seconds; `None`: unknown (drawn as a mark at the end).
    pub from: Option<f64>,
    pub to: f64,
    /// CSS class suffix (`s-<key>`).
    pub key: &'static str,
    /// Tooltip.
    pub tip: String,
}

/// Attempts on a time axis, one row each, so the gaps between them (backoff) show.
/// `axis` labels the left end, the middle and the right end.
pub fn timeline(id: &str, title: &str, desc: &str, spans: &[Span], axis: [String; 3]) -> Markup {
    let row = 22.0;
    let height = MT + MB + row * spans.len().max(1) as f64;
    let pw = W - ML - MR;
    let end = spans.iter().map(|s| s.to).fold(0.0, f64::max).max(1e-3);
    let x = |t: f64| ML + pw * (t / end).clamp(0.0, 1.0);
    let ph = height - MT - MB;
    let body = html! {
        g.grid {
            line x1=(ML) x2=(W - MR) y1=(MT + ph) y2=(MT + ph) {}
            @for (k, label) in axis.iter().enumerate() {
                @let px = ML + pw * k as f64 / 2.0;
                line.tick x1=(px) x2=(px) y1=(MT) y2=(MT + ph + 4.0) {}
                text class=(["xlabel start", "xlabel", "xlabel end"][k]) x=(px) y=(height - 8.0) { (label) }
            }
        }
        @for (i, s) in spans.iter().enumerate() {
            @let y = MT + row * i as f64 + 4.0;
            g.span data-series=(s.key) {
                title { (s.tip) }
                text.ylabel x=(ML - 6.0) y=(y + 11.0) { (s.label) }
                @let x0 = s.from.map(x).unwrap_or(x(s.to) - 2.0);
                rect class={ "bar s-" (s.key) } x=(format!("{x0:.1}")) y=(format!("{y:.1}"))
                    width=(format!("{:.1}", (x(s.to) - x0).max(2.0))) height=(row - 8.0) {}
            }
        }
    };
    frame(id, title, desc, (W, height), body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_and_numbers() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(1.0), 1.0);
        assert_eq!(nice_ceiling(3.0), 5.0);
        assert_eq!(nice_ceiling(11.0), 20.0);
        assert_eq!(nice_ceiling(500.0), 500.0);
        assert_eq!(nice_ceiling(501.0), 1000.0);
        assert_eq!(num(3.0), "3");
        assert_eq!(num(0.5), "0.5");
    }

    #[test]
    fn charts_are_labelled_and_carry_their_data() {
        let s = lines(
            "c",
            "Jobs <per> minute",
            "desc",
            &[(0, "00:00".into())],
            &["a".into(), "b".into(), "c".into()],
            &[Series {
                key: "done",
                label: "done",
                values: vec![0.0, 2.0, 1.0],
            }],
        )
        .into_string();
        assert!(
            s.contains("role=\"img\"") && s.contains("aria-labelledby=\"c-t c-d\""),
            "{s}"
        );
        assert!(
            s.contains("<title id=\"c-t\">Jobs &lt;per&gt; minute</title>"),
            "{s}"
        );
        assert!(s.contains("data-series=\"done\" data-total=\"3\""), "{s}");
        assert!(s.contains("viewBox=\"0 0 900 220\""), "{s}");
        assert_eq!(
            s.matches("<circle").count(),
            2,
            "markers on non-zero points: {s}"
        );
        assert!(s.contains("<title>b: 2 done</title>"), "{s}");
        let b = stacked_bars(
            "h",
            "t",
            "d",
            &[],
            &["a".into(), "b".into()],
            &[Series {
                key: "failed",
                label: "failed",
                values: vec![0.0, 4.0],
            }],
        )
        .into_string();
        assert_eq!(
            b.matches("<rect").count(),
            1,
            "empty columns draw nothing: {b}"
        );
        assert!(b.contains("<title>b: 4 failed</title>"), "{b}");
    }
}
