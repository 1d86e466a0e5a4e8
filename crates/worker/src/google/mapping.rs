//! Provider-neutral types ↔ google-calendar3's.

use calsync_domain::events::{Reminder, ReminderMethod, Reminders, Transparency, Visibility};
use google_calendar3::api::{
    AclRule, AclRuleScope, Calendar as GCalendar, Event, EventDateTime, EventExtendedProperties,
    EventReminder, EventReminders,
};

use crate::backend::{
    AccessRole, Calendar, CalendarEvent, EventStatus, EventTime, NewCalendar, Share,
};

fn status_name(s: EventStatus) -> &'static str {
    match s {
        EventStatus::Confirmed => "confirmed",
        EventStatus::Tentative => "tentative",
        EventStatus::Cancelled => "cancelled",
    }
}

fn status_from(s: Option<&str>) -> EventStatus {
    match s {
        Some("cancelled") => EventStatus::Cancelled,
        Some("tentative") => EventStatus::Tentative,
        _ => EventStatus::Confirmed,
    }
}

fn time_to_google(t: &EventTime) -> EventDateTime {
    match t {
        EventTime::At { instant, time_zone } => EventDateTime {
            date_time: Some(*instant),
            time_zone: time_zone.clone(),
            date: None,
        },
        EventTime::Day(d) => EventDateTime {
            date: Some(*d),
            date_time: None,
            time_zone: None,
        },
    }
}

fn time_from_google(t: &EventDateTime) -> Option<EventTime> {
    match (t.date_time, t.date) {
        (Some(instant), _) => Some(EventTime::At {
            instant,
            time_zone: t.time_zone.clone(),
        }),
        (None, Some(d)) => Some(EventTime::Day(d)),
        (None, None) => None,
    }
}

fn reminders_to_google(r: &Reminders) -> EventReminders {
    match r {
        Reminders::UseDefault => EventReminders {
            use_default: Some(true),
            overrides: None,
        },
        Reminders::Overrides(list) => EventReminders {
            use_default: Some(false),
            overrides: Some(
                list.iter()
                    .map(|r| EventReminder {
                        method: Some(r.method.as_str().to_string()),
                        minutes: Some(i32::try_from(r.minutes).unwrap_or(i32::MAX)),
                    })
                    .collect(),
            ),
        },
    }
}

fn reminders_from_google(r: &EventReminders) -> Reminders {
    if r.use_default != Some(false) {
        return Reminders::UseDefault;
    }
    Reminders::Overrides(
        r.overrides
            .iter()
            .flatten()
            .filter_map(|o| {
                let method = match o.method.as_deref()? {
                    "popup" => ReminderMethod::Popup,
                    "email" => ReminderMethod::Email,
                    _ => return None,
                };
                Some(Reminder {
                    method,
                    minutes: u32::try_from(o.minutes?).ok()?,
                })
            })
            .collect(),
    )
}

fn visibility_from(s: &str) -> Option<Visibility> {
    match s {
        "default" => Some(Visibility::Default),
        "public" => Some(Visibility::Public),
        "private" => Some(Visibility::Private),
        _ => None,
    }
}

fn transparency_from(s: &str) -> Option<Transparency> {
    match s {
        "opaque" => Some(Transparency::Opaque),
        "transparent" => Some(Transparency::Transparent),
        _ => None,
    }
}

