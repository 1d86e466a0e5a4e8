//! events.instances and instance ids of recurring events.
//!
//! Followed: Google Calendar API reference "Events: instances" (`GET
//! /calendars/{calendarId}/events/{eventId}/instances`; `timeMin` is an inclusive lower bound
//! for an instance's end, `timeMax` an exclusive upper bound for its start; `maxResults`
//! default 250, at most 2500; `pageToken`; `showDeleted`; `originalStart`; `timeZone`), the
//! Events resource (`recurringEventId`, `originalStartTime`) and the "Recurring events" guide
//! (instance ids `<eventId>_<YYYYMMDDTHHMMSSZ>` for timed events, `<eventId>_<YYYYMMDD>` for
//! all-day ones). Called on a non-recurring event it answers that event as the only item.
//! Instances are computed on the fly (see [`crate::expand`]); changing a single instance
//! (an exception) is not implemented and answers 400 `unsupportedByFake`.

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, SecondsFormat, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::acl::Role;
use crate::error::ApiError;
use crate::events::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, events_envelope, free_busy_view};
use crate::expand::{Occ, SeriesStart, Unsupported, expand, local_to_utc};
use crate::paging::{PageQuery, parse_bool, parse_instant};
use crate::recurrence::Recurrence;
use crate::state::{CalendarState, Principal, State};
use crate::validate::{Moment, parse_when, recurrence_lines};

/// One occurrence of a recurring event, as [`FakeGoogle::occurrences`](crate::FakeGoogle::occurrences)
/// reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Occurrence {
    /// The instance id Google gives it (`<eventId>_20261126T140000Z`, all-day
    /// `<eventId>_20261126`).
    pub instance_id: String,
    /// Wall-clock start in the event's `start.timeZone` (all-day: the date at 00:00).
    pub local_start: NaiveDateTime,
    /// The start instant (all-day: the date at 00:00 UTC).
    pub start_utc: DateTime<Utc>,
    /// Whether the series is all-day.
    pub all_day: bool,
}

impl Occurrence {
    /// The local date of the occurrence.
    pub fn local_date(&self) -> NaiveDate {
        self.local_start.date()
    }
}

/// A recurring event, ready to expand.
struct Series {
    id: String,
    start: SeriesStart,
    recurrence: Recurrence,
    /// Wall-clock duration (timed) or whole days (all-day).
    duration: Duration,
}

impl Series {
    /// `None` when the event has no recurrence lines.
    fn of(ev: &Value) -> Result<Option<Series>, ApiError> {
        let Some(obj) = ev.as_object() else {
            return Ok(None);
        };
        let lines = recurrence_lines(obj)?;
        if lines.is_empty() {
            return Ok(None);
        }
        let recurrence = Recurrence::parse(lines)?;
        let (start, tz) = parse_when(obj.get("start"), "start")?;
        let (end, _) = parse_when(obj.get("end"), "end")?;
        let (start, duration) = match (start, end) {
            (Moment::Date(s), Moment::Date(e)) => (SeriesStart::AllDay(s), e - s),
            (Moment::DateTime(s), Moment::DateTime(e)) => {
                let tz = tz.unwrap_or(Tz::UTC);
                let local = s.with_timezone(&tz).naive_local();
                let end_local = e.with_timezone(&tz).naive_local();
                (SeriesStart::Timed { local, tz }, end_local - local)
            }
            _ => return Err(ApiError::invalid("Invalid start time.")),
        };
        let id = obj
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        Ok(Some(Series {
            id,
            start,
            recurrence,
            duration,
        }))
    }

    fn expand(&self, stop: Option<DateTime<Utc>>) -> Result<Vec<Occ>, ApiError> {
        expand(self.start, &self.recurrence, stop)
            .map_err(|Unsupported(what)| ApiError::unsupported(&what))
    }

    fn instance_id(&self, occ: &Occ) -> String {
        match self.start {
            SeriesStart::AllDay(_) => format!("{}_{}", self.id, occ.local.format("%Y%m%d")),
            SeriesStart::Timed { .. } => {
                format!("{}_{}", self.id, occ.utc.format("%Y%m%dT%H%M%SZ"))
            }
        }
    }

    fn end_utc(&self, occ: &Occ) -> DateTime<Utc> {
        match self.start {
            SeriesStart::AllDay(_) => occ.utc + self.duration,
            SeriesStart::Timed { tz, .. } => local_to_utc(occ.local + self.duration, tz),
        }
    }

