//! Parsing and validation of an event's `recurrence` lines, as Google's Events resource
//! documents them: "List of RRULE, EXRULE, RDATE and EXDATE lines for a recurring event, as
//! specified in RFC5545. Note that DTSTART and DTEND lines are not allowed in this field;
//! event start and end times are specified in the start and end fields."
//!
//! Followed: Google Calendar API reference "Events" (`recurrence[]`) and the "Recurring
//! events" guide (RRULE/EXDATE examples such as `EXDATE;TZID=America/New_York:20261126T090000`
//! and `RRULE:FREQ=WEEKLY;UNTIL=20110701T170000Z`), and RFC 5545 §3.3.10 (RECUR), §3.8.5.1
//! (EXDATE), §3.8.5.2 (RDATE), §3.3.4/§3.3.5 (DATE/DATE-TIME) for the grammar. Google answers
//! any malformed line with 400 `invalid` "Invalid recurrence rule."; so does the fake, for:
//! unknown property names or rule parts, a missing or unknown `FREQ`, duplicated parts,
//! `UNTIL` together with `COUNT`, non-positive `COUNT`/`INTERVAL`, out-of-range `BYxxx`
//! values, bad `BYDAY` days or ordinals (ordinals only with MONTHLY/YEARLY), malformed
//! dates/date-times, an unknown `TZID`, a `TZID` on a UTC (`Z`) or DATE value, and empty
//! values in comma-separated lists.

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Weekday};
use chrono_tz::Tz;

use crate::error::ApiError;

/// The 400 Google answers for any malformed recurrence line.
pub(crate) fn invalid_recurrence() -> ApiError {
    ApiError::invalid("Invalid recurrence rule.")
}

/// `FREQ`
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Freq {
    Secondly,
    Minutely,
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

/// One `BYDAY` entry: an optional ordinal (`-1FR`, `2MO`) and a weekday.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WeekdayNum {
    pub ordinal: Option<i32>,
    pub weekday: Weekday,
}

/// A DATE or DATE-TIME value (UNTIL, EXDATE, RDATE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DateValue {
    /// `VALUE=DATE`: `20261126`.
    Date(NaiveDate),
    /// UTC date-time: `20261126T140000Z`.
    Utc(DateTime<chrono::Utc>),
    /// Local date-time in an explicit zone: `TZID=America/New_York:20261126T090000`.
    Zoned(NaiveDateTime, Tz),
    /// Floating date-time (no zone): interpreted in the event's start time zone.
    Floating(NaiveDateTime),
}

/// A parsed RRULE or EXRULE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rule {
    pub freq: Freq,
    pub until: Option<DateValue>,
    pub count: Option<u32>,
    pub interval: u32,
    pub by_second: Vec<i32>,
    pub by_minute: Vec<i32>,
    pub by_hour: Vec<i32>,
    pub by_day: Vec<WeekdayNum>,
    pub by_month_day: Vec<i32>,
    pub by_year_day: Vec<i32>,
    pub by_week_no: Vec<i32>,
    pub by_month: Vec<i32>,
    pub by_set_pos: Vec<i32>,
    pub wkst: Weekday,
}

/// All lines of one event's `recurrence`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Recurrence {
    pub rrules: Vec<Rule>,
    pub exrules: Vec<Rule>,
    pub rdates: Vec<DateValue>,
    pub exdates: Vec<DateValue>,
}

impl Recurrence {
    /// Parses every line; the first malformed one fails the whole event.
    pub fn parse<'a>(lines: impl IntoIterator<Item = &'a str>) -> Result<Recurrence, ApiError> {
        let mut out = Recurrence::default();
        for line in lines {
            let (name, params, value) = split_line(line).ok_or_else(invalid_recurrence)?;
            match name.as_str() {
                "RRULE" | "EXRULE" => {
                    if !params.is_empty() {
                        return Err(invalid_recurrence());
                    }
                    let rule = parse_rule(value).ok_or_else(invalid_recurrence)?;
                    if name == "RRULE" {
                        out.rrules.push(rule);
                    } else {
                        out.exrules.push(rule);
                    }
                }
                "RDATE" | "EXDATE" => {
                    let values = parse_dates(&params, value, name == "RDATE")
                        .ok_or_else(invalid_recurrence)?;
                    if name == "RDATE" {
                        out.rdates.extend(values);
                    } else {
                        out.exdates.extend(values);
                    }
                }
                _ => return Err(invalid_recurrence()),
            }
        }
        Ok(out)
    }
}

