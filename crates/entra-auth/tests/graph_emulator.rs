//! `entra_auth::graph` against testkit's Graph emulator (served by the Entra emulator): a whole
//! rotation as the lifecycle does it, with real tokens from the emulator's token endpoint for the
//! Graph scope, and the refusals the emulator enforces (ownership under
//! `Application.ReadWrite.OwnedBy`, the app management policy, the propagation delay during which
//! the token endpoint refuses a new secret with AADSTS7000215, and a removed secret refused
//! afterwards). The token and both secrets never appear in errors or `Debug` output.

use std::time::{Duration, Instant};

use entra_auth::graph::{GraphClient, GraphErrorKind, GraphOptions};
use entra_auth::{
    AppCredential, Authority, ClientOptions, Cloud, Credential, RetryPolicy, TokenClient,
};
use secrecy::{ExposeSecret, SecretString};
use testkit::{AppPolicy, AppRegistration, EntraEmulator, Password};
use time::OffsetDateTime;
use url::Url;

const TENANT: &str = "8eaef023-2b34-4da1-9baa-8bc8c9d6a490";
const CLIENT: &str = "3b5a9c1e-7f3d-4e1a-9b2c-1d2e3f4a5b6c";
const OBJECT_ID: &str = "9f1c2d3e-4b5a-4c6d-8e7f-0a1b2c3d4e5f";
const OLD_KEY_ID: &str = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d";
const SECRET: &str = "Zx8Q~kR3v.Ly9TqsecretVALUE_never_printed";
const DAY: Duration = Duration::from_secs(24 * 3600);

fn options() -> ClientOptions {
    ClientOptions {
        request_timeout: Duration::from_secs(10),
        retry: RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
            max_elapsed: Duration::from_secs(10),
        },
        ..ClientOptions::default()
    }
}

async fn emulator(roles: &[&str], owner: bool) -> EntraEmulator {
    let entra = EntraEmulator::start().await.expect("emulator starts");
    entra.register_app(
        AppRegistration::new(TENANT, CLIENT)
            .with_object_id(OBJECT_ID)
            .with_password(
                Password::new(SECRET)
                    .key_id(OLD_KEY_ID)
                    .display_name("set by hand"),
            )
            .with_graph_roles(roles),
    );
    if owner {
        entra.add_owner(CLIENT, CLIENT);
    }
    entra
}

fn app(entra: &EntraEmulator, secret: &SecretString) -> AppCredential {
    AppCredential {
        authority: Authority::parse(&entra.base_url()).unwrap(),
        tenant: TENANT.parse().unwrap(),
        client_id: CLIENT.parse().unwrap(),
        credential: Credential::ClientSecret(secret.clone()),
    }
}

/// A Graph token acquired with `secret`, as the lifecycle gets one.
async fn graph_token(
    entra: &EntraEmulator,
    secret: &SecretString,
) -> Result<SecretString, entra_auth::Error> {
    let tokens = TokenClient::new(options()).unwrap();
    let token = tokens
        .acquire(&app(entra, secret), &Cloud::Public.graph_scope())
        .await?;
    Ok(token.secret().clone())
}

fn graph(entra: &EntraEmulator) -> GraphClient {
    GraphClient::new(
        Url::parse(&entra.graph_endpoint()).unwrap(),
        GraphOptions::from(options()),
    )
    .unwrap()
}

fn assert_clean(text: &str, sensitive: &[&str]) {
    for value in sensitive {
        assert!(!value.is_empty());
        assert!(!text.contains(value), "a secret leaked into: {text}");
    }
}