    fn occurrence(&self, occ: &Occ) -> Occurrence {
        Occurrence {
            instance_id: self.instance_id(occ),
            local_start: occ.local,
            start_utc: occ.utc,
            all_day: matches!(self.start, SeriesStart::AllDay(_)),
        }
    }

    /// The instance resource: the series' fields (without `recurrence`) at this occurrence.
    fn instance(&self, series: &Value, occ: &Occ, display: Option<Tz>) -> Value {
        let mut inst: Map<String, Value> = series.as_object().cloned().unwrap_or_default();
        inst.remove("recurrence");
        inst.insert("id".into(), json!(self.instance_id(occ)));
        inst.insert("recurringEventId".into(), json!(self.id));
        let zone_of = |key: &str| series.get(key).and_then(|w| w.get("timeZone")).cloned();
        let when = |at: DateTime<Utc>, date: NaiveDate, zone: Option<Value>| match self.start {
            SeriesStart::AllDay(_) => json!({ "date": date.format("%Y-%m-%d").to_string() }),
            SeriesStart::Timed { tz, .. } => {
                let shown = at.with_timezone(&display.unwrap_or(tz));
                let mut w =
                    json!({ "dateTime": shown.to_rfc3339_opts(SecondsFormat::Secs, false) });
                if let Some(zone) = zone {
                    w["timeZone"] = zone;
                }
                w
            }
        };
        let end_utc = self.end_utc(occ);
        let end_date = occ.local.date() + self.duration;
        let start = when(occ.utc, occ.local.date(), zone_of("start"));
        inst.insert("originalStartTime".into(), start.clone());
        inst.insert("start".into(), start);
        inst.insert(
            "end".into(),
            when(
                end_utc,
                end_date,
                zone_of("end").or_else(|| zone_of("start")),
            ),
        );
        Value::Object(inst)
    }
}

/// Whether `id` looks like an instance id of a recurring event of this calendar.
pub(crate) fn is_instance_id(calendar: &CalendarState, id: &str) -> bool {
    id.rsplit_once('_').is_some_and(|(series, _)| {
        calendar
            .events
            .get(series)
            .and_then(|ev| Series::of(ev).ok().flatten())
            .is_some()
    })
}

/// events.get of an instance id; 404 if no such instance.
pub(crate) fn get_instance(calendar: &CalendarState, id: &str) -> Result<Value, ApiError> {
    let (series_id, _) = id.rsplit_once('_').ok_or_else(ApiError::not_found)?;
    let series_ev = calendar
        .events
        .get(series_id)
        .ok_or_else(ApiError::not_found)?;
    let series = Series::of(series_ev)?.ok_or_else(ApiError::not_found)?;
    series
        .expand(None)?
        .iter()
        .find(|occ| series.instance_id(occ) == id)
        .map(|occ| series.instance(series_ev, occ, None))
        .ok_or_else(ApiError::not_found)
}

/// The end of the last occurrence of a recurring event (`None`: not recurring; an error:
/// the fake cannot expand it). Series without COUNT or UNTIL end at the end of time.
pub(crate) fn last_occurrence_end(ev: &Value) -> Option<Result<DateTime<Utc>, ApiError>> {
    let series = match Series::of(ev) {
        Ok(Some(series)) => series,
        Ok(None) => return None,
        Err(e) => return Some(Err(e)),
    };
    let rules = &series.recurrence.rrules;
    if rules.iter().any(|r| r.count.is_none() && r.until.is_none()) {
        return Some(Ok(DateTime::<Utc>::MAX_UTC));
    }
    Some(series.expand(None).map(|occs| {
        occs.last()
            .map_or(DateTime::<Utc>::MIN_UTC, |last| series.end_utc(last))
    }))
}

/// The occurrences of one event (a non-recurring event has one).
pub(crate) fn occurrences(
    calendar: &CalendarState,
    event_id: &str,
) -> Result<Vec<Occurrence>, ApiError> {
    let ev = calendar
        .events
        .get(event_id)
        .ok_or_else(ApiError::not_found)?;
    match Series::of(ev)? {
        Some(series) => Ok(series
            .expand(None)?
            .iter()
            .map(|o| series.occurrence(o))
            .collect()),
        None => {
            let (start, tz) = parse_when(ev.get("start"), "start")?;
            let (local, utc, all_day) = match start {
                Moment::Date(d) => (d.and_time(chrono::NaiveTime::MIN), start.instant(), true),
                Moment::DateTime(t) => (
                    t.with_timezone(&tz.unwrap_or(Tz::UTC)).naive_local(),
                    t,
                    false,
                ),
            };
            Ok(vec![Occurrence {
                instance_id: event_id.to_string(),
                local_start: local,
                start_utc: utc,
                all_day,
            }])
        }
    }
}