/// The Google body of a neutral event (what events.insert / events.update send).
pub(crate) fn event_to_google(ev: &CalendarEvent) -> Event {
    Event {
        id: Some(ev.id.clone()),
        summary: ev.summary.clone(),
        description: ev.description.clone(),
        location: ev.location.clone(),
        start: ev.start.as_ref().map(time_to_google),
        end: ev.end.as_ref().map(time_to_google),
        recurrence: (!ev.recurrence.is_empty()).then(|| ev.recurrence.clone()),
        status: Some(status_name(ev.status).into()),
        color_id: ev.color_id.map(|c| c.to_string()),
        visibility: ev.visibility.map(|v| v.as_str().to_string()),
        transparency: ev.transparency.map(|t| t.as_str().to_string()),
        reminders: ev.reminders.as_ref().map(reminders_to_google),
        extended_properties: (!ev.private_properties.is_empty()).then(|| EventExtendedProperties {
            private: Some(
                ev.private_properties
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
            shared: None,
        }),
        ..Default::default()
    }
}

/// A listed Google event in neutral form (`None` without an id).
pub(crate) fn event_from_google(ev: Event) -> Option<CalendarEvent> {
    Some(CalendarEvent {
        id: ev.id?,
        status: status_from(ev.status.as_deref()),
        summary: ev.summary,
        description: ev.description,
        location: ev.location,
        start: ev.start.as_ref().and_then(time_from_google),
        end: ev.end.as_ref().and_then(time_from_google),
        recurrence: ev.recurrence.unwrap_or_default(),
        color_id: ev.color_id.and_then(|c| c.parse().ok()),
        visibility: ev.visibility.as_deref().and_then(visibility_from),
        transparency: ev.transparency.as_deref().and_then(transparency_from),
        reminders: ev.reminders.as_ref().map(reminders_from_google),
        private_properties: ev
            .extended_properties
            .and_then(|p| p.private)
            .map(|p| p.into_iter().collect())
            .unwrap_or_default(),
    })
}

/// A Google calendar in neutral form.
pub(crate) fn calendar_from_google(c: GCalendar, fallback_id: &str) -> Calendar {
    Calendar {
        id: c.id.unwrap_or_else(|| fallback_id.to_string()),
        summary: c.summary.unwrap_or_default(),
        time_zone: c.time_zone,
        description: c.description,
    }
}

/// A calendar-list entry in neutral form (`None` without an id).
pub(crate) fn calendar_from_list_entry(
    c: google_calendar3::api::CalendarListEntry,
) -> Option<Calendar> {
    Some(Calendar {
        id: c.id?,
        summary: c.summary.unwrap_or_default(),
        time_zone: c.time_zone,
        description: c.description,
    })
}

/// The calendars.insert body.
pub(crate) fn calendar_to_google(c: &NewCalendar) -> GCalendar {
    GCalendar {
        summary: Some(c.summary.clone()),
        description: c.description.clone(),
        time_zone: c.time_zone.clone(),
        ..Default::default()
    }
}

/// The acl.insert body.
pub(crate) fn share_to_google(s: &Share) -> AclRule {
    let role = match s.role {
        AccessRole::FreeBusyReader => "freeBusyReader",
        AccessRole::Reader => "reader",
        AccessRole::Writer => "writer",
        AccessRole::Owner => "owner",
    };
    AclRule {
        role: Some(role.into()),
        scope: Some(AclRuleScope {
            type_: Some("user".into()),
            value: Some(s.email.clone()),
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::{NaiveDate, TimeZone, Utc};

    use super::*;

    #[test]
    fn an_event_survives_the_round_trip_through_googles_types() {
        let ev = CalendarEvent {
            id: "cs1m2".into(),
            status: EventStatus::Confirmed,
            summary: Some("Databases".into()),
            description: Some("CS-340-002".into()),
            location: Some("Smith 101".into()),
            start: Some(EventTime::At {
                instant: Utc.with_ymd_and_hms(2026, 1, 12, 14, 0, 0).unwrap(),
                time_zone: Some("America/New_York".into()),
            }),
            end: Some(EventTime::Day(
                NaiveDate::from_ymd_opt(2026, 1, 13).unwrap(),
            )),
            recurrence: vec!["RRULE:FREQ=WEEKLY;BYDAY=MO".into()],
            color_id: Some(7),
            visibility: Some(Visibility::Private),
            transparency: Some(Transparency::Transparent),
            reminders: Some(Reminders::Overrides(vec![Reminder {
                method: ReminderMethod::Popup,
                minutes: 10,
            }])),
            private_properties: BTreeMap::from([("calsync".into(), "1".into())]),
        };
        let google = event_to_google(&ev);
        assert_eq!(google.color_id.as_deref(), Some("7"));
        assert_eq!(google.status.as_deref(), Some("confirmed"));
        assert_eq!(event_from_google(google), Some(ev));
    }

    #[test]
    fn single_events_send_no_recurrence_and_default_reminders_stay_default() {
        let ev = CalendarEvent {
            id: "x".into(),
            reminders: Some(Reminders::UseDefault),
            ..Default::default()
        };
        let google = event_to_google(&ev);
        assert!(google.recurrence.is_none());
        assert_eq!(
            google.reminders.as_ref().and_then(|r| r.use_default),
            Some(true)
        );
        assert!(google.extended_properties.is_none());
    }
}
