//! The fake's Rust surface for sharing, service accounts, quotas and recurrence, beyond the
//! basics in `lib.rs` (the control API mirrors these for out-of-process users).

use serde_json::Value;

use crate::acl::{AclRule, Role, Scope, SharingNotification};
use crate::error::ApiError;
use crate::instances::{self, Occurrence};
use crate::oauth::{ServiceAccount, parse_public_key};
use crate::quota::QuotaConfig;
use crate::state::{Account, Principal, normalize_email};
use crate::{FakeGoogle, test_keys};

fn describe(e: ApiError) -> String {
    format!("{} {}: {}", e.status, e.reason, e.message)
}

impl FakeGoogle {
    /// Shares a calendar with a user, like acl.insert with `scope: {type: user}` and
    /// `sendNotifications=false` done by its owner (not logged as an API call).
    ///
    /// # Panics
    /// If the calendar does not exist or `email` is not an e-mail address.
    pub fn share_calendar(&self, calendar_id: &str, email: &str, role: Role) {
        if let Err(error) = self.try_share_calendar(calendar_id, email, role) {
            panic!("share_calendar({calendar_id}, {email}): {error}");
        }
    }

    /// Fallible [`share_calendar`](Self::share_calendar).
    pub fn try_share_calendar(
        &self,
        calendar_id: &str,
        email: &str,
        role: Role,
    ) -> Result<(), String> {
        let email = normalize_email(email);
        if !crate::acl::is_email(&email) {
            return Err(format!("not an e-mail address: {email}"));
        }
        let mut st = self.lock();
        let etag = st.next_etag();
        let calendar = st
            .calendars
            .get_mut(calendar_id)
            .ok_or("404 notFound: no such calendar")?;
        let rule = AclRule {
            scope: Scope::User(email),
            role,
            etag,
        };
        calendar.acl.insert(rule.id(), rule);
        Ok(())
    }

    /// The ACL rules of a calendar (`calendar#aclRule` resources, by rule id; empty if unknown).
    pub fn acl_rules(&self, calendar_id: &str) -> Vec<Value> {
        self.lock()
            .calendars
            .get(calendar_id)
            .map(|c| c.acl.values().map(AclRule::resource).collect())
            .unwrap_or_default()
    }

    /// The e-mail of a calendar's data owner (`None`: owned by a refresh token without
    /// e-mail, ownerless, or unknown calendar).
    pub fn calendar_owner_email(&self, calendar_id: &str) -> Option<String> {
        match self.lock().calendars.get(calendar_id)?.owner.as_ref()? {
            Account::Email(email) => Some(email.clone()),
            Account::RefreshToken(_) => None,
        }
    }

    /// Adds `member` to the Google group `group` (for ACL rules with scope type `group`).
    pub fn add_group_member(&self, group: &str, member: &str) {
        self.lock()
            .groups
            .entry(normalize_email(group))
            .or_default()
            .insert(normalize_email(member));
    }

    /// The sharing e-mails Google would have sent (acl.insert calls without
    /// `sendNotifications=false`), oldest first.
    pub fn sharing_notifications(&self) -> Vec<SharingNotification> {
        self.lock().notifications.clone()
    }

    /// Registers a service account and the public key (SPKI or PKCS#1 PEM) its JWT
    /// assertions must be signed with (replacing any earlier key; delegation off).
    pub fn register_service_account(
        &self,
        email: &str,
        public_key_pem: &str,
    ) -> Result<(), String> {
        let key = parse_public_key(public_key_pem)?;
        let email = normalize_email(email);
        if !crate::acl::is_email(&email) {
            return Err(format!("not an e-mail address: {email}"));
        }
        self.lock().service_accounts.insert(
            email,
            ServiceAccount {
                key,
                domain_wide_delegation: false,
            },
        );
        Ok(())
    }

    /// Registers the committed test service account ([`test_keys`]); returns its e-mail.
    pub fn register_test_service_account(&self) -> String {
        // The committed key is checked by a unit test, so this cannot fail.
        let _ = self.register_service_account(
            test_keys::SERVICE_ACCOUNT_EMAIL,
            test_keys::SERVICE_ACCOUNT_PUBLIC_KEY_PEM,
        );
        test_keys::SERVICE_ACCOUNT_EMAIL.to_string()
    }

    /// The test service account's JSON key file ([`test_keys::SERVICE_ACCOUNT_JSON`]) with
    /// `token_uri` pointing at this fake's token endpoint, ready to be written to a file
    /// for calsync's service-account mode.
    pub fn test_service_account_json(&self) -> String {
        let mut key: Value =
            serde_json::from_str(test_keys::SERVICE_ACCOUNT_JSON).unwrap_or_default();
        key["token_uri"] = Value::String(self.token_url());
        serde_json::to_string_pretty(&key).unwrap_or_default()
    }

    /// Allows (or forbids) assertions of this service account to carry `sub` (domain-wide
    /// delegation). Returns false if the account is not registered.
    pub fn set_domain_wide_delegation(&self, email: &str, enabled: bool) -> bool {
        match self
            .lock()
            .service_accounts
            .get_mut(&normalize_email(email))
        {
            Some(account) => {
                account.domain_wide_delegation = enabled;
                true
            }
            None => false,
        }
    }

    /// Enables domain-wide delegation for a registered service account.
    ///
    /// # Panics
    /// If the service account is not registered.
    pub fn enable_domain_wide_delegation(&self, email: &str) {
        assert!(
            self.set_domain_wide_delegation(email, true),
            "enable_domain_wide_delegation: {email} is not a registered service account"
        );
    }

    /// Deletes a service account: its assertions fail (`invalid_grant`) and the access
    /// tokens issued to it (or to it acting for a user) stop working.
    pub fn remove_service_account(&self, email: &str) {
        let email = normalize_email(email);
        let mut st = self.lock();
        st.service_accounts.remove(&email);
        st.access_tokens.retain(|_, t| match &t.principal {
            Principal::ServiceAccount { email: sa } => *sa != email,
            Principal::Delegated {
                service_account, ..
            } => *service_account != email,
            _ => true,
        });
    }

    /// Replaces the quota settings (and forgets the requests counted so far).
    pub fn set_quota(&self, config: QuotaConfig) {
        self.lock().quota.set(config);
    }

    /// The quota settings.
    pub fn quota(&self) -> QuotaConfig {
        self.lock().quota.config.clone()
    }

    /// The occurrences of an event as events.instances computes them (a non-recurring
    /// event has one): the local start in the event's time zone and the UTC instant, EXDATEs
    /// already removed. Series without an end stop 100 years after their start.
    ///
    /// # Panics
    /// If the calendar or event does not exist or the fake cannot expand the recurrence.
    pub fn occurrences(&self, calendar_id: &str, event_id: &str) -> Vec<Occurrence> {
        match self.try_occurrences(calendar_id, event_id) {
            Ok(occurrences) => occurrences,
            Err(error) => panic!("occurrences({calendar_id}, {event_id}): {error}"),
        }
    }

    /// Fallible [`occurrences`](Self::occurrences).
    pub fn try_occurrences(
        &self,
        calendar_id: &str,
        event_id: &str,
    ) -> Result<Vec<Occurrence>, String> {
        let st = self.lock();
        let calendar = st
            .calendar_with(calendar_id, &Principal::Unrestricted, Role::FreeBusyReader)
            .map_err(describe)?
            .0;
        instances::occurrences(calendar, event_id).map_err(describe)
    }
}
