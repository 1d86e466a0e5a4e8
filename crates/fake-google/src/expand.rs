//! Expansion of a recurring event into its occurrences, in the event's start time zone
//! (wall-clock times stay put across DST changes), as RFC 5545 §3.8.5 defines the
//! recurrence set: DTSTART (always the first instance) ∪ RRULE ∪ RDATE, minus EXRULE and
//! EXDATE.
//!
//! Supported: `FREQ=DAILY|WEEKLY|MONTHLY|YEARLY` with `INTERVAL`, `COUNT`, `UNTIL`,
//! `WKST`, `BYDAY` (ordinals in MONTHLY, and in YEARLY together with `BYMONTH`),
//! `BYMONTHDAY`, `BYMONTH`. Rules that need more (`FREQ` below DAILY, `BYHOUR`/`BYMINUTE`/
//! `BYSECOND`, `BYYEARDAY`, `BYWEEKNO`, `BYSETPOS`) are valid but not expanded: the caller
//! gets an error naming the part, never a silently wrong answer.
//!
//! Details the fake decides (documented, as Google does not spell them out):
//! - a date-time EXDATE removes the occurrence whose UTC instant it names (`...Z`, or a
//!   `TZID` value converted to UTC) or whose wall-clock start in the EXDATE's `TZID` equals
//!   it; a floating EXDATE is read in the event's zone;
//! - a DATE-valued EXDATE on a timed series is accepted but removes nothing (reported for
//!   Google in a public Q&A thread); on an all-day series DATE values are what match;
//! - a local start that falls in a DST gap is read with the offset before the gap (RFC 5545
//!   §3.3.5), an ambiguous one (DST end) as the earlier instant;
//! - expansion stops 100 years after the start or after 50,000 occurrences.

use chrono::{
    DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, Offset, TimeZone, Utc,
    Weekday,
};
use chrono_tz::Tz;

use crate::recurrence::{DateValue, Freq, Recurrence, Rule};

/// Hard caps of one expansion.
const MAX_YEARS: i32 = 100;
const MAX_OCCURRENCES: usize = 50_000;

/// The start of a series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SeriesStart {
    /// A timed event: local start in its `start.timeZone`.
    Timed { local: NaiveDateTime, tz: Tz },
    /// An all-day event.
    AllDay(NaiveDate),
}

impl SeriesStart {
    fn local(self) -> NaiveDateTime {
        match self {
            SeriesStart::Timed { local, .. } => local,
            SeriesStart::AllDay(date) => date.and_time(chrono::NaiveTime::MIN),
        }
    }

    fn occurrence(self, local: NaiveDateTime) -> Occ {
        let utc = match self {
            SeriesStart::Timed { tz, .. } => local_to_utc(local, tz),
            SeriesStart::AllDay(_) => local.and_utc(),
        };
        Occ { local, utc }
    }
}

/// One occurrence: wall-clock start in the series' zone and its instant (all-day: the date
/// at midnight, and midnight UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Occ {
    pub utc: DateTime<Utc>,
    pub local: NaiveDateTime,
}

/// Converts a wall-clock time to UTC: gaps use the offset before the gap, ambiguous times
/// the earlier instant.
pub(crate) fn local_to_utc(local: NaiveDateTime, tz: Tz) -> DateTime<Utc> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        LocalResult::Ambiguous(earlier, _) => earlier.with_timezone(&Utc),
        LocalResult::None => {
            let before = tz
                .from_local_datetime(&(local - Duration::hours(6)))
                .earliest()
                .map_or(0, |t| t.offset().fix().local_minus_utc());
            (local - Duration::seconds(i64::from(before))).and_utc()
        }
    }
}

/// Why a valid recurrence could not be expanded by the fake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unsupported(pub String);

