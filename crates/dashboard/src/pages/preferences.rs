//! The calendar-preferences section of the user page: the stored rows, the effective
//! value of each field per kind of event, the template warnings of the last sync and a
//! preview of the rendered events (computed from the database by
//! `calsync_domain::preferences::view`, never calling Google). Every value is escaped
//! by maud: templates are shown as text, never rendered as HTML.

use calsync_domain::preferences::{Preference, view::UserPreferences};
use maud::{Markup, html};

use super::layout::short;

fn row_value(row: &Preference, key: &str) -> String {
    let json = row.to_json();
    match &json[key] {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

const COLUMNS: [&str; 7] = [
    "title_template",
    "description_template",
    "location_template",
    "color_id",
    "reminders",
    "visibility",
    "transparency",
];

/// The section (an `h2` and its tables).
pub fn section(p: &UserPreferences) -> Markup {
    html! {
        h2 id="preferences" { "Calendar preferences" }
        @if p.rows.is_empty() {
            p.muted { "No preferences: every event has the built-in look." }
        } @else {
            table.preference-rows {
                tr { th { "scope" } @for c in COLUMNS { th { (c) } } }
                @for row in &p.rows {
                    tr {
                        td { (row.label()) }
                        @for c in COLUMNS { td { (short(&row_value(row, c), 120)) } }
                    }
                }
            }
        }
        h3 { "Effective (outside course overrides)" }
        table.preference-effective {
            tr { th { "field" } @for k in &p.effective { th { (k.kind.as_str()) } } }
            @for (i, c) in COLUMNS.iter().enumerate() {
                tr {
                    th { (c) }
                    @for k in &p.effective {
                        @let f = &k.fields[i];
                        td {
                            @match (&f.value, &f.from) {
                                (Some(v), Some(from)) => { (short(v, 120)) " " span.muted { "(" (from) ")" } }
                                _ => { span.muted { "built-in" } }
                            }
                        }
                    }
                }
            }
        }
        h3 { "Template warnings of the last sync" }
        @if p.recorded_warnings.is_empty() {
            p.muted { "None." }
        } @else {
            table.render-warnings {
                tr { th { "event" } th { "field" } th { "preference" } th { "problem (built-in text used)" } }
                @for w in &p.recorded_warnings {
                    tr { td { (w.event_id) } td { (w.field) } td { (w.preference) } td { (w.message) } }
                }
            }
        }
        h3 { "Preview of the events (no Google call)" }
        @if p.preview.events.is_empty() {
            p.muted { "No events." }
        } @else {
            table.preference-preview {
                tr {
                    th { "event" } th { "kind" } th { "title" } th { "when" } th { "location" }
                    th { "description" } th { "color" } th { "reminders" } th { "visibility" } th { "transparency" }
                }
                @for e in &p.preview.events {
                    tr {
                        td { (e.id) }
                        td { (e.kind.as_str()) }
                        td { (e.summary) }
                        td { (e.when) }
                        td { (e.location) }
                        td { (short(&e.description, 200)) }
                        td { @if let Some(c) = e.color_id { (c) } @else { span.muted { "calendar" } } }
                        td { (e.reminders) }
                        td { (e.visibility) }
                        td { (e.transparency) }
                    }
                }
            }
        }
        @if !p.preview.warnings.is_empty() {
            p.muted { "Rendering now would warn about: " }
            ul.preview-warnings {
                @for w in &p.preview.warnings { li { (w.to_string()) } }
            }
        }
    }
}
