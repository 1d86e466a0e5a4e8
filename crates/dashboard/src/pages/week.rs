//! The user page's "Week" section: the student's classes as a week grid (Monday to
//! Sunday, times on the side, one block per weekly meeting with its title as calsync
//! writes it and its room), the term, the no-class days and what they cancel, and the
//! other events calsync writes. Data from `calsync_domain::week` (the sync's own event
//! plan, no Google call).
//!
//! The grid is a server-rendered SVG like the charts (no JavaScript, colours and fonts
//! from the stylesheet, so the CSP needs no inline style); every block is a `<g
//! class="block">` with `data-event`, `data-day`, `data-start` and `data-end` and a
//! `<title>` tooltip, and the same facts are in the table under it.

use calsync_domain::week::{StudentWeek, WeekBlock};
use chrono::{NaiveTime, Timelike};
use maud::{Markup, html};

const W: f64 = 1000.0;
/// Room for the hour labels.
const AXIS: f64 = 52.0;
const RIGHT: f64 = 6.0;
/// The day names row.
const HEAD: f64 = 26.0;
/// Height of one hour.
const HOUR: f64 = 54.0;
const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const DAY_NAMES: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];
/// Course colours in the stylesheet (`wk-0` …).
const COLOURS: usize = 8;

fn minutes(t: NaiveTime) -> u32 {
    t.hour() * 60 + t.minute()
}

fn hm(t: NaiveTime) -> String {
    t.format("%H:%M").to_string()
}

/// The hours the grid shows: 08:00–18:00 at least, widened to every block.
fn hour_range(blocks: &[WeekBlock]) -> (u32, u32) {
    let first = blocks
        .iter()
        .map(|b| minutes(b.begin) / 60)
        .min()
        .unwrap_or(8);
    let last = blocks
        .iter()
        .map(|b| minutes(b.end).div_ceil(60))
        .max()
        .unwrap_or(18);
    (first.min(8), last.clamp(18, 24))
}

/// Lanes within a day: blocks that overlap in time sit side by side. Returns each
/// block's (lane, lanes of its overlapping group), in `blocks` order.
fn lanes(blocks: &[&WeekBlock]) -> Vec<(usize, usize)> {
    let mut out = vec![(0, 1); blocks.len()];
    let mut group: Vec<usize> = Vec::new();
    let mut group_end = 0;
    let mut lane_ends: Vec<u32> = Vec::new();
    let close =
        |group: &mut Vec<usize>, lane_ends: &mut Vec<u32>, out: &mut Vec<(usize, usize)>| {
            for &i in group.iter() {
                out[i].1 = lane_ends.len();
            }
            group.clear();
            lane_ends.clear();
        };
    // `blocks` are sorted by start time.
    for (i, b) in blocks.iter().enumerate() {
        let (start, end) = (minutes(b.begin), minutes(b.end));
        if !group.is_empty() && start >= group_end {
            close(&mut group, &mut lane_ends, &mut out);
        }
        let lane = match lane_ends.iter().position(|e| *e <= start) {
            Some(l) => l,
            None => {
                lane_ends.push(0);
                lane_ends.len() - 1
            }
        };
        lane_ends[lane] = end;
        out[i].0 = lane;
        group.push(i);
        group_end = group_end.max(end);
        if group.len() == 1 {
            group_end = end;
        }
    }
    close(&mut group, &mut lane_ends, &mut out);
    out
}

/// Shorten to what fits `width` at about `px` per character.
fn fit(s: &str, width: f64, px: f64) -> String {
    let n = ((width / px).floor() as usize).max(1);
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!(
            "{}…",
            s.chars().take(n.saturating_sub(1)).collect::<String>()
        )
    }
}

fn tooltip(b: &WeekBlock) -> String {
    let mut t = format!(
        "{} — {} · {} {}–{} · {} · {} to {}",
        b.title,
        b.course_code,
        DAY_NAMES[usize::from(b.weekday)],
        hm(b.begin),
        hm(b.end),
        b.location,
        b.first_day,
        b.last_day
    );
    if !b.excluded.is_empty() {
        let days: Vec<String> = b.excluded.iter().map(|d| d.to_string()).collect();
        t.push_str(&format!(" · not on {}", days.join(", ")));
    }
    t
}

