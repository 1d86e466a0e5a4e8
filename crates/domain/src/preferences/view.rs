//! What operators, the CLI and the API see of a user's preferences: the effective
//! value of every field per kind of event, the warnings the last sync recorded, and a
//! preview of the rendered events — computed from the database alone, never calling
//! Google.

use chrono_tz::Tz;
use serde::Serialize;
use sqlx::PgPool;

use super::{Preference, Setting, resolve, store};
use crate::DomainError;
use crate::events::{self, DesiredEvent, EventKind, EventTiming, Reminders, SkippedItem};
use crate::render::RenderWarning;
use crate::schedule;

/// The zone previews are planned in. Only Google's UNTIL and EXDATE lines depend on the
/// zone, and a preview shows neither: the texts, the appearance and the local
/// wall-clock times it shows are the same in every zone.
const PREVIEW_ZONE: Tz = chrono_tz::UTC;

/// One field's effective value for a kind of event and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EffectiveField {
    /// The column, e.g. `color_id`.
    pub field: &'static str,
    /// The value as text (`None`: the built-in default).
    pub value: Option<String>,
    /// The row it comes from (e.g. `exam`, `global`), `None` for the built-in default.
    pub from: Option<String>,
}

/// The effective preferences of one kind of event outside any course override.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EffectiveKind {
    pub kind: EventKind,
    pub fields: Vec<EffectiveField>,
}

/// Reminders as text: `calendar default`, `none`, `popup 10 min, email 1440 min`.
pub fn describe_reminders(r: &Reminders) -> String {
    match r {
        Reminders::UseDefault => "calendar default".into(),
        Reminders::Overrides(list) if list.is_empty() => "none".into(),
        Reminders::Overrides(list) => list
            .iter()
            .map(|r| format!("{} {} min", r.method.as_str(), r.minutes))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

fn effective_field<T>(
    field: &'static str,
    s: Option<Setting<'_, T>>,
    show: impl Fn(T) -> String,
) -> EffectiveField {
    match s {
        Some(s) => EffectiveField {
            field,
            from: Some(s.from.label()),
            value: Some(show(s.value)),
        },
        None => EffectiveField {
            field,
            value: None,
            from: None,
        },
    }
}

/// The effective value of every field for each kind of event (course overrides are
/// listed with the rows, they apply to their course only).
pub fn effective(prefs: &[Preference]) -> Vec<EffectiveKind> {
    [EventKind::Class, EventKind::Exam, EventKind::Academic]
        .into_iter()
        .map(|kind| {
            let r = resolve(prefs, kind, None);
            EffectiveKind {
                kind,
                fields: vec![
                    effective_field("title_template", r.title_template, str::to_string),
                    effective_field(
                        "description_template",
                        r.description_template,
                        str::to_string,
                    ),
                    effective_field("location_template", r.location_template, str::to_string),
                    effective_field("color_id", r.color_id, |c| c.to_string()),
                    effective_field("reminders", r.reminders, describe_reminders),
                    effective_field("visibility", r.visibility, |v| v.as_str().to_string()),
                    effective_field("transparency", r.transparency, |t| t.as_str().to_string()),
                ],
            }
        })
        .collect()
}

/// One event as the preview shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PreviewEvent {
    pub id: String,
    pub kind: EventKind,
    pub course_id: Option<i64>,
    pub summary: String,
    pub description: String,
    pub location: String,
    /// e.g. `Monday 2026-08-31 09:00–09:50, weekly` or `2026-11-25 – 2026-11-27, all day`.
    pub when: String,
    pub color_id: Option<u8>,
    pub reminders: String,
    pub visibility: &'static str,
    pub transparency: &'static str,
}

impl PreviewEvent {
    /// How the preview shows `ev`.
    pub fn of(ev: &DesiredEvent) -> PreviewEvent {
        let when = match ev.timing {
            EventTiming::Timed { start, end, .. } => format!(
                "{} {}–{}{}",
                start.format("%A %Y-%m-%d"),
                start.format("%H:%M"),
                end.format("%H:%M"),
                if ev.recurrence.is_empty() {
                    ""
                } else {
                    ", weekly"
                }
            ),
            EventTiming::AllDay {
                first_day,
                last_day,
            } if first_day == last_day => format!("{first_day}, all day"),
            EventTiming::AllDay {
                first_day,
                last_day,
            } => format!("{first_day} – {last_day}, all day"),
        };
        let a = &ev.appearance;
        PreviewEvent {
            id: ev.id.clone(),
            kind: ev.kind(),
            course_id: ev.course_id,
            summary: ev.summary.clone(),
            description: ev.description.clone(),
            location: ev.location.clone(),
            when,
            color_id: a.color_id,
            reminders: describe_reminders(&a.reminders),
            visibility: a.visibility.as_str(),
            transparency: a.transparency.as_str(),
        }
    }
}

/// The events a sync would write now, rendered, without calling Google.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Preview {
    pub events: Vec<PreviewEvent>,
    /// Template failures (the field keeps its built-in text).
    pub warnings: Vec<RenderWarning>,
    /// Schedule rows that produce no event.
    pub skipped: Vec<SkippedItem>,
}

/// Preview a user's events with their stored preferences, or with `replacement`
/// instead (to try a set before saving it).
pub async fn preview(
    pool: &PgPool,
    user_id: i64,
    replacement: Option<Vec<Preference>>,
) -> Result<Preview, DomainError> {
    let mut snap = schedule::load_snapshot(pool, user_id).await?;
    if let Some(prefs) = replacement {
        snap.preferences = prefs;
    }
    let plan = events::plan_events(&snap, PREVIEW_ZONE);
    Ok(Preview {
        events: plan.events.iter().map(PreviewEvent::of).collect(),
        warnings: plan.warnings,
        skipped: plan.skipped,
    })
}

/// Everything the dashboard's user page shows about preferences.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserPreferences {
    pub user_id: i64,
    pub rows: Vec<Preference>,
    pub effective: Vec<EffectiveKind>,
    /// Recorded by the last sync.
    pub recorded_warnings: Vec<RenderWarning>,
    pub preview: Preview,
}

/// Load [`UserPreferences`] (errors with `UnknownUser` for an unknown id).
pub async fn user_preferences(pool: &PgPool, user_id: i64) -> Result<UserPreferences, DomainError> {
    let recorded_warnings = store::render_warnings(pool, user_id).await?;
    let preview = preview(pool, user_id, None).await?;
    let rows = store::load(pool, user_id).await?;
    Ok(UserPreferences {
        user_id,
        effective: effective(&rows),
        rows,
        recorded_warnings,
        preview,
    })
}
