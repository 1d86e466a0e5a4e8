//! Calendars a service account owns, sharing (Acl: insert/get/list/delete, roles and scope
//! types), owner-scoped access and calendarList — through the real client.

mod common;

use calsync_fake_google::{FakeGoogle, Role, test_keys};
use common::{google_error, hub, refresh_grant, service_account_token, timed_event};
use google_calendar3::api::{AclRule, AclRuleScope, Calendar};

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