#[tokio::test]
async fn a_rotation_through_the_emulator() {
    let entra = emulator(&["Application.ReadWrite.OwnedBy"], true).await;
    let old = SecretString::from(SECRET);
    let token = graph_token(&entra, &old).await.expect("a Graph token");
    let graph = graph(&entra);

    let before = graph
        .application(&token, &CLIENT.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(before.id, OBJECT_ID);
    assert_eq!(before.app_id, CLIENT);
    let [current] = before.password_credentials.as_slice() else {
        panic!("one password: {:?}", before.password_credentials);
    };
    assert_eq!(current.key_id, OLD_KEY_ID);
    assert_eq!(current.hint.as_deref(), Some("Zx8"));
    assert_eq!(current.display_name.as_deref(), Some("set by hand"));
    assert!(
        current
            .end
            .is_some_and(|end| end > OffsetDateTime::now_utc())
    );

    let end = OffsetDateTime::now_utc() + 180 * DAY;
    let new = graph
        .add_password(&token, &before.id, "secret-sync job=tokens", end)
        .await
        .unwrap();
    assert_ne!(new.credential.key_id, OLD_KEY_ID);
    assert_eq!(
        new.credential.hint.as_deref(),
        Some(&new.secret.expose_secret()[..3])
    );
    let stored = entra.application(CLIENT).unwrap();
    let added = stored
        .passwords
        .iter()
        .find(|p| p.key_id == new.credential.key_id)
        .expect("the emulator holds the new password");
    assert_eq!(added.secret.expose_secret(), new.secret.expose_secret());
    assert_eq!(
        added.display_name.as_deref(),
        Some("secret-sync job=tokens")
    );
    assert!(
        (added.end - end).abs() < time::Duration::seconds(2),
        "the end sent is the end kept: {} vs {end}",
        added.end
    );
    // The new secret gets tokens; then the old one is removed and refused.
    graph_token(&entra, &new.secret)
        .await
        .expect("the new secret works");
    graph
        .remove_password(&token, &before.id, OLD_KEY_ID)
        .await
        .unwrap();
    let err = graph_token(&entra, &old).await.unwrap_err();
    assert!(err.aadsts_codes().contains(&7000215), "{err}");
    let after = graph
        .application(&token, &CLIENT.parse().unwrap())
        .await
        .unwrap();
    let keys: Vec<&str> = after
        .password_credentials
        .iter()
        .map(|p| p.key_id.as_str())
        .collect();
    assert_eq!(keys, [new.credential.key_id.as_str()]);
    assert_eq!(
        entra.key_credential_selects(),
        0,
        "a read that names keyCredentials in $select gets each certificate's key and is throttled"
    );
    assert_clean(
        &format!("{before:?} {after:?} {new:?} {err} {err:?}"),
        &[SECRET, token.expose_secret(), new.secret.expose_secret()],
    );
}

#[tokio::test]
async fn a_new_secret_is_refused_until_it_has_propagated() {
    let entra = emulator(&["Application.ReadWrite.OwnedBy"], true).await;
    entra.set_secret_propagation_delay(Duration::from_secs(2));
    let token = graph_token(&entra, &SecretString::from(SECRET))
        .await
        .unwrap();
    let new = graph(&entra)
        .add_password(
            &token,
            OBJECT_ID,
            "secret-sync",
            OffsetDateTime::now_utc() + 30 * DAY,
        )
        .await
        .unwrap();
    let added = Instant::now();
    let err = graph_token(&entra, &new.secret).await.unwrap_err();
    // What rotation polls for: "not accepted (yet)", told apart by the AADSTS code.
    assert!(err.aadsts_codes().contains(&7000215), "{err}");
    assert!(!err.is_retryable(), "{err}");
    let deadline = added + Duration::from_secs(10);
    loop {
        match graph_token(&entra, &new.secret).await {
            Ok(_) => break,
            Err(err) if err.aadsts_codes().contains(&7000215) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(err) => panic!("the new secret never worked: {err}"),
        }
    }
    assert!(
        added.elapsed() >= Duration::from_secs(2),
        "{:?}",
        added.elapsed()
    );
}

#[tokio::test]
async fn writes_without_ownership_are_forbidden_and_say_what_to_grant() {
    let entra = emulator(&["Application.ReadWrite.OwnedBy"], false).await;
    let token = graph_token(&entra, &SecretString::from(SECRET))
        .await
        .unwrap();
    let graph = graph(&entra);
    // OwnedBy reads every app; it writes only the ones the caller owns.
    graph
        .application(&token, &CLIENT.parse().unwrap())
        .await
        .unwrap();
    let err = graph
        .add_password(
            &token,
            OBJECT_ID,
            "secret-sync",
            OffsetDateTime::now_utc() + 30 * DAY,
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), GraphErrorKind::Forbidden, "{err}");
    assert_eq!(err.code(), Some("Authorization_RequestDenied"), "{err}");
    for needle in [
        "Application.ReadWrite.OwnedBy",
        "owner",
        "Application.ReadWrite.All",
    ] {
        assert!(err.to_string().contains(needle), "{err} lacks {needle}");
    }
    assert_eq!(entra.application(CLIENT).unwrap().passwords.len(), 1);
    assert_clean(&format!("{err} {err:?}"), &[SECRET, token.expose_secret()]);
}

