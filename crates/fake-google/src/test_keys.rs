//! Test-only service-account key material, committed on purpose and trusted by nothing but
//! this fake (see `crates/fake-google/test-data/README.md`). NEVER use it for anything real.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use calsync_fake_google::{FakeGoogle, test_keys};
//!
//! let fake = FakeGoogle::start().await?;
//! let email = fake.register_test_service_account();
//! assert_eq!(email, test_keys::SERVICE_ACCOUNT_EMAIL);
//! // Point calsync at test_keys::service_account_json_path() and fake.token_url().
//! # Ok(())
//! # }
//! ```

use std::path::PathBuf;

/// `client_email` of the test service account.
pub const SERVICE_ACCOUNT_EMAIL: &str =
    "calsync-test-only@calsync-fake-test-only.iam.gserviceaccount.com";

/// `private_key_id` of the test service account (SHA-1 of its public key PEM).
pub const SERVICE_ACCOUNT_KEY_ID: &str = "7d6fddf7220473a6a11eb6c2ae8e8b8fd58ed757";

/// The Google-format service-account JSON key file (`type`, `project_id`,
/// `private_key_id`, `private_key`, `client_email`, `client_id`, `token_uri`, ...). Its
/// `token_uri` is Google's; use [`FakeGoogle::token_url`](crate::FakeGoogle::token_url).
pub const SERVICE_ACCOUNT_JSON: &str = include_str!("../test-data/test-service-account.json");

/// The test service account's public key (SPKI PEM).
pub const SERVICE_ACCOUNT_PUBLIC_KEY_PEM: &str =
    include_str!("../test-data/test-service-account.pub.pem");

/// An unrelated RSA private key (PKCS#8 PEM), for "signed with the wrong key" tests.
pub const OTHER_PRIVATE_KEY_PEM: &str = include_str!("../test-data/other-key.pem");

/// The public half of [`OTHER_PRIVATE_KEY_PEM`].
pub const OTHER_PUBLIC_KEY_PEM: &str = include_str!("../test-data/other-key.pub.pem");

/// Path of the service-account JSON key file in the source tree.
pub fn service_account_json_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("test-data/test-service-account.json")
}

/// The test service account's private key (PKCS#8 PEM), read from [`SERVICE_ACCOUNT_JSON`].
pub fn service_account_private_key_pem() -> String {
    serde_json::from_str::<serde_json::Value>(SERVICE_ACCOUNT_JSON)
        .ok()
        .and_then(|v| v.get("private_key")?.as_str().map(str::to_string))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_is_consistent() {
        let json: serde_json::Value =
            serde_json::from_str(SERVICE_ACCOUNT_JSON).unwrap_or_default();
        assert_eq!(json["type"], "service_account");
        assert_eq!(json["client_email"], SERVICE_ACCOUNT_EMAIL);
        assert_eq!(json["private_key_id"], SERVICE_ACCOUNT_KEY_ID);
        assert!(service_account_private_key_pem().starts_with("-----BEGIN PRIVATE KEY-----"));
        assert!(service_account_json_path().is_file());
        assert!(crate::oauth::parse_public_key(SERVICE_ACCOUNT_PUBLIC_KEY_PEM).is_ok());
        assert!(crate::oauth::parse_public_key(OTHER_PUBLIC_KEY_PEM).is_ok());
    }
}
