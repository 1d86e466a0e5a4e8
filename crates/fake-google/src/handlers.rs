//! One axum handler per Calendar API method: extract the path, body and query, then run the
//! operation through [`FakeGoogle::api_call`].

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::Response;
use serde_json::Value;

use crate::FakeGoogle;
use crate::acl;
use crate::api::{Op, Reply, Req, bad_path, parse_json};
use crate::colors;
use crate::events;
use crate::instances;
use crate::paging::parse_bool;

type CalendarPath = Result<Path<String>, PathRejection>;
type PairPath = Result<Path<(String, String)>, PathRejection>;

/// Unwraps a path extraction or answers Google's 400.
macro_rules! path {
    ($path:expr) => {
        match $path {
            Ok(Path(p)) => p,
            Err(_) => return bad_path(),
        }
    };
}

pub(crate) async fn calendars_insert(
    State(fake): State<FakeGoogle>,
    req: Req,
    body: Bytes,
) -> Response {
    let body = parse_json(&body);
    let op = Op::new("calendars.insert", None, None);
    fake.api_call(&req, op, |st, who| {
        events::insert_calendar(st, who, body?).map(Reply::Json)
    })
    .await
}

pub(crate) async fn calendars_get(
    State(fake): State<FakeGoogle>,
    path: CalendarPath,
    req: Req,
) -> Response {
    let calendar_id = path!(path);
    let op = Op::new("calendars.get", Some(&calendar_id), None);
    fake.api_call(&req, op, |st, who| {
        Ok(Reply::Json(
            st.calendar(&calendar_id, who)?.resource.clone(),
        ))
    })
    .await
}

pub(crate) async fn calendars_delete(
    State(fake): State<FakeGoogle>,
    path: CalendarPath,
    req: Req,
) -> Response {
    let calendar_id = path!(path);
    let op = Op::new("calendars.delete", Some(&calendar_id), None);
    fake.api_call(&req, op, |st, who| {
        acl::delete_calendar(st, &calendar_id, who).map(|()| Reply::NoContent)
    })
    .await
}

pub(crate) async fn events_list(
    State(fake): State<FakeGoogle>,
    path: CalendarPath,
    req: Req,
) -> Response {
    let calendar_id = path!(path);
    let op = Op::new("events.list", Some(&calendar_id), None);
    fake.api_call(&req, op, |st, who| {
        events::list(st, &calendar_id, who, &req.query).map(Reply::Json)
    })
    .await
}

