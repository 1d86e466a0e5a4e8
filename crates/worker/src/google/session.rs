//! A Google Calendar session for one user: every call throttled, timed out, counted and
//! classified; a rejected access token is replaced once per session.

use std::{sync::Arc, time::Instant};

use async_trait::async_trait;

use super::{
    GoogleClient, auth::TokenSource, client::Hub, encode_path_segment, error::GoogleError,
    error::classify, error::record, error::retryable, mapping, method,
};
use crate::backend::{
    Account, BackendError, Calendar, CalendarEvent, CalendarSession, Deleted, EventQuery, Inserted,
    NewCalendar, Share, Updated,
};

/// One user's Google session.
pub struct GoogleSession {
    client: GoogleClient,
    tokens: Arc<dyn TokenSource>,
    account: Account,
    hub: Hub,
    refreshed: bool,
    calls: u32,
    /// Google's `quotaUser` for every request (service-account modes: all calls are made
    /// by one principal, so the per-user quota must be attributed per student).
    quota_user: Option<String>,
}

/// Add `quotaUser` to a google-calendar3 call builder when the session has one.
macro_rules! quota {
    ($req:expr, $q:expr) => {{
        let req = $req;
        match $q {
            Some(q) => req.param("quotaUser", q.as_str()),
            None => req,
        }
    }};
}

impl GoogleSession {
    pub(crate) async fn open(
        client: GoogleClient,
        tokens: Arc<dyn TokenSource>,
        account: Account,
    ) -> Result<GoogleSession, GoogleError> {
        let token = tokens.access_token(&account, false).await?;
        let quota_user = tokens.quota_user(&account);
        Ok(GoogleSession {
            hub: client.hub(&token),
            client,
            tokens,
            account,
            refreshed: false,
            calls: 0,
            quota_user,
        })
    }
}

/// Run one google-calendar3 call: throttle, count, time out, classify; on a rejected
/// token refresh it once for the session and try again.
macro_rules! call {
    ($self:ident, $method:expr, $calendar_id:expr, |$hub:ident| $body:expr) => {{
        loop {
            $self.client.throttle($self.account.user_id).await?;
            $self.calls += 1;
            let started = Instant::now();
            let timeout = $self.client.request_timeout();
            let res = {
                let $hub = &$self.hub;
                tokio::time::timeout(timeout, $body).await
            };
            match res {
                Err(_) => {
                    record($method, "network", started);
                    break Err(retryable(
                        $method,
                        format!("timed out after {timeout:?}"),
                        false,
                    ));
                }
                Ok(Ok(v)) => {
                    record($method, "ok", started);
                    break Ok(v);
                }
                Ok(Err(e)) => {
                    let (err, outcome) = classify($method, $calendar_id, e);
                    record($method, outcome, started);
                    if matches!(err, GoogleError::Unauthorized { .. }) && !$self.refreshed {
                        $self.refreshed = true;
                        let token = $self.tokens.access_token(&$self.account, true).await?;
                        $self.hub = $self.client.hub(&token);
                        continue;
                    }
                    break Err(err);
                }
            }
        }
    }};
}

impl GoogleSession {
    async fn get_calendar(&mut self, calendar_id: &str) -> Result<Calendar, GoogleError> {
        let cal = encode_path_segment(calendar_id);
        let q = self.quota_user.clone();
        let (_, c) = call!(self, method::CALENDARS_GET, calendar_id, |hub| quota!(
            hub.calendars().get(&cal),
            &q
        )
        .doit())?;
        Ok(mapping::calendar_from_google(c, calendar_id))
    }

    async fn create_calendar(&mut self, new: &NewCalendar) -> Result<Calendar, GoogleError> {
        let body = mapping::calendar_to_google(new);
        let q = self.quota_user.clone();
        let (_, c) = call!(self, method::CALENDARS_INSERT, "", |hub| quota!(
            hub.calendars().insert(body.clone()),
            &q
        )
        .doit())?;
        match c.id {
            Some(_) => Ok(mapping::calendar_from_google(c, "")),
            None => Err(retryable(
                method::CALENDARS_INSERT,
                "the created calendar has no id".into(),
                false,
            )),
        }
    }

    async fn delete_calendar(&mut self, calendar_id: &str) -> Result<Deleted, GoogleError> {
        let cal = encode_path_segment(calendar_id);
        let q = self.quota_user.clone();
        match call!(self, method::CALENDARS_DELETE, calendar_id, |hub| quota!(
            hub.calendars().delete(&cal),
            &q
        )
        .doit())
        {
            Ok(_) => Ok(Deleted::Now),
            Err(e) if e.is_http(404) || e.is_http(410) => Ok(Deleted::AlreadyGone),
            Err(e) => Err(e),
        }
    }

    async fn share_calendar(
        &mut self,
        calendar_id: &str,
        share: &Share,
    ) -> Result<(), GoogleError> {
        let cal = encode_path_segment(calendar_id);
        let rule = mapping::share_to_google(share);
        let q = self.quota_user.clone();
        call!(self, method::ACL_INSERT, calendar_id, |hub| quota!(
            hub.acl()
                .insert(rule.clone(), &cal)
                .send_notifications(share.notify),
            &q
        )
        .doit())?;
        Ok(())
    }

