//! Service accounts (JWT-bearer grant with real RS256 verification, domain-wide delegation),
//! calendars they own, sharing (Acl) and calendarList — through the real client.

mod common;

use calsync_fake_google::{FakeGoogle, Role, test_keys};
use common::{
    google_error, hub, jwt_grant, refresh_grant, sa_claims, sign_assertion, timed_event,
    token_request,
};
use google_calendar3::api::{AclRule, AclRuleScope, Calendar};
use serde_json::json;

const ALICE: &str = "alice@example.edu";
const BOB: &str = "bob@example.edu";
const CAROL: &str = "carol@example.edu";

fn reader_rule(email: &str) -> AclRule {
    AclRule {
        role: Some("reader".to_string()),
        scope: Some(AclRuleScope {
            type_: Some("user".to_string()),
            value: Some(email.to_string()),
        }),
        ..Default::default()
    }
}

/// An access token for the test service account (registered first).
async fn service_account_token(fake: &FakeGoogle) -> String {
    let email = fake.register_test_service_account();
    let assertion = sign_assertion(
        &sa_claims(fake, &email),
        &test_keys::service_account_private_key_pem(),
        Some(test_keys::SERVICE_ACCOUNT_KEY_ID),
    );
    let raw = jwt_grant(fake, &assertion).await;
    assert_eq!(raw.status, 200, "{}", raw.body);
    let body = raw.json();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body["scope"], "https://www.googleapis.com/auth/calendar");
    assert!(
        body.get("refresh_token").is_none(),
        "no refresh token for JWT grants"
    );
    body["access_token"]
        .as_str()
        .expect("access_token")
        .to_string()
}