/// Property parameters (`TZID=..`, `VALUE=..`), names upper-cased.
type Params = Vec<(String, String)>;

/// Splits `NAME;P1=V1;P2="V:2":VALUE` at the first colon outside quotes; names upper-cased.
fn split_line(line: &str) -> Option<(String, Params, &str)> {
    let mut in_quotes = false;
    let colon = line.char_indices().find_map(|(i, c)| match c {
        '"' => {
            in_quotes = !in_quotes;
            None
        }
        ':' if !in_quotes => Some(i),
        _ => None,
    })?;
    let (head, value) = (&line[..colon], &line[colon + 1..]);
    let mut parts = split_outside_quotes(head, ';').into_iter();
    let name = parts.next()?.trim().to_ascii_uppercase();
    if name.is_empty() {
        return None;
    }
    let mut params = Vec::new();
    for part in parts {
        let (key, val) = part.split_once('=')?;
        let val = val.trim_matches('"');
        if key.is_empty() || val.is_empty() {
            return None;
        }
        params.push((key.to_ascii_uppercase(), val.to_string()));
    }
    Some((name, params, value))
}

fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let mut in_quotes = false;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        if c == '"' {
            in_quotes = !in_quotes;
        } else if c == sep && !in_quotes {
            out.push(&s[start..i]);
            start = i + c.len_utf8();
        }
    }
    out.push(&s[start..]);
    out
}

fn parse_weekday(s: &str) -> Option<Weekday> {
    Some(match s {
        "MO" => Weekday::Mon,
        "TU" => Weekday::Tue,
        "WE" => Weekday::Wed,
        "TH" => Weekday::Thu,
        "FR" => Weekday::Fri,
        "SA" => Weekday::Sat,
        "SU" => Weekday::Sun,
        _ => return None,
    })
}