/// Every occurrence of the series, ascending, stopping early once an occurrence starts at or
/// after `stop` (if given).
pub(crate) fn expand(
    start: SeriesStart,
    rec: &Recurrence,
    stop: Option<DateTime<Utc>>,
) -> Result<Vec<Occ>, Unsupported> {
    let first = start.occurrence(start.local());
    let mut all = vec![first];
    for rule in &rec.rrules {
        let mut occs = generate(start, rule, stop)?;
        // DTSTART always counts as the first occurrence of COUNT (RFC 5545 §3.3.10).
        if let Some(count) = rule.count
            && occs.first() != Some(&first)
        {
            occs.truncate(usize::try_from(count.saturating_sub(1)).unwrap_or(usize::MAX));
        }
        all.extend(occs);
    }
    for rdate in &rec.rdates {
        all.push(rdate_occurrence(start, *rdate));
    }
    let mut excluded = Vec::new();
    for rule in &rec.exrules {
        excluded.extend(generate(start, rule, stop)?.into_iter().map(|o| o.utc));
    }
    all.sort();
    all.dedup_by_key(|o| o.utc);
    all.retain(|occ| {
        !excluded.contains(&occ.utc)
            && !rec.exdates.iter().any(|ex| exdate_matches(start, *ex, occ))
    });
    if let Some(stop) = stop {
        all.retain(|o| o.utc < stop);
    }
    all.truncate(MAX_OCCURRENCES);
    Ok(all)
}

fn exdate_matches(start: SeriesStart, exdate: DateValue, occ: &Occ) -> bool {
    match (start, exdate) {
        (SeriesStart::AllDay(_), DateValue::Date(date)) => occ.local.date() == date,
        (SeriesStart::AllDay(_), _) | (SeriesStart::Timed { .. }, DateValue::Date(_)) => false,
        (SeriesStart::Timed { .. }, DateValue::Utc(instant)) => occ.utc == instant,
        (SeriesStart::Timed { .. }, DateValue::Zoned(local, zone)) => {
            occ.utc == local_to_utc(local, zone)
                || occ.utc.with_timezone(&zone).naive_local() == local
        }
        (SeriesStart::Timed { .. }, DateValue::Floating(local)) => occ.local == local,
    }
}

fn rdate_occurrence(start: SeriesStart, rdate: DateValue) -> Occ {
    match start {
        SeriesStart::AllDay(_) => {
            let date = match rdate {
                DateValue::Date(d) => d,
                DateValue::Utc(t) => t.date_naive(),
                DateValue::Zoned(n, _) | DateValue::Floating(n) => n.date(),
            };
            start.occurrence(date.and_time(chrono::NaiveTime::MIN))
        }
        SeriesStart::Timed { local, tz } => {
            let utc = match rdate {
                DateValue::Date(d) => local_to_utc(d.and_time(local.time()), tz),
                DateValue::Utc(t) => t,
                DateValue::Zoned(n, zone) => local_to_utc(n, zone),
                DateValue::Floating(n) => local_to_utc(n, tz),
            };
            Occ {
                utc,
                local: utc.with_timezone(&tz).naive_local(),
            }
        }
    }
}

fn check_supported(rule: &Rule) -> Result<(), Unsupported> {
    let unsupported = |what: &str| Err(Unsupported(format!("recurrence {what}")));
    if rule.freq < Freq::Daily {
        return unsupported("FREQ below DAILY");
    }
    for (name, empty) in [
        ("BYHOUR", rule.by_hour.is_empty()),
        ("BYMINUTE", rule.by_minute.is_empty()),
        ("BYSECOND", rule.by_second.is_empty()),
        ("BYYEARDAY", rule.by_year_day.is_empty()),
        ("BYWEEKNO", rule.by_week_no.is_empty()),
        ("BYSETPOS", rule.by_set_pos.is_empty()),
    ] {
        if !empty {
            return unsupported(name);
        }
    }
    if rule.freq == Freq::Yearly && rule.by_month.is_empty() && !rule.by_day.is_empty() {
        return unsupported("YEARLY BYDAY without BYMONTH");
    }
    Ok(())
}