/// events.instances query options.
struct InstancesQuery {
    page: PageQuery,
    time_min: Option<DateTime<Utc>>,
    time_max: Option<DateTime<Utc>>,
    show_deleted: bool,
    original_start: Option<String>,
    time_zone: Option<(Tz, String)>,
}

impl InstancesQuery {
    fn parse(query: &[(String, String)]) -> Result<Self, ApiError> {
        let mut q = InstancesQuery {
            page: PageQuery::parse(query, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)?,
            time_min: None,
            time_max: None,
            show_deleted: false,
            original_start: None,
            time_zone: None,
        };
        for (key, value) in query {
            match key.as_str() {
                "timeMin" => q.time_min = Some(parse_instant(key, value)?),
                "timeMax" => q.time_max = Some(parse_instant(key, value)?),
                "showDeleted" => q.show_deleted = parse_bool(key, value)?,
                "originalStart" => q.original_start = Some(value.clone()),
                "timeZone" => {
                    let tz = value
                        .parse::<Tz>()
                        .map_err(|_| ApiError::invalid(&format!("Invalid time zone: {value}")))?;
                    q.time_zone = Some((tz, value.clone()));
                }
                _ => {}
            }
        }
        if let (Some(min), Some(max)) = (q.time_min, q.time_max)
            && min >= max
        {
            return Err(ApiError::time_range_empty());
        }
        Ok(q)
    }

    /// Whether `originalStart` names this occurrence (an RFC 3339 instant, or a date for
    /// all-day series).
    fn original_start_matches(&self, occ: &Occ, all_day: bool) -> Result<bool, ApiError> {
        let Some(wanted) = &self.original_start else {
            return Ok(true);
        };
        if all_day {
            return Ok(wanted == &occ.local.format("%Y-%m-%d").to_string());
        }
        Ok(parse_instant("originalStart", wanted)? == occ.utc)
    }
}

/// events.instances
pub(crate) fn list_instances(
    st: &State,
    calendar_id: &str,
    event_id: &str,
    who: &Principal,
    query: &[(String, String)],
) -> Result<Value, ApiError> {
    let (calendar, access) = st.calendar_with(calendar_id, who, Role::FreeBusyReader)?;
    let series_ev = calendar
        .events
        .get(event_id)
        .ok_or_else(ApiError::not_found)?;
    let q = InstancesQuery::parse(query)?;
    let view = |ev: Value| {
        if access.role == Role::FreeBusyReader {
            free_busy_view(&ev)
        } else {
            ev
        }
    };
    let show = |ev: &Value| {
        q.show_deleted || ev.get("status").and_then(Value::as_str) != Some("cancelled")
    };
    let items: Vec<(String, Value)> = match Series::of(series_ev)? {
        None => std::iter::once((event_id.to_string(), series_ev.clone()))
            .filter(|(_, ev)| show(ev))
            .collect(),
        Some(series) => {
            let all_day = matches!(series.start, SeriesStart::AllDay(_));
            let mut out = Vec::new();
            for occ in series.expand(q.time_max)? {
                if q.time_min.is_some_and(|min| series.end_utc(&occ) < min)
                    || !q.original_start_matches(&occ, all_day)?
                {
                    continue;
                }
                let inst =
                    series.instance(series_ev, &occ, q.time_zone.as_ref().map(|(tz, _)| *tz));
                if show(&inst) {
                    out.push((series.instance_id(&occ), inst));
                }
            }
            out
        }
    };
    let (items, next) = q
        .page
        .take(items.into_iter().map(|(id, ev)| (id, view(ev))));
    let zone = q.time_zone.as_ref().map(|(_, name)| name.as_str());
    let mut out = events_envelope(&calendar.resource, access.role, zone, items);
    if let Some(next) = next {
        out["nextPageToken"] = json!(next);
    }
    Ok(out)
}