/// An optionally signed integer made of ASCII digits only (`+3`, `-1`, `15`).
fn parse_int(s: &str, signed: bool) -> Option<i32> {
    let digits = match s.strip_prefix(['+', '-']) {
        Some(rest) if signed => rest,
        Some(_) => return None,
        None => s,
    };
    if digits.is_empty() || digits.len() > 9 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// A comma-separated list of integers, each within `range` (and non-zero when `signed`,
/// where negative values count from the end).
fn parse_int_list(
    value: &str,
    signed: bool,
    range: std::ops::RangeInclusive<i32>,
) -> Option<Vec<i32>> {
    value
        .split(',')
        .map(|item| {
            let n = parse_int(item, signed)?;
            let magnitude = if signed { n.abs() } else { n };
            (range.contains(&magnitude) && !(signed && n == 0)).then_some(n)
        })
        .collect()
}

fn parse_by_day(value: &str) -> Option<Vec<WeekdayNum>> {
    value
        .split(',')
        .map(|item| {
            if item.len() < 2 || !item.is_char_boundary(item.len() - 2) {
                return None;
            }
            let (ordinal, day) = item.split_at(item.len() - 2);
            let weekday = parse_weekday(day)?;
            let ordinal = if ordinal.is_empty() {
                None
            } else {
                let n = parse_int(ordinal, true)?;
                if n == 0 || n.abs() > 53 {
                    return None;
                }
                Some(n)
            };
            Some(WeekdayNum { ordinal, weekday })
        })
        .collect()
}

fn parse_rule(value: &str) -> Option<Rule> {
    let mut freq = None;
    let mut until = None;
    let mut count = None;
    let mut interval = None;
    let mut rule = Rule {
        freq: Freq::Daily,
        until: None,
        count: None,
        interval: 1,
        by_second: Vec::new(),
        by_minute: Vec::new(),
        by_hour: Vec::new(),
        by_day: Vec::new(),
        by_month_day: Vec::new(),
        by_year_day: Vec::new(),
        by_week_no: Vec::new(),
        by_month: Vec::new(),
        by_set_pos: Vec::new(),
        wkst: Weekday::Mon,
    };
    let mut seen = std::collections::HashSet::new();
    for part in value.split(';') {
        let (key, val) = part.split_once('=')?;
        let key = key.to_ascii_uppercase();
        let val = val.to_ascii_uppercase();
        if val.is_empty() || !seen.insert(key.clone()) {
            return None;
        }
        match key.as_str() {
            "FREQ" => {
                freq = Some(match val.as_str() {
                    "SECONDLY" => Freq::Secondly,
                    "MINUTELY" => Freq::Minutely,
                    "HOURLY" => Freq::Hourly,
                    "DAILY" => Freq::Daily,
                    "WEEKLY" => Freq::Weekly,
                    "MONTHLY" => Freq::Monthly,
                    "YEARLY" => Freq::Yearly,
                    _ => return None,
                });
            }
            "UNTIL" => until = Some(parse_date_or_date_time(&val, None, None)?),
            "COUNT" => {
                count = Some(
                    u32::try_from(parse_int(&val, false)?)
                        .ok()
                        .filter(|n| *n > 0)?,
                )
            }
            "INTERVAL" => {
                interval = Some(
                    u32::try_from(parse_int(&val, false)?)
                        .ok()
                        .filter(|n| *n > 0)?,
                );
            }
            "BYSECOND" => rule.by_second = parse_int_list(&val, false, 0..=60)?,
            "BYMINUTE" => rule.by_minute = parse_int_list(&val, false, 0..=59)?,
            "BYHOUR" => rule.by_hour = parse_int_list(&val, false, 0..=23)?,
            "BYDAY" => rule.by_day = parse_by_day(&val)?,
            "BYMONTHDAY" => rule.by_month_day = parse_int_list(&val, true, 1..=31)?,
            "BYYEARDAY" => rule.by_year_day = parse_int_list(&val, true, 1..=366)?,
            "BYWEEKNO" => rule.by_week_no = parse_int_list(&val, true, 1..=53)?,
            "BYMONTH" => rule.by_month = parse_int_list(&val, false, 1..=12)?,
            "BYSETPOS" => rule.by_set_pos = parse_int_list(&val, true, 1..=366)?,
            "WKST" => rule.wkst = parse_weekday(&val)?,
            _ => return None,
        }
    }
    rule.freq = freq?;
    if until.is_some() && count.is_some() {
        return None;
    }
    rule.until = until;
    rule.count = count;
    rule.interval = interval.unwrap_or(1);
    // RFC 5545 §3.3.10 restrictions on which BYxxx parts fit which FREQ.
    let has_ordinal = rule.by_day.iter().any(|d| d.ordinal.is_some());
    let ordinal_ok = match rule.freq {
        Freq::Monthly => true,
        Freq::Yearly => rule.by_week_no.is_empty(),
        _ => false,
    };
    if has_ordinal && !ordinal_ok {
        return None;
    }
    if !rule.by_week_no.is_empty() && rule.freq != Freq::Yearly {
        return None;
    }
    if !rule.by_year_day.is_empty()
        && matches!(rule.freq, Freq::Daily | Freq::Weekly | Freq::Monthly)
    {
        return None;
    }
    if !rule.by_month_day.is_empty() && rule.freq == Freq::Weekly {
        return None;
    }
    let other_by = !(rule.by_second.is_empty()
        && rule.by_minute.is_empty()
        && rule.by_hour.is_empty()
        && rule.by_day.is_empty()
        && rule.by_month_day.is_empty()
        && rule.by_year_day.is_empty()
        && rule.by_week_no.is_empty()
        && rule.by_month.is_empty());
    if !rule.by_set_pos.is_empty() && !other_by {
        return None;
    }
    Some(rule)
}

fn parse_date(s: &str) -> Option<NaiveDate> {
    if s.len() != 8 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let y = s[0..4].parse().ok()?;
    let m = s[4..6].parse().ok()?;
    let d = s[6..8].parse().ok()?;
    NaiveDate::from_ymd_opt(y, m, d)
}

/// `YYYYMMDDTHHMMSS` (returns the local value and whether a trailing `Z` was present).
fn parse_date_time(s: &str) -> Option<(NaiveDateTime, bool)> {
    let (body, utc) = match s.strip_suffix('Z') {
        Some(body) => (body, true),
        None => (s, false),
    };
    if body.len() != 15 || body.as_bytes()[8] != b'T' {
        return None;
    }
    let date = parse_date(&body[..8])?;
    let time = &body[9..];
    if !time.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let time = NaiveTime::from_hms_opt(
        time[0..2].parse().ok()?,
        time[2..4].parse().ok()?,
        time[4..6].parse().ok()?,
    )?;
    Some((date.and_time(time), utc))
}

/// One DATE or DATE-TIME value. `value_type` is the `VALUE` parameter (`None` = either,
/// for UNTIL); `tz` the `TZID` parameter.
fn parse_date_or_date_time(s: &str, value_type: Option<&str>, tz: Option<Tz>) -> Option<DateValue> {
    match value_type {
        Some("DATE") => parse_date(s).map(DateValue::Date).filter(|_| tz.is_none()),
        Some("DATE-TIME") => match (parse_date_time(s)?, tz) {
            ((dt, true), None) => Some(DateValue::Utc(dt.and_utc())),
            ((_, true), Some(_)) => None,
            ((dt, false), Some(tz)) => Some(DateValue::Zoned(dt, tz)),
            ((dt, false), None) => Some(DateValue::Floating(dt)),
        },
        None => {
            if s.len() == 8 {
                parse_date(s).map(DateValue::Date)
            } else {
                parse_date_or_date_time(s, Some("DATE-TIME"), None)
            }
        }
        Some(_) => None,
    }
}

/// `PnW`, `PnDTnHnMnS`-style durations (RFC 5545 §3.3.6), for RDATE periods.
fn is_duration(s: &str) -> bool {
    let s = s.strip_prefix(['+', '-']).unwrap_or(s);
    let Some(body) = s.strip_prefix('P') else {
        return false;
    };
    let (date, time) = match body.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (body, None),
    };
    let units_ok = |part: &str, units: &[char]| {
        let mut digits = 0;
        let mut last_unit = None;
        for c in part.chars() {
            if c.is_ascii_digit() {
                digits += 1;
            } else if let Some(pos) = units.iter().position(|u| *u == c) {
                if digits == 0 || last_unit.is_some_and(|l| l >= pos) {
                    return false;
                }
                digits = 0;
                last_unit = Some(pos);
            } else {
                return false;
            }
        }
        digits == 0
    };
    let date_ok = units_ok(date, &['W', 'D']) && !(date.contains('W') && time.is_some());
    let time_ok = time.is_none_or(|t| !t.is_empty() && units_ok(t, &['H', 'M', 'S']));
    date_ok && time_ok && (body.len() > 1)
}

