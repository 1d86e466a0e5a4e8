//! Service accounts: the OAuth 2.0 JWT-bearer grant with real RS256 verification, Google's
//! error answers, domain-wide delegation and token scopes — through the real client.

mod common;

use calsync_fake_google::{FakeGoogle, test_keys};
use common::{
    google_error, hub, jwt_grant, refresh_grant, sa_claims, service_account_token, sign_assertion,
    timed_event, token_request,
};
use google_calendar3::api::Calendar;
use serde_json::json;

const ALICE: &str = "alice@example.edu";

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

fn expect_ok(raw: common::Raw) {
    assert_eq!(raw.status, 200, "{}", raw.body);
}
