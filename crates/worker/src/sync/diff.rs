//! The one decision of a sync, pure: given the events calsync wants in a calendar and
//! the calsync events listed from it, what to insert, update, restore, delete or leave
//! alone ([`diff`]). The real sync ([`super::reconcile`]) carries the decisions out;
//! the dry-run ([`super::dry_run`]) only describes them ([`describe`], with the
//! field-level differences of [`field_changes`]). Both therefore always agree.

use std::collections::{BTreeMap, HashSet};

use calsync_domain::{
    dry_run::{ChangeAction, FieldChange, PlannedChange},
    events::{
        ACADEMIC_PROPERTY, DesiredEvent, EXAM_PROPERTY, EventKind, EventTiming,
        FINGERPRINT_PROPERTY, MEETING_TIME_PROPERTY, Transparency, Visibility,
    },
    preferences::view::describe_reminders,
};
use chrono::Utc;

use super::event_body;
use crate::backend::{CalendarEvent, EventStatus, EventTime};

/// What a sync does about one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision<'a> {
    /// Listed and exactly as wanted: no call.
    Unchanged { desired: &'a DesiredEvent },
    /// Not listed: insert it under its id. (When the provider says the id is taken — an
    /// event whose calsync tags were removed — the write takes it over: a restore.)
    Insert { desired: &'a DesiredEvent },
    /// Listed, live, not as wanted: update it.
    Update {
        desired: &'a DesiredEvent,
        existing: &'a CalendarEvent,
    },
    /// Listed as deleted (a student deleted it in their calendar): update it back.
    Restore {
        desired: &'a DesiredEvent,
        existing: &'a CalendarEvent,
    },
    /// A live calsync event the schedule no longer has: delete it.
    Delete { existing: &'a CalendarEvent },
}

/// Whether an event in the calendar still shows exactly what calsync wants.
pub fn matches_desired(existing: &CalendarEvent, ev: &DesiredEvent) -> bool {
    let fp = existing.private_properties.get(FINGERPRINT_PROPERTY);
    let (start, end) = super::event_times(ev);
    existing.status != EventStatus::Cancelled
        && fp == Some(&ev.fingerprint)
        && existing.summary.as_deref() == Some(ev.summary.as_str())
        && existing.description.as_deref().unwrap_or_default() == ev.description
        && existing.location.as_deref().unwrap_or_default() == ev.location
        && existing.recurrence == ev.recurrence
        && time_matches(&existing.start, &start)
        && time_matches(&existing.end, &end)
}

/// A listed start or end is the wanted one (a wanted instant without a zone accepts any
/// zone).
fn time_matches(got: &Option<EventTime>, want: &EventTime) -> bool {
    match (got, want) {
        (
            Some(EventTime::At { instant, time_zone }),
            EventTime::At {
                instant: want_instant,
                time_zone: want_zone,
            },
        ) => instant == want_instant && (want_zone.is_none() || time_zone == want_zone),
        (Some(EventTime::Day(day)), EventTime::Day(want_day)) => day == want_day,
        _ => false,
    }
}

/// The decisions for `desired` against the calsync events `listed` from the calendar
/// (deleted ones included): one per desired event, in `desired`'s order, then one
/// delete per live listed event nobody wants, in id order. A sync carries them out in
/// this order — writes before deletes, so the calendar is never empty mid-sync.
pub fn diff<'a>(desired: &'a [DesiredEvent], listed: &'a [CalendarEvent]) -> Vec<Decision<'a>> {
    // The last listing of an id wins (a provider lists an id once).
    let existing: BTreeMap<&str, &CalendarEvent> =
        listed.iter().map(|e| (e.id.as_str(), e)).collect();
    let mut out: Vec<Decision<'a>> = desired
        .iter()
        .map(|ev| match existing.get(ev.id.as_str()) {
            Some(cur) if matches_desired(cur, ev) => Decision::Unchanged { desired: ev },
            Some(cur) if cur.status == EventStatus::Cancelled => Decision::Restore {
                desired: ev,
                existing: cur,
            },
            Some(cur) => Decision::Update {
                desired: ev,
                existing: cur,
            },
            None => Decision::Insert { desired: ev },
        })
        .collect();
    let wanted: HashSet<&str> = desired.iter().map(|e| e.id.as_str()).collect();
    out.extend(
        existing
            .into_values()
            .filter(|cur| cur.status != EventStatus::Cancelled && !wanted.contains(cur.id.as_str()))
            .map(|cur| Decision::Delete { existing: cur }),
    );
    out
}

/// An event time for people: `2026-01-12 09:00 America/New_York` (local in its zone),
/// `2026-01-12 14:00 UTC`, `2026-11-26 (all day)`.
fn time_text(t: &Option<EventTime>) -> String {
    match t {
        None => "(none)".into(),
        Some(EventTime::Day(d)) => format!("{d} (all day)"),
        Some(EventTime::At { instant, time_zone }) => {
            match time_zone
                .as_deref()
                .and_then(|z| z.parse::<chrono_tz::Tz>().ok())
            {
                Some(tz) => format!(
                    "{} {}",
                    instant.with_timezone(&tz).format("%Y-%m-%d %H:%M"),
                    tz.name()
                ),
                None => format!(
                    "{} UTC",
                    instant.with_timezone(&Utc).format("%Y-%m-%d %H:%M")
                ),
            }
        }
    }
}

fn text(s: Option<&str>) -> String {
    s.unwrap_or_default().to_string()
}

/// The fields in which `existing` differs from what calsync would write for `desired`
/// (its status, texts, times, recurrence and appearance). When none does but the event
/// is still rewritten, its stored fingerprint is what differs (written by an older
/// calsync, or edited outside calsync's fields), and that is the one field listed.
pub fn field_changes(existing: &CalendarEvent, desired: &DesiredEvent) -> Vec<FieldChange> {
    let want = event_body(desired);
    let mut out = Vec::new();
    let mut push = |field: &'static str, before: String, after: String| {
        if before != after {
            out.push(FieldChange {
                field,
                before,
                after,
            });
        }
    };
    if existing.status == EventStatus::Tentative {
        push("status", "tentative".into(), "confirmed".into());
    }
    push(
        "summary",
        text(existing.summary.as_deref()),
        text(want.summary.as_deref()),
    );
    push(
        "description",
        text(existing.description.as_deref()),
        text(want.description.as_deref()),
    );
    push(
        "location",
        text(existing.location.as_deref()),
        text(want.location.as_deref()),
    );
    for (field, got, wanted) in [
        ("start", &existing.start, &want.start),
        ("end", &existing.end, &want.end),
    ] {
        if !wanted.as_ref().is_some_and(|w| time_matches(got, w)) {
            push(field, time_text(got), time_text(wanted));
        }
    }
    if existing.recurrence != want.recurrence {
        let only = |a: &[String], b: &[String]| {
            a.iter()
                .filter(|l| !b.contains(l))
                .cloned()
                .collect::<Vec<_>>()
        };
        let (mut before, mut after) = (
            only(&existing.recurrence, &want.recurrence),
            only(&want.recurrence, &existing.recurrence),
        );
        if before.is_empty() && after.is_empty() {
            // Same lines, other order.
            before.clone_from(&existing.recurrence);
            after.clone_from(&want.recurrence);
        }
        push("recurrence", before.join("; "), after.join("; "));
    }
    let color = |c: Option<u8>| c.map_or_else(|| "calendar default".into(), |c| c.to_string());
    push("color", color(existing.color_id), color(want.color_id));
    push(
        "visibility",
        existing
            .visibility
            .unwrap_or(Visibility::Default)
            .as_str()
            .into(),
        desired.appearance.visibility.as_str().into(),
    );
    push(
        "transparency",
        existing
            .transparency
            .unwrap_or(Transparency::Opaque)
            .as_str()
            .into(),
        desired.appearance.transparency.as_str().into(),
    );
    push(
        "reminders",
        existing
            .reminders
            .as_ref()
            .map_or_else(|| "calendar default".into(), describe_reminders),
        describe_reminders(&desired.appearance.reminders),
    );
    let stored = text(
        existing
            .private_properties
            .get(FINGERPRINT_PROPERTY)
            .map(String::as_str),
    );
    if out.is_empty() && stored != desired.fingerprint {
        out.push(FieldChange {
            field: "fingerprint",
            before: stored,
            after: desired.fingerprint.clone(),
        });
    }
    out
}

/// The kind of a listed calsync event, from the source tag calsync put on it.
fn listed_kind(e: &CalendarEvent) -> Option<EventKind> {
    let has = |k: &str| e.private_properties.contains_key(k);
    if has(MEETING_TIME_PROPERTY) {
        Some(EventKind::Class)
    } else if has(EXAM_PROPERTY) {
        Some(EventKind::Exam)
    } else if has(ACADEMIC_PROPERTY) {
        Some(EventKind::Academic)
    } else {
        None
    }
}

/// When a desired event happens, briefly (for inserts).
fn when(ev: &DesiredEvent) -> String {
    match ev.timing {
        EventTiming::Timed { start, end, .. } => format!(
            "{} {}–{}{}",
            start.format("%a %Y-%m-%d"),
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
    }
}

/// The decisions as a report's changes (unchanged events left out): inserts, updates,
/// restores, deletes, each in event-id order.
pub fn describe(decisions: &[Decision<'_>]) -> Vec<PlannedChange> {
    let mut out: Vec<PlannedChange> = decisions
        .iter()
        .filter_map(|d| {
            Some(match *d {
                Decision::Unchanged { .. } => return None,
                Decision::Insert { desired } => PlannedChange {
                    action: ChangeAction::Insert,
                    event_id: desired.id.clone(),
                    kind: Some(desired.kind()),
                    summary: desired.summary.clone(),
                    note: Some(if desired.location.is_empty() {
                        when(desired)
                    } else {
                        format!("{} · {}", when(desired), desired.location)
                    }),
                    fields: Vec::new(),
                },
                Decision::Update { desired, existing } => PlannedChange {
                    action: ChangeAction::Update,
                    event_id: desired.id.clone(),
                    kind: Some(desired.kind()),
                    summary: desired.summary.clone(),
                    note: None,
                    fields: field_changes(existing, desired),
                },
                Decision::Restore { desired, existing } => PlannedChange {
                    action: ChangeAction::Restore,
                    event_id: desired.id.clone(),
                    kind: Some(desired.kind()),
                    summary: desired.summary.clone(),
                    note: Some("a student deleted this event".into()),
                    fields: field_changes(existing, desired),
                },
                Decision::Delete { existing } => PlannedChange {
                    action: ChangeAction::Delete,
                    event_id: existing.id.clone(),
                    kind: listed_kind(existing),
                    summary: text(existing.summary.as_deref()),
                    note: Some("no longer in the schedule".into()),
                    fields: Vec::new(),
                },
            })
        })
        .collect();
    let rank = |a: ChangeAction| ChangeAction::ALL.iter().position(|x| *x == a);
    out.sort_by(|a, b| (rank(a.action), &a.event_id).cmp(&(rank(b.action), &b.event_id)));
    out
}

/// Every desired event as an insert (a calendar that does not exist yet).
pub fn all_inserts(desired: &[DesiredEvent]) -> Vec<PlannedChange> {
    let decisions: Vec<Decision<'_>> = desired
        .iter()
        .map(|desired| Decision::Insert { desired })
        .collect();
    describe(&decisions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use calsync_domain::events::{Appearance, EventSource, Reminder, ReminderMethod, Reminders};
    use chrono::NaiveDate;

    fn desired(id: &str, summary: &str) -> DesiredEvent {
        let day = NaiveDate::from_ymd_opt(2026, 1, 12).unwrap();
        DesiredEvent {
            id: id.into(),
            source: EventSource::MeetingTime(1),
            course_id: Some(7),
            summary: summary.into(),
            description: "MATH-1750-01".into(),
            location: "Smith 101".into(),
            timing: EventTiming::Timed {
                start: day.and_hms_opt(9, 0, 0).unwrap(),
                end: day.and_hms_opt(9, 50, 0).unwrap(),
                time_zone: chrono_tz::America::New_York,
            },
            recurrence: vec!["RRULE:FREQ=WEEKLY;BYDAY=MO;UNTIL=20260502T035959Z".into()],
            appearance: Appearance::default(),
            fingerprint: String::new(),
        }
        .seal()
    }

    /// What calsync wrote for `ev`, as the provider lists it back.
    fn written(ev: &DesiredEvent) -> CalendarEvent {
        event_body(ev)
    }

    fn actions(d: &[Decision<'_>]) -> Vec<(&'static str, String)> {
        d.iter()
            .map(|d| match d {
                Decision::Unchanged { desired } => ("unchanged", desired.id.clone()),
                Decision::Insert { desired } => ("insert", desired.id.clone()),
                Decision::Update { desired, .. } => ("update", desired.id.clone()),
                Decision::Restore { desired, .. } => ("restore", desired.id.clone()),
                Decision::Delete { existing } => ("delete", existing.id.clone()),
            })
            .collect()
    }

    #[test]
    fn each_kind_of_difference_gets_its_decision() {
        let want = vec![
            desired("a", "Calculus I"),
            desired("b", "Physics"),
            desired("c", "Chemistry"),
            desired("d", "Biology"),
        ];
        let mut renamed = written(&desired("b", "Phys 1"));
        renamed.private_properties.insert(
            FINGERPRINT_PROPERTY.into(),
            desired("b", "Phys 1").fingerprint,
        );
        let mut deleted_by_student = written(&want[2]);
        deleted_by_student.status = EventStatus::Cancelled;
        let stray = written(&desired("z", "Old course"));
        let mut stray_gone = written(&desired("y", "Older course"));
        stray_gone.status = EventStatus::Cancelled;
        let listed = vec![
            written(&want[0]),
            renamed,
            deleted_by_student,
            stray,
            stray_gone,
        ];
        let d = diff(&want, &listed);
        assert_eq!(
            actions(&d),
            vec![
                ("unchanged", "a".into()),
                ("update", "b".into()),
                ("restore", "c".into()),
                ("insert", "d".into()),
                ("delete", "z".into()),
            ]
        );
        let report = describe(&d);
        let b = report.iter().find(|c| c.event_id == "b").unwrap();
        assert_eq!(
            b.fields.iter().map(ToString::to_string).collect::<Vec<_>>(),
            vec!["summary: 'Phys 1' → 'Physics'"]
        );
        let c = report.iter().find(|c| c.event_id == "c").unwrap();
        assert_eq!(c.note.as_deref(), Some("a student deleted this event"));
        assert!(c.fields.is_empty(), "{:?}", c.fields);
        let z = report.iter().find(|c| c.event_id == "z").unwrap();
        assert_eq!(
            (z.action, z.kind),
            (ChangeAction::Delete, Some(EventKind::Class))
        );
        assert_eq!(
            report.iter().map(|c| c.action).collect::<Vec<_>>(),
            vec![
                ChangeAction::Insert,
                ChangeAction::Update,
                ChangeAction::Restore,
                ChangeAction::Delete
            ]
        );
    }

    #[test]
    fn an_identical_calendar_needs_nothing() {
        let want = vec![desired("a", "Calculus I"), desired("b", "Physics")];
        let listed: Vec<CalendarEvent> = want.iter().map(written).collect();
        let d = diff(&want, &listed);
        assert!(d.iter().all(|d| matches!(d, Decision::Unchanged { .. })));
        assert!(describe(&d).is_empty());
    }

    #[test]
    fn times_recurrence_and_appearance_are_described_field_by_field() {
        let mut want = desired("a", "Calculus I");
        let mut old = written(&want);
        old.start = Some(EventTime::At {
            instant: "2026-01-12T15:00:00Z".parse().unwrap(),
            time_zone: Some("America/New_York".into()),
        });
        old.recurrence
            .push("EXDATE;TZID=America/New_York:20260119T090000".into());
        old.status = EventStatus::Tentative;
        want.appearance.color_id = Some(11);
        want.appearance.reminders = Reminders::Overrides(vec![Reminder {
            method: ReminderMethod::Popup,
            minutes: 10,
        }]);
        want.reseal();
        let fields: Vec<String> = field_changes(&old, &want)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            fields,
            vec![
                "status: 'tentative' → 'confirmed'",
                "start: '2026-01-12 10:00 America/New_York' → '2026-01-12 09:00 America/New_York'",
                "recurrence: 'EXDATE;TZID=America/New_York:20260119T090000' → ''",
                "color: 'calendar default' → '11'",
                "reminders: 'calendar default' → 'popup 10 min'",
            ]
        );
    }

    #[test]
    fn an_old_fingerprint_alone_is_named() {
        let want = desired("a", "Calculus I");
        let mut old = written(&want);
        old.private_properties
            .insert(FINGERPRINT_PROPERTY.into(), "0ld".into());
        let d = diff(std::slice::from_ref(&want), std::slice::from_ref(&old));
        assert!(matches!(d[0], Decision::Update { .. }));
        let fields = field_changes(&old, &want);
        assert_eq!(fields.len(), 1);
        assert_eq!(fields[0].field, "fingerprint");
        assert_eq!(fields[0].before, "0ld");
    }
}