/// The values of an RDATE/EXDATE line.
fn parse_dates(params: &[(String, String)], value: &str, rdate: bool) -> Option<Vec<DateValue>> {
    let mut value_type = "DATE-TIME".to_string();
    let mut tz = None;
    for (key, val) in params {
        match key.as_str() {
            "VALUE" => value_type = val.to_ascii_uppercase(),
            "TZID" => tz = Some(val.parse::<Tz>().ok()?),
            _ => return None,
        }
    }
    let period = rdate && value_type == "PERIOD";
    if !matches!(value_type.as_str(), "DATE" | "DATE-TIME") && !period {
        return None;
    }
    value
        .split(',')
        .map(|item| {
            if period {
                // start/end or start/duration; the start is what makes the occurrence.
                let (start, end) = item.split_once('/')?;
                let start = parse_date_or_date_time(start, Some("DATE-TIME"), tz)?;
                let end_ok = parse_date_or_date_time(end, Some("DATE-TIME"), tz).is_some()
                    || is_duration(end);
                end_ok.then_some(start)
            } else {
                parse_date_or_date_time(item, Some(value_type.as_str()), tz)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &str) -> bool {
        Recurrence::parse([line]).is_ok()
    }

    #[test]
    fn rrules_google_accepts() {
        for line in [
            "RRULE:FREQ=WEEKLY;BYDAY=MO,WE,FR;UNTIL=20261211T045959Z",
            "RRULE:FREQ=WEEKLY;UNTIL=20110701T170000Z",
            "RRULE:FREQ=DAILY;COUNT=5",
            "RRULE:FREQ=DAILY;INTERVAL=2;UNTIL=20261231",
            "RRULE:FREQ=MONTHLY;BYDAY=-1FR",
            "RRULE:FREQ=YEARLY;BYMONTH=11;BYDAY=4TH",
            "RRULE:FREQ=MONTHLY;BYMONTHDAY=1,15,-1",
            "RRULE:FREQ=WEEKLY;WKST=SU;BYDAY=TU,TH",
            "rrule:freq=weekly;byday=mo",
            "EXRULE:FREQ=WEEKLY;BYDAY=FR;COUNT=2",
            "RRULE:FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1",
        ] {
            assert!(ok(line), "{line}");
        }
    }

    #[test]
    fn rrules_google_rejects() {
        for line in [
            "RRULE:",
            "RRULE:BYDAY=MO",
            "RRULE:FREQ=FORTNIGHTLY",
            "RRULE:FREQ=WEEKLY;UNTIL=20261211T045959Z;COUNT=3",
            "RRULE:FREQ=WEEKLY;COUNT=0",
            "RRULE:FREQ=WEEKLY;COUNT=x",
            "RRULE:FREQ=WEEKLY;INTERVAL=0",
            "RRULE:FREQ=WEEKLY;BYDAY=MX",
            "RRULE:FREQ=WEEKLY;BYDAY=1MO",
            "RRULE:FREQ=MONTHLY;BYDAY=0MO",
            "RRULE:FREQ=WEEKLY;BYDAY=",
            "RRULE:FREQ=WEEKLY;BYDAY=MO,,WE",
            "RRULE:FREQ=WEEKLY;FREQ=DAILY",
            "RRULE:FREQ=WEEKLY;COLOR=RED",
            "RRULE:FREQ=WEEKLY;UNTIL=2026-12-11",
            "RRULE:FREQ=WEEKLY;UNTIL=20261311",
            "RRULE:FREQ=WEEKLY;UNTIL=20261211T250000Z",
            "RRULE:FREQ=MONTHLY;BYMONTHDAY=32",
            "RRULE:FREQ=MONTHLY;BYMONTHDAY=0",
            "RRULE:FREQ=WEEKLY;BYMONTHDAY=1",
            "RRULE:FREQ=YEARLY;BYMONTH=13",
            "RRULE:FREQ=DAILY;BYWEEKNO=3",
            "RRULE:FREQ=DAILY;BYSETPOS=1",
            "RRULE:FREQ=DAILY;BYHOUR=24",
            "RRULE;X-FOO=1:FREQ=DAILY",
            "RRULE:FREQ=WEEKLY;",
            "DTSTART:20260901T090000Z",
            "FREQ=WEEKLY",
            "RRULE FREQ=WEEKLY",
        ] {
            assert!(!ok(line), "{line}");
        }
    }

    #[test]
    fn exdates() {
        let ny: Tz = "America/New_York".parse().unwrap_or(Tz::UTC);
        let rec = Recurrence::parse([
            "EXDATE;TZID=America/New_York:20261126T090000",
            "EXDATE:20261126T140000Z,20261127T140000Z",
            "EXDATE;VALUE=DATE:20261126",
            "EXDATE:20261126T090000",
            "RDATE;VALUE=PERIOD:20261201T140000Z/PT1H15M",
        ])
        .unwrap_or_default();
        assert_eq!(rec.exdates.len(), 5);
        let local = NaiveDate::from_ymd_opt(2026, 11, 26)
            .and_then(|d| d.and_hms_opt(9, 0, 0))
            .unwrap_or_default();
        assert_eq!(rec.exdates[0], DateValue::Zoned(local, ny));
        assert_eq!(rec.exdates[3], DateValue::Date(local.date()));
        assert_eq!(rec.exdates[4], DateValue::Floating(local));
        assert_eq!(rec.rdates.len(), 1);
        for line in [
            "EXDATE;TZID=Mars/Olympus:20261126T090000",
            "EXDATE;TZID=America/New_York:20261126T090000Z",
            "EXDATE;TZID=America/New_York;VALUE=DATE:20261126",
            "EXDATE:20261126",
            "EXDATE;VALUE=DATE:20261126T090000",
            "EXDATE:20261126T0900",
            "EXDATE:20261126T090000,",
            "EXDATE:",
            "EXDATE;VALUE=PERIOD:20261201T140000Z/PT1H",
            "EXDATE;FOO=BAR:20261126T090000Z",
            "RDATE;VALUE=PERIOD:20261201T140000Z/P",
            "RDATE;VALUE=PERIOD:20261201T140000Z",
        ] {
            assert!(!ok(line), "{line}");
        }
        assert!(ok("EXDATE;TZID=\"America/New_York\":20261126T090000"));
        assert!(ok("RDATE;VALUE=DATE:20261201,20261202"));
        assert!(ok("RDATE;VALUE=PERIOD:20261201T140000Z/20261201T150000Z"));
    }

    #[test]
    fn durations() {
        assert!(is_duration("PT1H15M"));
        assert!(is_duration("P2W"));
        assert!(is_duration("P1DT12H"));
        assert!(!is_duration("P"));
        assert!(!is_duration("PT"));
        assert!(!is_duration("PT15M1H"));
        assert!(!is_duration("P1H"));
    }
}
