//! Calendar ownership and sharing: access roles, the Acl resource (acl.insert/get/list/delete)
//! and who may do what with a calendar.
//!
//! Followed: Google Calendar API reference, "Acl" resource (roles `none`, `freeBusyReader`,
//! `reader`, `writer`, `owner`; scope types `default`, `user`, `group`, `domain`; rule ids
//! `user:<email>`, `group:<email>`, `domain:<domain>`, `default`), "Acl: insert"
//! (`sendNotifications`, default true), "Acl: list" (maxResults default 100, at most 250),
//! and the calendars/sharing concepts guide (a calendar has one data owner; `writer` may read
//! the ACL, only `owner` may change it).
//!
//! Access as the fake enforces it:
//! - no role (or role `none`): the calendar does not exist for the caller → 404 `notFound`;
//! - `freeBusyReader`: calendar metadata, events reduced to free/busy fields;
//! - `reader`: calendar and events; writes → 403 `requiredAccessLevel`;
//! - `writer`: event writes and `acl.list`/`acl.get`;
//! - `owner` (ACL rule or data owner): ACL changes;
//! - deleting the calendar: the data owner only (others with access → 403 `forbidden`).

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::paging::PageQuery;
use crate::state::{Account, CalendarState, Principal, State, normalize_email};

/// An access role, ordered from least to most access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Role {
    /// No access.
    None,
    /// Free/busy information only.
    FreeBusyReader,
    /// Read access.
    Reader,
    /// Read and write access to events, read access to the ACL.
    Writer,
    /// Writer plus ACL management.
    Owner,
}

impl Role {
    /// Parses Google's role name.
    pub fn parse(name: &str) -> Option<Role> {
        Some(match name {
            "none" => Role::None,
            "freeBusyReader" => Role::FreeBusyReader,
            "reader" => Role::Reader,
            "writer" => Role::Writer,
            "owner" => Role::Owner,
            _ => return None,
        })
    }

    /// Google's role name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::None => "none",
            Role::FreeBusyReader => "freeBusyReader",
            Role::Reader => "reader",
            Role::Writer => "writer",
            Role::Owner => "owner",
        }
    }
}

/// The scope of an ACL rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Scope {
    Default,
    User(String),
    Group(String),
    Domain(String),
}

impl Scope {
    fn rule_id(&self) -> String {
        match self {
            Scope::Default => "default".to_string(),
            Scope::User(v) => format!("user:{v}"),
            Scope::Group(v) => format!("group:{v}"),
            Scope::Domain(v) => format!("domain:{v}"),
        }
    }

    fn json(&self) -> Value {
        match self {
            Scope::Default => json!({ "type": "default" }),
            Scope::User(v) => json!({ "type": "user", "value": v }),
            Scope::Group(v) => json!({ "type": "group", "value": v }),
            Scope::Domain(v) => json!({ "type": "domain", "value": v }),
        }
    }

    fn parse(value: Option<&Value>) -> Result<Scope, ApiError> {
        let Some(Value::Object(scope)) = value else {
            return Err(ApiError::required("Missing scope."));
        };
        let kind = match scope.get("type") {
            None | Some(Value::Null) => "default",
            Some(Value::String(kind)) => kind.as_str(),
            Some(_) => return Err(ApiError::invalid("Invalid scope type.")),
        };
        let value = match scope.get("value") {
            None | Some(Value::Null) => None,
            Some(Value::String(v)) if !v.trim().is_empty() => Some(normalize_email(v)),
            Some(_) => return Err(ApiError::invalid("Invalid scope value.")),
        };
        let email = |v: Option<String>| match v {
            None => Err(ApiError::required("Missing scope value.")),
            Some(v) if is_email(&v) => Ok(v),
            Some(_) => Err(ApiError::invalid("Invalid scope value.")),
        };
        match kind {
            "default" if value.is_none() => Ok(Scope::Default),
            "default" => Err(ApiError::invalid(
                "The scope value must not be set for scope type default.",
            )),
            "user" => email(value).map(Scope::User),
            "group" => email(value).map(Scope::Group),
            "domain" => match value {
                None => Err(ApiError::required("Missing scope value.")),
                Some(v) if is_domain(&v) => Ok(Scope::Domain(v)),
                Some(_) => Err(ApiError::invalid("Invalid scope value.")),
            },
            _ => Err(ApiError::invalid("Invalid scope type.")),
        }
    }
}