    async fn list_calendars(&mut self) -> Result<Vec<Calendar>, GoogleError> {
        let q = self.quota_user.clone();
        let mut out = Vec::new();
        let mut page: Option<String> = None;
        loop {
            let token = page.clone();
            let (_, list) = call!(self, method::CALENDAR_LIST_LIST, "", |hub| {
                let mut req = quota!(hub.calendar_list().list().max_results(250), &q);
                if let Some(t) = &token {
                    req = req.page_token(t);
                }
                req.doit()
            })?;
            out.extend(
                list.items
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(mapping::calendar_from_list_entry),
            );
            match list.next_page_token {
                Some(t) if !t.is_empty() => page = Some(t),
                _ => return Ok(out),
            }
        }
    }

    async fn list_events(
        &mut self,
        calendar_id: &str,
        query: &EventQuery,
    ) -> Result<Vec<CalendarEvent>, GoogleError> {
        let cal = encode_path_segment(calendar_id);
        let filter = format!("{}={}", query.tag_key, query.tag_value);
        let q = self.quota_user.clone();
        let mut out = Vec::new();
        let mut page: Option<String> = None;
        loop {
            let token = page.clone();
            let (_, events) = call!(self, method::EVENTS_LIST, calendar_id, |hub| {
                let mut req = quota!(
                    hub.events()
                        .list(&cal)
                        .add_private_extended_property(&filter)
                        .show_deleted(query.include_deleted)
                        .max_results(2500),
                    &q
                );
                if let Some(t) = &token {
                    req = req.page_token(t);
                }
                req.doit()
            })?;
            out.extend(
                events
                    .items
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(mapping::event_from_google),
            );
            match events.next_page_token {
                Some(t) if !t.is_empty() => page = Some(t),
                _ => return Ok(out),
            }
        }
    }

    async fn insert_event(
        &mut self,
        calendar_id: &str,
        event: &CalendarEvent,
    ) -> Result<Inserted, GoogleError> {
        let cal = encode_path_segment(calendar_id);
        let body = mapping::event_to_google(event);
        let q = self.quota_user.clone();
        match call!(self, method::EVENTS_INSERT, calendar_id, |hub| quota!(
            hub.events().insert(body.clone(), &cal),
            &q
        )
        .doit())
        {
            Ok(_) => Ok(Inserted::Created),
            Err(e) if e.is_http(409) => Ok(Inserted::Duplicate),
            Err(e) => Err(e),
        }
    }

    async fn update_event(
        &mut self,
        calendar_id: &str,
        event: &CalendarEvent,
    ) -> Result<Updated, GoogleError> {
        let cal = encode_path_segment(calendar_id);
        let eid = encode_path_segment(&event.id);
        let body = mapping::event_to_google(event);
        let q = self.quota_user.clone();
        match call!(self, method::EVENTS_UPDATE, calendar_id, |hub| quota!(
            hub.events().update(body.clone(), &cal, &eid),
            &q
        )
        .doit())
        {
            Ok(_) => Ok(Updated::Updated),
            Err(e) if e.is_http(404) => Ok(Updated::Missing),
            Err(e) => Err(e),
        }
    }

    async fn delete_event(
        &mut self,
        calendar_id: &str,
        event_id: &str,
    ) -> Result<Deleted, GoogleError> {
        let cal = encode_path_segment(calendar_id);
        let eid = encode_path_segment(event_id);
        let q = self.quota_user.clone();
        match call!(self, method::EVENTS_DELETE, calendar_id, |hub| quota!(
            hub.events().delete(&cal, &eid),
            &q
        )
        .doit())
        {
            Ok(_) => Ok(Deleted::Now),
            Err(e) if e.is_http(410) || e.is_http(404) => Ok(Deleted::AlreadyGone),
            Err(e) => Err(e),
        }
    }
}

#[async_trait]
impl CalendarSession for GoogleSession {
    async fn get_calendar(&mut self, calendar_id: &str) -> Result<Calendar, BackendError> {
        Ok(GoogleSession::get_calendar(self, calendar_id).await?)
    }

    async fn create_calendar(&mut self, calendar: &NewCalendar) -> Result<Calendar, BackendError> {
        Ok(GoogleSession::create_calendar(self, calendar).await?)
    }

    async fn delete_calendar(&mut self, calendar_id: &str) -> Result<Deleted, BackendError> {
        Ok(GoogleSession::delete_calendar(self, calendar_id).await?)
    }

    async fn list_calendars(&mut self) -> Result<Vec<Calendar>, BackendError> {
        Ok(GoogleSession::list_calendars(self).await?)
    }

    async fn share_calendar(
        &mut self,
        calendar_id: &str,
        share: &Share,
    ) -> Result<(), BackendError> {
        Ok(GoogleSession::share_calendar(self, calendar_id, share).await?)
    }

    async fn list_events(
        &mut self,
        calendar_id: &str,
        query: &EventQuery,
    ) -> Result<Vec<CalendarEvent>, BackendError> {
        Ok(GoogleSession::list_events(self, calendar_id, query).await?)
    }

    async fn insert_event(
        &mut self,
        calendar_id: &str,
        event: &CalendarEvent,
    ) -> Result<Inserted, BackendError> {
        Ok(GoogleSession::insert_event(self, calendar_id, event).await?)
    }

    async fn update_event(
        &mut self,
        calendar_id: &str,
        event: &CalendarEvent,
    ) -> Result<Updated, BackendError> {
        Ok(GoogleSession::update_event(self, calendar_id, event).await?)
    }

    async fn delete_event(
        &mut self,
        calendar_id: &str,
        event_id: &str,
    ) -> Result<Deleted, BackendError> {
        Ok(GoogleSession::delete_event(self, calendar_id, event_id).await?)
    }

    fn calls(&self) -> u32 {
        self.calls
    }
}