#[tokio::test]
async fn service_account_owns_shares_and_deletes_a_calendar() {
    let fake = FakeGoogle::start().await.expect("start");
    let sa = hub(&fake, &service_account_token(&fake).await);
    let calendar = Calendar {
        summary: Some("Courses — Alice".to_string()),
        time_zone: Some("America/New_York".to_string()),
        description: Some("calsync:user:42".to_string()),
        ..Default::default()
    };
    let (_, created) = sa
        .calendars()
        .insert(calendar)
        .doit()
        .await
        .expect("insert");
    let cal = created.id.expect("id");
    assert_eq!(
        created.data_owner.as_deref(),
        Some(test_keys::SERVICE_ACCOUNT_EMAIL)
    );
    assert_eq!(
        fake.calendar_owner_email(&cal).as_deref(),
        Some(test_keys::SERVICE_ACCOUNT_EMAIL)
    );
    let (_, acl) = sa.acl().list(&cal).doit().await.expect("acl.list");
    let rules = acl.items.unwrap_or_default();
    assert_eq!(rules.len(), 1);
    assert_eq!(
        rules[0].id,
        Some(format!("user:{}", test_keys::SERVICE_ACCOUNT_EMAIL))
    );
    assert_eq!(rules[0].role.as_deref(), Some("owner"));

    // Share with Alice quietly, with Bob the default way (Google e-mails him).
    let (_, rule) = sa
        .acl()
        .insert(reader_rule(ALICE), &cal)
        .send_notifications(false)
        .doit()
        .await
        .expect("acl.insert");
    assert_eq!(rule.id.as_deref(), Some("user:alice@example.edu"));
    assert_eq!(rule.kind.as_deref(), Some("calendar#aclRule"));
    assert!(
        fake.sharing_notifications().is_empty(),
        "sendNotifications=false sends nothing"
    );
    sa.acl()
        .insert(reader_rule(BOB), &cal)
        .doit()
        .await
        .expect("acl.insert bob");
    let sent = fake.sharing_notifications();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        (sent[0].recipient.as_str(), sent[0].role.as_str()),
        (BOB, "reader")
    );
    sa.events()
        .insert(timed_event(Some("class0001"), 9), &cal)
        .doit()
        .await
        .expect("event");

    // Alice (per-user OAuth token registered with her e-mail) sees it read-only.
    fake.add_refresh_token_for("rt-alice", ALICE);
    let alice = hub(&fake, &refresh_grant(&fake, "rt-alice").await);
    let (_, list) = alice
        .calendar_list()
        .list()
        .doit()
        .await
        .expect("calendarList");
    let entries = list.items.unwrap_or_default();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].id.as_deref(), Some(cal.as_str()));
    assert_eq!(entries[0].access_role.as_deref(), Some("reader"));
    let (_, entry) = alice
        .calendar_list()
        .get(&cal)
        .doit()
        .await
        .expect("calendarList.get");
    assert_eq!(entry.summary.as_deref(), Some("Courses — Alice"));
    let (_, events) = alice
        .events()
        .list(&cal)
        .doit()
        .await
        .expect("reader lists");
    assert_eq!(events.access_role.as_deref(), Some("reader"));
    assert_eq!(events.items.map(|i| i.len()), Some(1));
    let err = alice
        .events()
        .insert(timed_event(Some("hack00001"), 10), &cal)
        .doit()
        .await
        .expect_err("reader cannot write");
    assert_eq!(
        google_error(err),
        (
            403,
            "requiredAccessLevel".into(),
            "You need to have writer access to this calendar.".into()
        )
    );
    let err = alice
        .acl()
        .list(&cal)
        .doit()
        .await
        .expect_err("reader cannot read the ACL");
    assert_eq!(google_error(err).0, 403);
    let err = alice
        .calendars()
        .delete(&cal)
        .doit()
        .await
        .expect_err("only the owner deletes");
    assert_eq!(
        google_error(err),
        (
            403,
            "forbidden".into(),
            "Only the owner of a calendar may delete it.".into()
        )
    );

    // Carol was never shared: the calendar does not exist for her.
    fake.add_refresh_token_for("rt-carol", CAROL);
    let carol = hub(&fake, &refresh_grant(&fake, "rt-carol").await);
    let err = carol
        .calendars()
        .get(&cal)
        .doit()
        .await
        .expect_err("not shared");
    assert_eq!(google_error(err).0, 404);
    let err = carol
        .events()
        .list(&cal)
        .doit()
        .await
        .expect_err("not shared");
    assert_eq!(google_error(err).0, 404);
    let (_, list) = carol
        .calendar_list()
        .list()
        .doit()
        .await
        .expect("calendarList");
    assert!(list.items.unwrap_or_default().is_empty());

    // Unsharing takes Alice's access away; the owner's own rule cannot be removed.
    sa.acl()
        .delete(&cal, "user:alice@example.edu")
        .doit()
        .await
        .expect("acl.delete");
    let err = alice
        .events()
        .list(&cal)
        .doit()
        .await
        .expect_err("unshared");
    assert_eq!(google_error(err).0, 404);
    let owner_rule = format!("user:{}", test_keys::SERVICE_ACCOUNT_EMAIL);
    let err = sa
        .acl()
        .delete(&cal, &owner_rule)
        .doit()
        .await
        .expect_err("own rule");
    assert_eq!(google_error(err).1, "cannotChangeOwnAccess");
    let err = sa
        .acl()
        .delete(&cal, "user:nobody@example.edu")
        .doit()
        .await
        .expect_err("unknown rule");
    assert_eq!(google_error(err).0, 404);

    // The owner deletes it.
    sa.calendars()
        .delete(&cal)
        .doit()
        .await
        .expect("owner deletes");
    let err = sa.calendars().get(&cal).doit().await.expect_err("gone");
    assert_eq!(google_error(err).0, 404);

    // The call log names who called (never a token value).
    let calls = fake.calls();
    let principal_of = |method: &str| {
        calls
            .iter()
            .find(|c| c.method == method)
            .and_then(|c| c.principal.clone())
    };
    assert_eq!(
        principal_of("calendars.insert").as_deref(),
        Some(test_keys::SERVICE_ACCOUNT_EMAIL)
    );
    assert_eq!(principal_of("calendarList.list").as_deref(), Some(ALICE));
    assert!(
        calls
            .iter()
            .all(|c| c.principal.as_deref().is_none_or(|p| !p.contains("ya29")))
    );
}