fn is_domain(value: &str) -> bool {
    value.contains('.')
        && !value.starts_with('.')
        && !value.ends_with('.')
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// A plausible e-mail address: `local@domain.tld`.
pub(crate) fn is_email(value: &str) -> bool {
    match value.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !local.contains(char::is_whitespace)
                && !domain.contains('@')
                && is_domain(domain)
        }
        None => false,
    }
}

/// One ACL rule of a calendar.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AclRule {
    pub scope: Scope,
    pub role: Role,
    pub etag: String,
}

impl AclRule {
    /// The rule Google lists for a calendar's creator.
    pub fn user_owner(email: &str, etag: String) -> Self {
        Self {
            scope: Scope::User(normalize_email(email)),
            role: Role::Owner,
            etag,
        }
    }

    pub fn id(&self) -> String {
        self.scope.rule_id()
    }

    /// The `calendar#aclRule` resource.
    pub fn resource(&self) -> Value {
        json!({
            "kind": "calendar#aclRule",
            "etag": self.etag,
            "id": self.id(),
            "scope": self.scope.json(),
            "role": self.role.as_str(),
        })
    }

    fn applies_to(
        &self,
        email: &str,
        groups: &std::collections::HashMap<String, BTreeSet<String>>,
    ) -> bool {
        match &self.scope {
            Scope::Default => true,
            Scope::User(user) => user == email,
            Scope::Domain(domain) => email
                .rsplit_once('@')
                .is_some_and(|(_, d)| d == domain.as_str()),
            Scope::Group(group) => groups.get(group).is_some_and(|m| m.contains(email)),
        }
    }
}

/// A sharing notification Google would have e-mailed (acl.insert without
/// `sendNotifications=false`, for a `user` or `group` scope).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharingNotification {
    /// The shared calendar.
    pub calendar_id: String,
    /// The ACL rule id (`user:alice@example.com`).
    pub rule_id: String,
    /// Who would have received the e-mail.
    pub recipient: String,
    /// The role granted (`reader`, `writer`, ...).
    pub role: String,
    /// When the rule was inserted.
    pub at: DateTime<Utc>,
}

/// What a principal may do with one calendar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Access {
    pub role: Role,
    /// The data owner (may delete the calendar; its own owner rule cannot be changed).
    pub data_owner: bool,
}

impl CalendarState {
    /// The caller's effective access: data owner, or the best matching ACL rule.
    pub fn access(
        &self,
        who: &Principal,
        groups: &std::collections::HashMap<String, BTreeSet<String>>,
    ) -> Access {
        let full = Access {
            role: Role::Owner,
            data_owner: true,
        };
        match (&self.owner, who) {
            (None, _) | (_, Principal::Unrestricted) => return full,
            (Some(owner), who) if who.is(owner) => return full,
            _ => {}
        }
        let role = who.email().map_or(Role::None, |email| {
            let email = normalize_email(email);
            self.acl
                .values()
                .filter(|rule| rule.applies_to(&email, groups))
                .map(|rule| rule.role)
                .max()
                .unwrap_or(Role::None)
        });
        Access {
            role,
            data_owner: false,
        }
    }
}

fn required_access(role: Role) -> ApiError {
    ApiError::new(
        403,
        "requiredAccessLevel",
        &format!(
            "You need to have {} access to this calendar.",
            role.as_str()
        ),
    )
}

impl State {
    /// The calendar if `who` has at least `need` on it: 404 `notFound` without any access
    /// (Google does not reveal calendars you cannot see), 403 `requiredAccessLevel` with
    /// too little.
    pub fn calendar_with(
        &self,
        id: &str,
        who: &Principal,
        need: Role,
    ) -> Result<(&CalendarState, Access), ApiError> {
        let calendar = self.calendars.get(id).ok_or_else(ApiError::not_found)?;
        let access = calendar.access(who, &self.groups);
        if access.role == Role::None {
            return Err(ApiError::not_found());
        }
        if access.role < need {
            return Err(required_access(need));
        }
        Ok((calendar, access))
    }

    /// Any access at all (calendars.get, events reads).
    pub fn calendar(&self, id: &str, who: &Principal) -> Result<&CalendarState, ApiError> {
        self.calendar_with(id, who, Role::FreeBusyReader)
            .map(|(c, _)| c)
    }

    /// Mutable calendar if `who` has at least `need`.
    pub fn calendar_mut(
        &mut self,
        id: &str,
        who: &Principal,
        need: Role,
    ) -> Result<&mut CalendarState, ApiError> {
        self.calendar_with(id, who, need)?;
        self.calendars.get_mut(id).ok_or_else(ApiError::not_found)
    }
}