/// The grid as SVG.
fn grid(week: &StudentWeek) -> Markup {
    let (h0, h1) = hour_range(&week.blocks);
    let height = HEAD + f64::from(h1 - h0) * HOUR + 4.0;
    let col = (W - AXIS - RIGHT) / 7.0;
    let y_of = |t: NaiveTime| HEAD + (f64::from(minutes(t)) - f64::from(h0 * 60)) / 60.0 * HOUR;
    let mut course_ids: Vec<i64> = week.blocks.iter().map(|b| b.course_id).collect();
    course_ids.sort_unstable();
    course_ids.dedup();
    let colour = |course: i64| course_ids.iter().position(|c| *c == course).unwrap_or(0) % COLOURS;
    let desc = format!(
        "{} weekly class meetings{}",
        week.blocks.len(),
        week.term
            .map(|(a, b)| format!(" from {a} to {b}"))
            .unwrap_or_default()
    );
    html! {
        svg.chart.week id="week-grid" role="img" aria-labelledby="week-grid-t week-grid-d"
            viewBox={ "0 0 " (W) " " (height) } preserveAspectRatio="xMidYMid meet"
            xmlns="http://www.w3.org/2000/svg" {
            title id="week-grid-t" { "The student's week" }
            desc id="week-grid-d" { (desc) }
            g.grid {
                @for d in 5..7 {
                    rect.weekend x=(AXIS + col * f64::from(d)) y=(HEAD) width=(col) height=(height - HEAD - 4.0) {}
                }
                @for h in h0..=h1 {
                    @let y = HEAD + f64::from(h - h0) * HOUR;
                    line.hour x1=(AXIS) x2=(W - RIGHT) y1=(y) y2=(y) {}
                    @if h < h1 {
                        line.half x1=(AXIS) x2=(W - RIGHT) y1=(y + HOUR / 2.0) y2=(y + HOUR / 2.0) {}
                    }
                    text.ylabel.hour-label data-hour=(format!("{h:02}:00")) x=(AXIS - 6.0) y=(y + 4.0) { (format!("{h:02}:00")) }
                }
                @for d in 0..=7 {
                    line.day x1=(AXIS + col * f64::from(d)) x2=(AXIS + col * f64::from(d)) y1=(HEAD - 6.0) y2=(height - 4.0) {}
                }
                @for (d, key) in DAYS.iter().enumerate() {
                    text.dayname data-day=(key) x=(AXIS + col * (d as f64 + 0.5)) y=(HEAD - 9.0) { (&DAY_NAMES[d][..3]) }
                }
            }
            @for (d, key) in DAYS.iter().enumerate() {
                @let day: Vec<&WeekBlock> = week.blocks.iter().filter(|b| usize::from(b.weekday) == d).collect();
                @let lane = lanes(&day);
                @for (i, b) in day.iter().enumerate() {
                    @let (l, n) = lane[i];
                    @let w = col / n as f64;
                    @let x = AXIS + col * d as f64 + w * l as f64 + 2.0;
                    @let y = y_of(b.begin) + 1.0;
                    @let h = (y_of(b.end) - y_of(b.begin) - 2.0).max(6.0);
                    @let inner = w - 12.0;
                    g class={ "block wk-" (colour(b.course_id)) }
                        data-event=(b.event_id) data-day=(key) data-start=(hm(b.begin)) data-end=(hm(b.end)) {
                        title { (tooltip(b)) }
                        clipPath id={ "clip-" (b.event_id) } {
                            rect x=(x) y=(y) width=(w - 6.0) height=(h) {}
                        }
                        rect.box x=(x) y=(y) width=(w - 4.0) height=(h) rx="4" {}
                        g clip-path={ "url(#clip-" (b.event_id) ")" } {
                            @if h >= 16.0 {
                                text.block-title x=(x + 6.0) y=(y + 14.0) { (fit(&b.title, inner, 6.9)) }
                            }
                            @if h >= 30.0 {
                                text.block-line x=(x + 6.0) y=(y + 28.0) {
                                    (hm(b.begin)) "–" (hm(b.end))
                                    @if !b.excluded.is_empty() {
                                        " · " (b.excluded.len()) " off"
                                    }
                                }
                            }
                            @if h >= 44.0 {
                                text.block-line x=(x + 6.0) y=(y + 41.0) { (fit(&b.location, inner, 6.4)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The section.
pub fn section(week: &StudentWeek) -> Markup {
    html! {
        h2 id="week" { "Week" }
        p.note {
            @if let Some((first, last)) = week.term {
                "Term " strong { (first) } " to " strong { (last) } ". "
            }
            "Times are the school's local time. Titles and locations are what calsync writes (the student's preferences applied); no Google call."
        }
        @if week.blocks.is_empty() {
            p.muted { "No weekly classes." }
        } @else {
            (grid(week))
            table.week-classes {
                tr {
                    th { "day" } th { "time" } th { "title (as written)" } th { "course" }
                    th { "location" } th { "dates" } th { "not on (no-class days)" } th { "event" }
                }
                @for b in &week.blocks {
                    tr data-event=(b.event_id) {
                        td { (DAY_NAMES[usize::from(b.weekday)]) }
                        td { (hm(b.begin)) "–" (hm(b.end)) }
                        td { (b.title) }
                        td { (b.course_code) " " span.muted { (b.course_title) } }
                        td { (b.location) }
                        td { (b.first_day) " – " (b.last_day) }
                        td {
                            @if b.excluded.is_empty() { span.muted { "—" } }
                            @for (i, d) in b.excluded.iter().enumerate() {
                                @if i > 0 { ", " }
                                (d)
                            }
                        }
                        td { code { (b.event_id) } }
                    }
                }
            }
        }
        h3 { "No-class days in the term" }
        @if week.no_class_days.is_empty() {
            p.muted { "None." }
        } @else {
            table.no-class-days {
                tr { th { "title" } th { "category" } th { "dates" } th { "classes of this student cancelled" } th { "shown as an all-day event" } }
                @for p in &week.no_class_days {
                    tr {
                        td { (p.title) }
                        td { (p.category) }
                        td {
                            (p.start_date)
                            @if p.end_date != p.start_date { " – " (p.end_date) }
                        }
                        td.num { (p.cancelled) }
                        td { @if p.published { "yes" } @else { "no" } }
                    }
                }
            }
        }
        h3 { "Other events calsync writes" }
        @if week.other_events.is_empty() {
            p.muted { "None (no final exams or published academic-calendar days)." }
        } @else {
            table.other-events {
                tr { th { "kind" } th { "title" } th { "when" } th { "location" } th { "event" } }
                @for e in &week.other_events {
                    tr {
                        td { (e.kind.as_str()) }
                        td { (e.summary) }
                        td { (e.when) }
                        td { (e.location) }
                        td { code { (e.id) } }
                    }
                }
            }
        }
        @if !week.skipped.is_empty() {
            p.muted { "Schedule rows without an event:" }
            ul.skipped {
                @for s in &week.skipped {
                    li { (s.source.kind().as_str()) " " (s.source.id()) ": " (s.reason) }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn block(id: &str, day: u8, begin: &str, end: &str) -> WeekBlock {
        let t = |s: &str| NaiveTime::parse_from_str(s, "%H:%M").unwrap();
        let d = NaiveDate::from_ymd_opt(2026, 1, 12).unwrap();
        WeekBlock {
            event_id: id.into(),
            meeting_time_id: 1,
            course_id: 1,
            course_code: "CS-101-01".into(),
            course_title: "Course".into(),
            weekday: day,
            begin: t(begin),
            end: t(end),
            title: "<b>Course</b>".into(),
            location: "Smith 101".into(),
            first_day: d,
            last_day: d,
            excluded: vec![],
        }
    }

    #[test]
    fn overlapping_meetings_share_their_day_in_lanes() {
        let a = block("a", 0, "09:00", "10:00");
        let b = block("b", 0, "09:30", "10:30");
        let c = block("c", 0, "10:00", "11:00");
        let d = block("d", 0, "12:00", "13:00");
        assert_eq!(
            lanes(&[&a, &b, &c, &d]),
            vec![(0, 2), (1, 2), (0, 2), (0, 1)]
        );
    }

    #[test]
    fn the_grid_spans_the_working_day_and_every_block() {
        assert_eq!(hour_range(&[]), (8, 18));
        assert_eq!(hour_range(&[block("a", 0, "07:30", "21:15")]), (7, 22));
    }

    #[test]
    fn titles_are_escaped_in_the_grid() {
        let week = StudentWeek {
            user_id: 1,
            term: None,
            blocks: vec![block("a", 2, "09:00", "10:00")],
            no_class_days: vec![],
            other_events: vec![],
            skipped: vec![],
        };
        let html = section(&week).into_string();
        assert!(!html.contains("<b>Course"), "{html}");
        assert!(html.contains("&lt;b&gt;Course"));
        assert!(html.contains("data-day=\"wed\" data-start=\"09:00\""));
    }
}