#[tokio::test]
async fn jwt_grant_errors_like_google() {
    let fake = FakeGoogle::start().await.expect("start");
    let email = test_keys::SERVICE_ACCOUNT_EMAIL;
    let key = test_keys::service_account_private_key_pem();
    let sign = |claims: &serde_json::Value| sign_assertion(claims, &key, None);
    let expect = |raw: common::Raw, status: u16, error: &str, description: &str| {
        assert_eq!(raw.status, status, "{}", raw.body);
        assert_eq!(raw.json()["error"], error, "{}", raw.body);
        assert_eq!(raw.json()["error_description"], description, "{}", raw.body);
    };

    // Unknown iss.
    let raw = jwt_grant(&fake, &sign(&sa_claims(&fake, email))).await;
    expect(
        raw,
        400,
        "invalid_grant",
        "Invalid grant: account not found",
    );
    fake.register_test_service_account();

    // Signed with another key.
    let wrong = sign_assertion(
        &sa_claims(&fake, email),
        test_keys::OTHER_PRIVATE_KEY_PEM,
        None,
    );
    expect(
        jwt_grant(&fake, &wrong).await,
        400,
        "invalid_grant",
        "Invalid JWT Signature.",
    );
    // A valid signature over different claims (payload swapped).
    let good = sign(&sa_claims(&fake, email));
    let mut forged_claims = sa_claims(&fake, email);
    forged_claims["sub"] = json!("dean@example.edu");
    let forged_payload = sign(&forged_claims)
        .split('.')
        .nth(1)
        .expect("payload")
        .to_string();
    let parts: Vec<&str> = good.split('.').collect();
    let tampered = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
    expect(
        jwt_grant(&fake, &tampered).await,
        400,
        "invalid_grant",
        "Invalid JWT Signature.",
    );
    // HS256 with the public key as secret (algorithm confusion) is refused.
    let hs = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &sa_claims(&fake, email),
        &jsonwebtoken::EncodingKey::from_secret(
            test_keys::SERVICE_ACCOUNT_PUBLIC_KEY_PEM.as_bytes(),
        ),
    )
    .expect("hs256");
    expect(
        jwt_grant(&fake, &hs).await,
        400,
        "invalid_grant",
        "Invalid JWT Signature.",
    );

    // Audience must be this token endpoint.
    let mut claims = sa_claims(&fake, email);
    claims["aud"] = json!("https://oauth2.googleapis.com/token");
    expect(
        jwt_grant(&fake, &sign(&claims)).await,
        400,
        "invalid_grant",
        &format!(
            "Invalid JWT: Failed audience check. The right audience is {}",
            fake.token_url()
        ),
    );

    // Expired, too long-lived, or from the future.
    let short_lived = "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable \
timeframe. Check your iat and exp values in the JWT claim.";
    let now = chrono::Utc::now().timestamp();
    for (iat, exp) in [
        (now - 7200, now - 3600),
        (now, now + 3601),
        (now + 600, now + 1200),
    ] {
        let mut claims = sa_claims(&fake, email);
        claims["iat"] = json!(iat);
        claims["exp"] = json!(exp);
        expect(
            jwt_grant(&fake, &sign(&claims)).await,
            400,
            "invalid_grant",
            short_lived,
        );
    }
    let mut claims = sa_claims(&fake, email);
    claims.as_object_mut().map(|c| c.remove("exp"));
    expect(
        jwt_grant(&fake, &sign(&claims)).await,
        400,
        "invalid_grant",
        short_lived,
    );

    // No scope.
    let mut claims = sa_claims(&fake, email);
    claims.as_object_mut().map(|c| c.remove("scope"));
    expect(
        jwt_grant(&fake, &sign(&claims)).await,
        400,
        "invalid_scope",
        "Invalid OAuth scope or ID token audience provided.",
    );

    // sub without domain-wide delegation.
    let mut claims = sa_claims(&fake, email);
    claims["sub"] = json!(ALICE);
    expect(
        jwt_grant(&fake, &sign(&claims)).await,
        401,
        "unauthorized_client",
        "Client is unauthorized to retrieve access tokens using this method, or client not authorized for any of the scopes requested.",
    );

    // Malformed requests.
    let raw = jwt_grant(&fake, "not-a-jwt").await;
    assert_eq!(
        (raw.status, raw.json()["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let raw = token_request(
        &fake,
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer",
    )
    .await;
    assert_eq!(
        (raw.status, raw.json()["error"].as_str()),
        (400, Some("invalid_request"))
    );
    assert!(
        fake.register_service_account("x@y.iam.gserviceaccount.com", "not a key")
            .is_err()
    );

    // Still works with the right key, and every attempt was logged as a token call.
    expect_ok(jwt_grant(&fake, &good).await);
    let token_calls: Vec<u16> = fake
        .calls()
        .iter()
        .filter(|c| c.method == "token")
        .map(|c| c.status)
        .collect();
    assert_eq!(token_calls.len(), 14);
    assert_eq!(token_calls.last(), Some(&200));
}

fn expect_ok(raw: common::Raw) {
    assert_eq!(raw.status, 200, "{}", raw.body);
}

#[tokio::test]
async fn domain_wide_delegation_acts_as_the_user() {
    let fake = FakeGoogle::start().await.expect("start");
    let email = fake.register_test_service_account();
    fake.enable_domain_wide_delegation(&email);
    let mut claims = sa_claims(&fake, &email);
    claims["sub"] = json!("Dana@Example.edu");
    let raw = jwt_grant(
        &fake,
        &sign_assertion(&claims, &test_keys::service_account_private_key_pem(), None),
    )
    .await;
    assert_eq!(raw.status, 200, "{}", raw.body);
    let dana = hub(&fake, raw.json()["access_token"].as_str().expect("token"));
    let (_, created) = dana
        .calendars()
        .insert(Calendar {
            summary: Some("Dana's courses".into()),
            ..Default::default()
        })
        .doit()
        .await
        .expect("insert as Dana");
    let cal = created.id.expect("id");
    assert_eq!(
        fake.calendar_owner_email(&cal).as_deref(),
        Some("dana@example.edu")
    );
    assert_eq!(
        fake.calls()
            .last()
            .and_then(|c| c.principal.clone())
            .as_deref(),
        Some("dana@example.edu")
    );
    // Dana's own OAuth token is the same Google account: owner access.
    fake.add_refresh_token_for("rt-dana", "dana@example.edu");
    let own = hub(&fake, &refresh_grant(&fake, "rt-dana").await);
    let (_, entry) = own
        .calendar_list()
        .get(&cal)
        .doit()
        .await
        .expect("own calendar");
    assert_eq!(entry.access_role.as_deref(), Some("owner"));
    // The service account as itself does not see Dana's calendar.
    let sa = hub(&fake, &service_account_token(&fake).await);
    let err = sa
        .calendars()
        .get(&cal)
        .doit()
        .await
        .expect_err("not the SA's");
    assert_eq!(google_error(err).0, 404);
    // Removing the service account kills its tokens, delegated ones included.
    fake.remove_service_account(&email);
    let err = dana
        .calendars()
        .get(&cal)
        .doit()
        .await
        .expect_err("revoked");
    assert_eq!(google_error(err).0, 401);
    let err = sa.calendar_list().list().doit().await.expect_err("revoked");
    assert_eq!(google_error(err).0, 401);
}

#[tokio::test]
async fn scopes_limit_what_a_token_may_do() {
    let fake = FakeGoogle::start().await.expect("start");
    let email = fake.register_test_service_account();
    let cal = fake.create_calendar_owned_by(&email, "Owned");
    let token_for = |scope: &str| {
        let mut claims = sa_claims(&fake, &email);
        claims["scope"] = json!(scope);
        sign_assertion(&claims, &test_keys::service_account_private_key_pem(), None)
    };
    let raw = jwt_grant(
        &fake,
        &token_for("https://www.googleapis.com/auth/calendar.readonly"),
    )
    .await;
    let readonly = hub(&fake, raw.json()["access_token"].as_str().expect("token"));
    readonly.events().list(&cal).doit().await.expect("read");
    let err = readonly
        .events()
        .insert(timed_event(Some("nope00001"), 9), &cal)
        .doit()
        .await
        .expect_err("write with a read-only scope");
    assert_eq!(
        google_error(err),
        (
            403,
            "insufficientPermissions".into(),
            "Request had insufficient authentication scopes.".into()
        )
    );
    let raw = jwt_grant(
        &fake,
        &token_for("https://www.googleapis.com/auth/calendar.events"),
    )
    .await;
    let events_only = hub(&fake, raw.json()["access_token"].as_str().expect("token"));
    events_only
        .events()
        .insert(timed_event(Some("good00002"), 9), &cal)
        .doit()
        .await
        .expect("events scope writes events");
    let err = events_only
        .acl()
        .list(&cal)
        .doit()
        .await
        .expect_err("no acl scope");
    assert_eq!(google_error(err).1, "insufficientPermissions");
}

#[tokio::test]
async fn roles_scopes_and_paging_of_acl_and_calendar_list() {
    let fake = FakeGoogle::start().await.expect("start");
    let sa_email = fake.register_test_service_account();
    let sa = hub(&fake, &service_account_token(&fake).await);
    let mut owned = Vec::new();
    for i in 0..7 {
        owned.push(fake.create_calendar_owned_by(&sa_email, &format!("Cal {i}")));
    }
    // calendarList pages through every owned calendar once, in a stable order.
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut call = sa.calendar_list().list().max_results(3);
        if let Some(t) = &token {
            call = call.page_token(t);
        }
        let (_, page) = call.doit().await.expect("page");
        let items = page.items.unwrap_or_default();
        assert!(items.len() <= 3);
        seen.extend(items.into_iter().filter_map(|e| e.id));
        token = page.next_page_token;
        if token.is_none() {
            break;
        }
    }
    owned.sort();
    assert_eq!(seen, owned);

    // Domain, group and default scopes; freeBusyReader sees busy times only.
    let cal = &owned[0];
    let insert = |scope_type: &str, value: Option<&str>, role: &str| AclRule {
        role: Some(role.to_string()),
        scope: Some(AclRuleScope {
            type_: Some(scope_type.to_string()),
            value: value.map(str::to_string),
        }),
        ..Default::default()
    };
    sa.acl()
        .insert(insert("domain", Some("example.edu"), "freeBusyReader"), cal)
        .doit()
        .await
        .expect("domain");
    sa.acl()
        .insert(insert("group", Some("math1750@example.edu"), "writer"), cal)
        .doit()
        .await
        .expect("group");
    fake.add_group_member("math1750@example.edu", BOB);
    sa.events()
        .insert(timed_event(Some("free00001"), 9), cal)
        .doit()
        .await
        .expect("event");
    fake.add_refresh_token_for("rt-alice", ALICE);
    fake.add_refresh_token_for("rt-bob", BOB);
    let alice = hub(&fake, &refresh_grant(&fake, "rt-alice").await);
    let (_, busy) = alice.events().list(cal).doit().await.expect("free/busy");
    let item = &busy.items.unwrap_or_default()[0];
    assert!(item.summary.is_none() && item.start.is_some());
    let bob = hub(&fake, &refresh_grant(&fake, "rt-bob").await);
    bob.events()
        .insert(timed_event(Some("bob000001"), 11), cal)
        .doit()
        .await
        .expect("group writer");
    let (_, acl) = bob
        .acl()
        .list(cal)
        .max_results(2)
        .doit()
        .await
        .expect("writers read the ACL");
    assert_eq!(acl.items.map(|i| i.len()), Some(2));
    assert!(acl.next_page_token.is_some());
    let err = bob
        .acl()
        .insert(reader_rule(CAROL), cal)
        .doit()
        .await
        .expect_err("writers cannot share");
    assert_eq!(google_error(err).0, 403);
    let (_, writers) = bob
        .calendar_list()
        .list()
        .min_access_role("writer")
        .doit()
        .await
        .expect("minAccessRole");
    assert_eq!(writers.items.map(|i| i.len()), Some(1));

    // Bad rules are refused like Google.
    for (rule, reason) in [
        (insert("user", None, "reader"), "required"),
        (insert("user", Some("not-an-email"), "reader"), "invalid"),
        (insert("planet", Some("mars"), "reader"), "invalid"),
        (insert("user", Some(CAROL), "admin"), "invalid"),
        (
            AclRule {
                role: Some("reader".into()),
                ..Default::default()
            },
            "required",
        ),
    ] {
        let err = sa
            .acl()
            .insert(rule, cal)
            .doit()
            .await
            .expect_err("bad rule");
        assert_eq!(google_error(err).1, reason);
    }
    // Re-inserting a rule for the same scope replaces it.
    sa.acl()
        .insert(insert("user", Some(CAROL), "reader"), cal)
        .send_notifications(false)
        .doit()
        .await
        .expect("reader");
    sa.acl()
        .insert(insert("user", Some(CAROL), "writer"), cal)
        .send_notifications(false)
        .doit()
        .await
        .expect("writer");
    let carol_rules: Vec<_> = fake
        .acl_rules(cal)
        .into_iter()
        .filter(|r| r["id"] == "user:carol@example.edu")
        .collect();
    assert_eq!(carol_rules.len(), 1);
    assert_eq!(carol_rules[0]["role"], "writer");

    // share_calendar (Rust helper) is what a test uses to pre-share without an API call.
    let other = fake.create_calendar_owned_by(&sa_email, "Helper-shared");
    fake.share_calendar(&other, CAROL, Role::Reader);
    fake.add_refresh_token_for("rt-carol", CAROL);
    let carol = hub(&fake, &refresh_grant(&fake, "rt-carol").await);
    carol
        .events()
        .list(&other)
        .doit()
        .await
        .expect("shared by helper");
}