/// calendars.delete: only the data owner (others who can see it get 403).
pub(crate) fn delete_calendar(
    st: &mut State,
    calendar_id: &str,
    who: &Principal,
) -> Result<(), ApiError> {
    let (_, access) = st.calendar_with(calendar_id, who, Role::FreeBusyReader)?;
    if !access.data_owner {
        return Err(ApiError::new(
            403,
            "forbidden",
            "Only the owner of a calendar may delete it.",
        ));
    }
    st.calendars.remove(calendar_id);
    Ok(())
}

fn is_data_owner_rule(calendar: &CalendarState, scope: &Scope) -> bool {
    matches!((&calendar.owner, scope), (Some(Account::Email(owner)), Scope::User(user)) if owner == user)
}

fn cannot_change_own_access() -> ApiError {
    ApiError::new(
        403,
        "cannotChangeOwnAccess",
        "Cannot change your own access level.",
    )
}

/// acl.insert (an existing rule for the same scope is replaced, keeping its id).
pub(crate) fn insert_rule(
    st: &mut State,
    calendar_id: &str,
    who: &Principal,
    body: Value,
    send_notifications: bool,
) -> Result<Value, ApiError> {
    st.calendar_with(calendar_id, who, Role::Owner)?;
    let Value::Object(body) = body else {
        return Err(ApiError::parse_error());
    };
    let role = parse_role(&body)?;
    let scope = Scope::parse(body.get("scope"))?;
    let etag = st.next_etag();
    let calendar = st.calendar_mut(calendar_id, who, Role::Owner)?;
    if is_data_owner_rule(calendar, &scope) && role != Role::Owner {
        return Err(cannot_change_own_access());
    }
    let rule = AclRule { scope, role, etag };
    let id = rule.id();
    let resource = rule.resource();
    let recipient = match &rule.scope {
        Scope::User(v) | Scope::Group(v) if send_notifications && role != Role::None => {
            Some(v.clone())
        }
        _ => None,
    };
    calendar.acl.insert(id.clone(), rule);
    if let Some(recipient) = recipient {
        st.notifications.push(SharingNotification {
            calendar_id: calendar_id.to_string(),
            rule_id: id,
            recipient,
            role: role.as_str().to_string(),
            at: Utc::now(),
        });
    }
    Ok(resource)
}

fn parse_role(body: &Map<String, Value>) -> Result<Role, ApiError> {
    match body.get("role") {
        None | Some(Value::Null) => Err(ApiError::required("Missing role.")),
        Some(Value::String(name)) => {
            Role::parse(name).ok_or_else(|| ApiError::invalid("Invalid role value."))
        }
        Some(_) => Err(ApiError::invalid("Invalid role value.")),
    }
}

/// acl.get (writers may read the ACL).
pub(crate) fn get_rule(
    st: &State,
    calendar_id: &str,
    rule_id: &str,
    who: &Principal,
) -> Result<Value, ApiError> {
    let (calendar, _) = st.calendar_with(calendar_id, who, Role::Writer)?;
    calendar
        .acl
        .get(rule_id)
        .map(AclRule::resource)
        .ok_or_else(ApiError::not_found)
}

/// acl.delete
pub(crate) fn delete_rule(
    st: &mut State,
    calendar_id: &str,
    rule_id: &str,
    who: &Principal,
) -> Result<(), ApiError> {
    let calendar = st.calendar_mut(calendar_id, who, Role::Owner)?;
    let rule = calendar.acl.get(rule_id).ok_or_else(ApiError::not_found)?;
    if is_data_owner_rule(calendar, &rule.scope) {
        return Err(cannot_change_own_access());
    }
    calendar.acl.remove(rule_id);
    Ok(())
}

/// Default and maximum `maxResults` of acl.list.
const ACL_PAGE: (usize, usize) = (100, 250);

/// acl.list, ordered by rule id.
pub(crate) fn list_rules(
    st: &State,
    calendar_id: &str,
    who: &Principal,
    query: &[(String, String)],
) -> Result<Value, ApiError> {
    let (calendar, _) = st.calendar_with(calendar_id, who, Role::Writer)?;
    let page = PageQuery::parse(query, ACL_PAGE.0, ACL_PAGE.1)?;
    let rules = calendar.acl.values().map(|r| (r.id(), r.resource()));
    let (items, next) = page.take(rules);
    let mut out = json!({
        "kind": "calendar#acl",
        "etag": calendar.resource.get("etag").cloned().unwrap_or(Value::Null),
        "items": items,
    });
    if let Some(next) = next {
        out["nextPageToken"] = json!(next);
    }
    Ok(out)
}