pub(crate) async fn events_insert(
    State(fake): State<FakeGoogle>,
    path: CalendarPath,
    req: Req,
    body: Bytes,
) -> Response {
    let calendar_id = path!(path);
    let body = parse_json(&body);
    let sent_id = body
        .as_ref()
        .ok()
        .and_then(|b| b.get("id"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let op = Op::new("events.insert", Some(&calendar_id), sent_id.as_deref());
    fake.api_call(&req, op, |st, who| {
        events::insert(st, &calendar_id, who, body?).map(Reply::Json)
    })
    .await
}

pub(crate) async fn events_get(
    State(fake): State<FakeGoogle>,
    path: PairPath,
    req: Req,
) -> Response {
    let (calendar_id, event_id) = path!(path);
    let op = Op::new("events.get", Some(&calendar_id), Some(&event_id));
    fake.api_call(&req, op, |st, who| {
        events::get(st, &calendar_id, &event_id, who).map(Reply::Json)
    })
    .await
}

pub(crate) async fn events_instances(
    State(fake): State<FakeGoogle>,
    path: PairPath,
    req: Req,
) -> Response {
    let (calendar_id, event_id) = path!(path);
    let op = Op::new("events.instances", Some(&calendar_id), Some(&event_id));
    fake.api_call(&req, op, |st, who| {
        instances::list_instances(st, &calendar_id, &event_id, who, &req.query).map(Reply::Json)
    })
    .await
}

pub(crate) async fn events_update(
    State(fake): State<FakeGoogle>,
    path: PairPath,
    req: Req,
    body: Bytes,
) -> Response {
    let (calendar_id, event_id) = path!(path);
    let body = parse_json(&body);
    let op = Op::new("events.update", Some(&calendar_id), Some(&event_id));
    fake.api_call(&req, op, |st, who| {
        events::update(st, &calendar_id, &event_id, who, body?).map(Reply::Json)
    })
    .await
}

pub(crate) async fn events_patch(
    State(fake): State<FakeGoogle>,
    path: PairPath,
    req: Req,
    body: Bytes,
) -> Response {
    let (calendar_id, event_id) = path!(path);
    let body = parse_json(&body);
    let op = Op::new("events.patch", Some(&calendar_id), Some(&event_id));
    fake.api_call(&req, op, |st, who| {
        events::patch(st, &calendar_id, &event_id, who, body?).map(Reply::Json)
    })
    .await
}

pub(crate) async fn events_delete(
    State(fake): State<FakeGoogle>,
    path: PairPath,
    req: Req,
) -> Response {
    let (calendar_id, event_id) = path!(path);
    let op = Op::new("events.delete", Some(&calendar_id), Some(&event_id));
    fake.api_call(&req, op, |st, who| {
        events::delete(st, &calendar_id, &event_id, who).map(|()| Reply::NoContent)
    })
    .await
}

pub(crate) async fn acl_insert(
    State(fake): State<FakeGoogle>,
    path: CalendarPath,
    req: Req,
    body: Bytes,
) -> Response {
    let calendar_id = path!(path);
    let body = parse_json(&body);
    // Google's default for sendNotifications is true.
    let notify = req
        .param("sendNotifications")
        .map(|v| parse_bool("sendNotifications", v))
        .unwrap_or(Ok(true));
    let op = Op::new("acl.insert", Some(&calendar_id), None);
    fake.api_call(&req, op, |st, who| {
        acl::insert_rule(st, &calendar_id, who, body?, notify?).map(Reply::Json)
    })
    .await
}

pub(crate) async fn acl_list(
    State(fake): State<FakeGoogle>,
    path: CalendarPath,
    req: Req,
) -> Response {
    let calendar_id = path!(path);
    let op = Op::new("acl.list", Some(&calendar_id), None);
    fake.api_call(&req, op, |st, who| {
        acl::list_rules(st, &calendar_id, who, &req.query).map(Reply::Json)
    })
    .await
}

pub(crate) async fn acl_get(State(fake): State<FakeGoogle>, path: PairPath, req: Req) -> Response {
    let (calendar_id, rule_id) = path!(path);
    let op = Op::new("acl.get", Some(&calendar_id), None);
    fake.api_call(&req, op, |st, who| {
        acl::get_rule(st, &calendar_id, &rule_id, who).map(Reply::Json)
    })
    .await
}

pub(crate) async fn acl_delete(
    State(fake): State<FakeGoogle>,
    path: PairPath,
    req: Req,
) -> Response {
    let (calendar_id, rule_id) = path!(path);
    let op = Op::new("acl.delete", Some(&calendar_id), None);
    fake.api_call(&req, op, |st, who| {
        acl::delete_rule(st, &calendar_id, &rule_id, who).map(|()| Reply::NoContent)
    })
    .await
}

pub(crate) async fn calendar_list_list(State(fake): State<FakeGoogle>, req: Req) -> Response {
    let op = Op::new("calendarList.list", None, None);
    fake.api_call(&req, op, |st, who| {
        acl::calendar_list(st, who, &req.query).map(Reply::Json)
    })
    .await
}

pub(crate) async fn calendar_list_get(
    State(fake): State<FakeGoogle>,
    path: CalendarPath,
    req: Req,
) -> Response {
    let calendar_id = path!(path);
    let op = Op::new("calendarList.get", Some(&calendar_id), None);
    fake.api_call(&req, op, |st, who| {
        acl::calendar_list_get(st, &calendar_id, who).map(Reply::Json)
    })
    .await
}

pub(crate) async fn colors_get(State(fake): State<FakeGoogle>, req: Req) -> Response {
    let op = Op::new("colors.get", None, None);
    fake.api_call(&req, op, |_, _| Ok(Reply::Json(colors::colors())))
        .await
}
