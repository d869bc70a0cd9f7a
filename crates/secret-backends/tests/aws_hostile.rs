//! The AWS Secrets Manager backend against a hostile endpoint (testkit's `HostileServer` on
//! 127.0.0.1): the SDK's HTTP client follows no redirect, so a signed request and the value it
//! writes never reach the place a redirect points at; and absurd tags give no expiry, never a
//! panic.

use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_secretsmanager::config::{Credentials, Region, SharedCredentialsProvider};
use secret_backends::WritePrecondition;
use secret_backends::{AwsOptions, AwsStore, Format, SecretStore, TokenPayload};
use serde_json::json;
use testkit::{Behaviour, HostileServer};

mod common;

const ACCESS_KEY: &str = "AKIDSECRETSYNCHOSTILE";
const SECRET_KEY: &str = "secret-sync-hostile-secret-key";
const ACCESS_TOKEN: &str = "eyJ0eXAiOiJKV1QifQ.aws-redirect-test-access-token.sig";

fn store(endpoint: String) -> AwsStore {
    let sdk_config = SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("eu-west-1"))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            ACCESS_KEY, SECRET_KEY, None, None, "test",
        )))
        .build();
    let options = AwsOptions {
        endpoint_url: Some(endpoint),
        max_attempts: 1,
        ..AwsOptions::default()
    };
    AwsStore::with_sdk_config("hostile-aws", options, &sdk_config).unwrap()
}

fn payload() -> TokenPayload {
    common::payload(ACCESS_TOKEN, Format::Raw)
}

#[tokio::test]
async fn a_redirect_is_not_followed_and_nothing_reaches_its_target() {
    let elsewhere = HostileServer::start(Behaviour::json(200, &json!({})))
        .await
        .unwrap();
    for status in [301, 302, 307, 308] {
        let endpoint = HostileServer::start(Behaviour::redirect(status, &elsewhere.url("/")))
            .await
            .unwrap();
        let store = store(endpoint.base_url());
        let write = store
            .write("graph-token", &payload(), &WritePrecondition::unread(false))
            .await
            .unwrap_err();
        let read = store.read("graph-token", None).await.unwrap_err();
        for err in [write, read] {
            let text = format!("{err} {err:?}");
            assert!(
                !text.contains(ACCESS_TOKEN) && !text.contains(SECRET_KEY),
                "{text}"
            );
        }
        assert!(endpoint.request_count() > 0, "the endpoint was asked");
    }
    common::assert_nothing_reached(&elsewhere);
}

#[tokio::test]
async fn tags_no_backend_can_hold_are_no_expiry() {
    let endpoint = HostileServer::start(Behaviour::json(
        200,
        &json!({
            "ARN": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:graph-token-AbCdEf",
            "Name": "graph-token",
            "Tags": [
                {"Key": "secret-sync:expires-on", "Value": "99999999999999999"},
                {"Key": "secret-sync:managed-by", "Value": "secret-sync"}
            ],
            "LastChangedDate": 1e15,
            "VersionIdsToStages": {"v1": ["AWSCURRENT"]}
        }),
    ))
    .await
    .unwrap();
    let store = store(endpoint.base_url());
    let metadata = store.metadata("graph-token").await.unwrap().unwrap();
    assert_eq!(metadata.expires_on, None, "{metadata:?}");
    assert_eq!(metadata.updated_on, None, "{metadata:?}");
    assert_eq!(metadata.managed_by.as_deref(), Some("secret-sync"));
}

#[tokio::test]
async fn a_huge_answer_is_cut_off_and_named() {
    for huge in [
        Behaviour::huge_body(200, "application/x-amz-json-1.1", 200 << 20).without_content_length(),
        Behaviour::huge_body(200, "application/x-amz-json-1.1", 200 << 20),
        Behaviour::huge_body(400, "application/x-amz-json-1.1", 200 << 20),
    ] {
        let endpoint = HostileServer::start(huge).await.unwrap();
        let store = store(endpoint.base_url());
        let err = store.read("graph-token", None).await.unwrap_err();
        common::assert_cut_off(&err, &endpoint, 32 << 20);
    }
}