fn days_in_month(year: i32, month: u32) -> u32 {
    let next = if month == 12 {
        NaiveDate::from_ymd_opt(year + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(year, month + 1, 1)
    };
    next.and_then(|n| n.pred_opt()).map_or(28, |d| d.day())
}

/// The dates of one month selected by BYMONTHDAY and/or BYDAY (or the start's day-of-month).
fn month_dates(rule: &Rule, year: i32, month: u32, start_day: u32) -> Vec<NaiveDate> {
    let dim = days_in_month(year, month);
    let date = |d: u32| NaiveDate::from_ymd_opt(year, month, d);
    let by_month_day: Vec<NaiveDate> = rule
        .by_month_day
        .iter()
        .filter_map(|md| {
            let day = if *md > 0 {
                u32::try_from(*md).ok()?
            } else {
                let back = u32::try_from(-md).ok()?;
                (dim + 1).checked_sub(back)?
            };
            (day >= 1 && day <= dim).then(|| date(day)).flatten()
        })
        .collect();
    let mut by_day: Vec<NaiveDate> = Vec::new();
    for wd in &rule.by_day {
        let matching: Vec<NaiveDate> = (1..=dim)
            .filter_map(date)
            .filter(|d| d.weekday() == wd.weekday)
            .collect();
        match wd.ordinal {
            None => by_day.extend(matching),
            Some(n) if n > 0 => {
                by_day.extend(matching.get(usize::try_from(n - 1).unwrap_or(usize::MAX)))
            }
            Some(n) => {
                let back = usize::try_from(-n).unwrap_or(usize::MAX);
                by_day.extend(
                    matching
                        .len()
                        .checked_sub(back)
                        .and_then(|i| matching.get(i)),
                );
            }
        }
    }
    let mut out = match (rule.by_month_day.is_empty(), rule.by_day.is_empty()) {
        (true, true) => date(start_day).into_iter().collect(),
        (false, true) => by_month_day,
        (true, false) => by_day,
        (false, false) => by_month_day
            .into_iter()
            .filter(|d| by_day.contains(d))
            .collect(),
    };
    out.sort();
    out.dedup();
    out
}

fn month_ok(rule: &Rule, date: NaiveDate) -> bool {
    rule.by_month.is_empty()
        || rule
            .by_month
            .iter()
            .any(|m| u32::try_from(*m).ok() == Some(date.month()))
}

fn weekday_ok(rule: &Rule, date: NaiveDate) -> bool {
    rule.by_day.is_empty() || rule.by_day.iter().any(|d| d.weekday == date.weekday())
}

/// The candidate dates of period `k` (the k-th DAILY/WEEKLY/MONTHLY/YEARLY step).
fn period_dates(rule: &Rule, start: NaiveDate, k: i64) -> Option<(NaiveDate, Vec<NaiveDate>)> {
    let step = i64::from(rule.interval) * k;
    match rule.freq {
        Freq::Daily => {
            let date = start.checked_add_signed(Duration::days(step))?;
            let keep = month_ok(rule, date)
                && weekday_ok(rule, date)
                && (rule.by_month_day.is_empty()
                    || month_dates(rule, date.year(), date.month(), 1).contains(&date));
            Some((date, if keep { vec![date] } else { Vec::new() }))
        }
        Freq::Weekly => {
            let offset = i64::from(start.weekday().days_since(rule.wkst));
            let week = start.checked_add_signed(Duration::days(7 * step - offset))?;
            let weekdays: Vec<Weekday> = if rule.by_day.is_empty() {
                vec![start.weekday()]
            } else {
                rule.by_day.iter().map(|d| d.weekday).collect()
            };
            let mut dates: Vec<NaiveDate> = weekdays
                .into_iter()
                .filter_map(|wd| {
                    week.checked_add_signed(Duration::days(i64::from(wd.days_since(rule.wkst))))
                })
                .filter(|d| month_ok(rule, *d))
                .collect();
            dates.sort();
            dates.dedup();
            Some((week, dates))
        }
        Freq::Monthly => {
            let index = i64::from(start.year()) * 12 + i64::from(start.month0()) + step;
            let year = i32::try_from(index.div_euclid(12)).ok()?;
            let month = u32::try_from(index.rem_euclid(12)).ok()? + 1;
            let first = NaiveDate::from_ymd_opt(year, month, 1)?;
            let dates = month_dates(rule, year, month, start.day())
                .into_iter()
                .filter(|d| month_ok(rule, *d))
                .collect();
            Some((first, dates))
        }
        Freq::Yearly => {
            let year = start.year().checked_add(i32::try_from(step).ok()?)?;
            let months: Vec<u32> = if rule.by_month.is_empty() {
                vec![start.month()]
            } else {
                rule.by_month
                    .iter()
                    .filter_map(|m| u32::try_from(*m).ok())
                    .collect()
            };
            let mut dates: Vec<NaiveDate> = months
                .into_iter()
                .flat_map(|m| month_dates(rule, year, m, start.day()))
                .collect();
            dates.sort();
            dates.dedup();
            Some((NaiveDate::from_ymd_opt(year, 1, 1)?, dates))
        }
        Freq::Secondly | Freq::Minutely | Freq::Hourly => None,
    }
}

/// The occurrences one rule produces from DTSTART (DTSTART itself only if it matches).
fn generate(
    start: SeriesStart,
    rule: &Rule,
    stop: Option<DateTime<Utc>>,
) -> Result<Vec<Occ>, Unsupported> {
    check_supported(rule)?;
    let local_start = start.local();
    let start_date = local_start.date();
    let horizon = start_date
        .with_year(start_date.year().saturating_add(MAX_YEARS))
        .unwrap_or(NaiveDate::MAX);
    let limit = rule.count.map_or(MAX_OCCURRENCES, |c| {
        usize::try_from(c)
            .unwrap_or(MAX_OCCURRENCES)
            .min(MAX_OCCURRENCES)
    });
    let mut out = Vec::new();
    for k in 0.. {
        let Some((period_start, dates)) = period_dates(rule, start_date, k) else {
            break;
        };
        if period_start > horizon {
            break;
        }
        for date in dates {
            if date < start_date {
                continue;
            }
            let occ = start.occurrence(date.and_time(local_start.time()));
            let past_until = match rule.until {
                None => false,
                Some(DateValue::Date(until)) => date > until,
                Some(DateValue::Utc(until)) => occ.utc > until,
                Some(DateValue::Floating(until)) | Some(DateValue::Zoned(until, _)) => {
                    occ.local > until
                }
            };
            if past_until || stop.is_some_and(|s| occ.utc >= s) {
                return Ok(out);
            }
            out.push(occ);
            if out.len() >= limit {
                return Ok(out);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ny() -> Tz {
        "America/New_York".parse().unwrap_or(Tz::UTC)
    }

    fn local(y: i32, m: u32, d: u32, h: u32, min: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(y, m, d)
            .and_then(|d| d.and_hms_opt(h, min, 0))
            .unwrap_or_default()
    }

    fn run(start: NaiveDateTime, lines: &[&str]) -> Vec<Occ> {
        let rec = Recurrence::parse(lines.iter().copied()).unwrap_or_default();
        expand(
            SeriesStart::Timed {
                local: start,
                tz: ny(),
            },
            &rec,
            None,
        )
        .unwrap_or_default()
    }

    #[test]
    fn weekly_mwf_across_dst_keeps_wall_clock() {
        // Mon 2026-10-26 09:00 EDT; DST ends Sun 2026-11-01.
        let occs = run(
            local(2026, 10, 26, 9, 0),
            &["RRULE:FREQ=WEEKLY;BYDAY=MO,WE,FR;UNTIL=20261106T045959Z"],
        );
        let locals: Vec<NaiveDateTime> = occs.iter().map(|o| o.local).collect();
        assert_eq!(
            locals,
            [
                local(2026, 10, 26, 9, 0),
                local(2026, 10, 28, 9, 0),
                local(2026, 10, 30, 9, 0),
                local(2026, 11, 2, 9, 0),
                local(2026, 11, 4, 9, 0),
            ]
        );
        assert_eq!(occs[0].utc, local(2026, 10, 26, 13, 0).and_utc());
        assert_eq!(occs[3].utc, local(2026, 11, 2, 14, 0).and_utc());
    }

    #[test]
    fn exdates_in_each_form() {
        let rule = "RRULE:FREQ=WEEKLY;BYDAY=TU,TH;COUNT=8";
        let start = local(2026, 11, 17, 19, 0); // Tue evening, EST
        assert_eq!(run(start, &[rule]).len(), 8);
        // Thu 2026-11-26 19:00 EST = Fri 00:00 UTC: local and UTC forms both remove it.
        for ex in [
            "EXDATE;TZID=America/New_York:20261126T190000",
            "EXDATE:20261127T000000Z",
            "EXDATE:20261126T190000",
            "EXDATE;TZID=Europe/Paris:20261127T010000",
        ] {
            let occs = run(start, &[rule, ex]);
            assert_eq!(occs.len(), 7, "{ex}");
            assert!(
                occs.iter().all(|o| o.local != local(2026, 11, 26, 19, 0)),
                "{ex}"
            );
        }
        // A DATE EXDATE on a timed series is accepted and cancels nothing.
        assert_eq!(run(start, &[rule, "EXDATE;VALUE=DATE:20261126"]).len(), 8);
        // COUNT counts before exclusions (RFC 5545: EXDATE removes from the set).
        let many = run(start, &[rule, "EXDATE:20261127T000000Z,20261125T000000Z"]);
        assert_eq!(many.len(), 6);
    }

    #[test]
    fn interval_count_until_and_dtstart() {
        let start = local(2026, 9, 1, 10, 0); // Tuesday
        assert_eq!(
            run(start, &["RRULE:FREQ=DAILY;INTERVAL=3;COUNT=4"]).len(),
            4
        );
        let biweekly = run(
            start,
            &["RRULE:FREQ=WEEKLY;INTERVAL=2;BYDAY=TU;UNTIL=20261013"],
        );
        assert_eq!(
            biweekly
                .iter()
                .map(|o| o.local.date().day())
                .collect::<Vec<_>>(),
            [1, 15, 29, 13]
        );
        // DTSTART not matching BYDAY still is the first occurrence and uses up COUNT.
        let odd = run(start, &["RRULE:FREQ=WEEKLY;BYDAY=WE;COUNT=3"]);
        assert_eq!(
            odd.iter().map(|o| o.local.date().day()).collect::<Vec<_>>(),
            [1, 2, 9]
        );
        // UNTIL in UTC at 23:59:59 drops an evening class in New York.
        let evening = local(2026, 9, 1, 20, 0);
        let occs = run(evening, &["RRULE:FREQ=WEEKLY;UNTIL=20260908T235959Z"]);
        assert_eq!(occs.len(), 1);
        let occs = run(evening, &["RRULE:FREQ=WEEKLY;UNTIL=20260909T035959Z"]);
        assert_eq!(occs.len(), 2);
    }

    #[test]
    fn monthly_yearly_and_unsupported() {
        let start = local(2026, 1, 30, 9, 0);
        let last_fri = run(start, &["RRULE:FREQ=MONTHLY;BYDAY=-1FR;COUNT=3"]);
        assert_eq!(
            last_fri.iter().map(|o| o.local.date()).collect::<Vec<_>>(),
            [
                local(2026, 1, 30, 0, 0).date(),
                local(2026, 2, 27, 0, 0).date(),
                local(2026, 3, 27, 0, 0).date()
            ]
        );
        // Day 30 is skipped in February.
        let thirtieth = run(start, &["RRULE:FREQ=MONTHLY;COUNT=3"]);
        assert_eq!(thirtieth[1].local.date().month(), 3);
        let thanksgiving = run(
            local(2026, 11, 26, 12, 0),
            &["RRULE:FREQ=YEARLY;BYMONTH=11;BYDAY=4TH;COUNT=2"],
        );
        assert_eq!(
            thanksgiving[1].local.date(),
            local(2027, 11, 25, 0, 0).date()
        );
        let rec = Recurrence::parse(["RRULE:FREQ=DAILY;BYHOUR=9,10"]).unwrap_or_default();
        assert!(
            expand(
                SeriesStart::Timed {
                    local: start,
                    tz: ny()
                },
                &rec,
                None
            )
            .is_err()
        );
    }

    #[test]
    fn dst_gap_and_all_day() {
        // 02:30 does not exist on 2026-03-08 in New York: read with the EST offset.
        let occs = run(local(2026, 3, 7, 2, 30), &["RRULE:FREQ=DAILY;COUNT=2"]);
        assert_eq!(occs[1].utc, local(2026, 3, 8, 7, 30).and_utc());
        let rec = Recurrence::parse([
            "RRULE:FREQ=DAILY;COUNT=3",
            "EXDATE;VALUE=DATE:20261125",
            "EXDATE:20261126T000000Z",
        ])
        .unwrap_or_default();
        let day = local(2026, 11, 24, 0, 0).date();
        let occs = expand(SeriesStart::AllDay(day), &rec, None).unwrap_or_default();
        assert_eq!(
            occs.iter()
                .map(|o| o.local.date().day())
                .collect::<Vec<_>>(),
            [24, 26]
        );
    }

    #[test]
    fn infinite_series_stop() {
        let start = local(2026, 1, 1, 9, 0);
        let stop = local(2026, 2, 1, 0, 0).and_utc();
        let rec = Recurrence::parse(["RRULE:FREQ=DAILY"]).unwrap_or_default();
        let occs = expand(
            SeriesStart::Timed {
                local: start,
                tz: ny(),
            },
            &rec,
            Some(stop),
        )
        .unwrap_or_default();
        assert_eq!(occs.len(), 31);
        let all = expand(
            SeriesStart::Timed {
                local: start,
                tz: ny(),
            },
            &rec,
            None,
        )
        .unwrap_or_default();
        assert_eq!(all.len(), 36_525);
    }
}