#[tokio::test]
async fn a_token_without_graph_roles_is_forbidden_even_to_read() {
    let entra = emulator(&[], false).await;
    let token = graph_token(&entra, &SecretString::from(SECRET))
        .await
        .unwrap();
    let err = graph(&entra)
        .application(&token, &CLIENT.parse().unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), GraphErrorKind::Forbidden, "{err}");
    assert!(err.to_string().contains("may not read"), "{err}");
}

#[tokio::test]
async fn the_app_management_policy_refuses_long_lifetimes_and_secrets() {
    let entra = emulator(&["Application.ReadWrite.All"], false).await;
    let token = graph_token(&entra, &SecretString::from(SECRET))
        .await
        .unwrap();
    let graph = graph(&entra);
    entra.set_app_policy(AppPolicy {
        max_password_lifetime: Some(90 * DAY),
        passwords_allowed: true,
    });
    let err = graph
        .add_password(
            &token,
            OBJECT_ID,
            "secret-sync",
            OffsetDateTime::now_utc() + 180 * DAY,
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), GraphErrorKind::PolicyRefused, "{err}");
    assert_eq!(err.code(), Some("CredentialInvalidLifetimeAsPerAppPolicy"));
    assert!(err.to_string().contains("shorter lifetime"), "{err}");
    graph
        .add_password(
            &token,
            OBJECT_ID,
            "secret-sync",
            OffsetDateTime::now_utc() + 60 * DAY,
        )
        .await
        .expect("a lifetime inside the policy is accepted");
    entra.set_app_policy(AppPolicy {
        max_password_lifetime: None,
        passwords_allowed: false,
    });
    let err = graph
        .add_password(
            &token,
            OBJECT_ID,
            "secret-sync",
            OffsetDateTime::now_utc() + 60 * DAY,
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), GraphErrorKind::PolicyRefused, "{err}");
    assert_eq!(err.code(), Some("CredentialTypeNotAllowedAsPerAppPolicy"));
}

#[tokio::test]
async fn an_unknown_app_or_a_bad_token_is_named() {
    let entra = emulator(&["Application.ReadWrite.All"], false).await;
    let token = graph_token(&entra, &SecretString::from(SECRET))
        .await
        .unwrap();
    let graph = graph(&entra);
    let err = graph
        .application(
            &token,
            &"00000000-0000-0000-0000-00000000abcd".parse().unwrap(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), GraphErrorKind::NotFound, "{err}");
    let err = graph
        .application(
            &SecretString::from("not.a-token.at-all"),
            &CLIENT.parse().unwrap(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), GraphErrorKind::Unauthorized, "{err}");
    assert_eq!(err.code(), Some("InvalidAuthenticationToken"), "{err}");
    assert!(!err.to_string().contains("not.a-token.at-all"), "{err}");
}