/// The `calendar#calendarListEntry` of a calendar for a caller with `access`.
fn list_entry(id: &str, calendar: &CalendarState, access: Access) -> Value {
    let resource = &calendar.resource;
    let mut entry = json!({
        "kind": "calendar#calendarListEntry",
        "etag": resource.get("etag").cloned().unwrap_or(Value::Null),
        "id": id,
        "summary": resource.get("summary").cloned().unwrap_or(Value::Null),
        "timeZone": resource.get("timeZone").cloned().unwrap_or(Value::Null),
        "colorId": "14",
        "backgroundColor": "#9fe1e7",
        "foregroundColor": "#000000",
        "selected": true,
        "accessRole": access.role.as_str(),
        "defaultReminders": [],
        "conferenceProperties": resource.get("conferenceProperties").cloned().unwrap_or(Value::Null),
    });
    for key in ["description", "location"] {
        if let Some(value) = resource.get(key) {
            entry[key] = value.clone();
        }
    }
    entry
}

/// Default and maximum `maxResults` of calendarList.list.
const CALENDAR_LIST_PAGE: (usize, usize) = (100, 250);

/// calendarList.list: every calendar the caller owns or can see through an ACL rule
/// (ordered by id), filtered by `minAccessRole`, paged.
pub(crate) fn calendar_list(
    st: &State,
    who: &Principal,
    query: &[(String, String)],
) -> Result<Value, ApiError> {
    let page = PageQuery::parse(query, CALENDAR_LIST_PAGE.0, CALENDAR_LIST_PAGE.1)?;
    let mut min_role = Role::FreeBusyReader;
    for (key, value) in query {
        match key.as_str() {
            "minAccessRole" => {
                min_role = Role::parse(value)
                    .filter(|r| *r != Role::None)
                    .ok_or_else(|| {
                        ApiError::invalid(&format!("Invalid value '{value}' for minAccessRole."))
                    })?;
            }
            "syncToken" => return Err(ApiError::unsupported("calendarList.list syncToken")),
            _ => {}
        }
    }
    let mut visible: Vec<(&String, &CalendarState, Access)> = st
        .calendars
        .iter()
        .map(|(id, c)| (id, c, c.access(who, &st.groups)))
        .filter(|(_, _, a)| a.role >= min_role)
        .collect();
    visible.sort_by(|a, b| a.0.cmp(b.0));
    let entries = visible
        .into_iter()
        .map(|(id, c, access)| (id.clone(), list_entry(id, c, access)));
    let (items, next) = page.take(entries);
    let mut out = json!({
        "kind": "calendar#calendarList",
        "etag": format!("\"{}\"", st.etag_counter),
        "items": items,
    });
    if let Some(next) = next {
        out["nextPageToken"] = json!(next);
    }
    Ok(out)
}

/// calendarList.get
pub(crate) fn calendar_list_get(
    st: &State,
    calendar_id: &str,
    who: &Principal,
) -> Result<Value, ApiError> {
    let (calendar, access) = st.calendar_with(calendar_id, who, Role::FreeBusyReader)?;
    Ok(list_entry(calendar_id, calendar, access))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_and_domains() {
        assert!(is_email("alice@example.edu"));
        assert!(is_email("sa@p.iam.gserviceaccount.com"));
        assert!(!is_email("alice"));
        assert!(!is_email("@example.edu"));
        assert!(!is_email("a@b@c.edu"));
        assert!(!is_email("alice@localhost"));
        assert!(is_domain("example.edu"));
        assert!(!is_domain("exa mple.edu"));
    }

    #[test]
    fn scopes_parse_like_google() {
        let ok = |v: Value| Scope::parse(Some(&v));
        assert_eq!(
            ok(json!({"type": "user", "value": "Alice@Example.EDU"})),
            Ok(Scope::User("alice@example.edu".into()))
        );
        assert_eq!(ok(json!({"type": "default"})), Ok(Scope::Default));
        assert_eq!(
            ok(json!({"type": "domain", "value": "example.edu"})),
            Ok(Scope::Domain("example.edu".into()))
        );
        assert_eq!(
            ok(json!({"type": "user"})).map_err(|e| e.reason),
            Err("required".into())
        );
        assert_eq!(
            ok(json!({"type": "robot", "value": "x@y.z"})).map_err(|e| e.reason),
            Err("invalid".into())
        );
        assert_eq!(
            ok(json!({"type": "user", "value": "not-an-email"})).map_err(|e| e.reason),
            Err("invalid".into())
        );
        assert!(Role::Owner > Role::Writer && Role::Writer > Role::Reader);
        assert!(Role::Reader > Role::FreeBusyReader && Role::FreeBusyReader > Role::None);
    }
}
