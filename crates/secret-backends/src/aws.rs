//! The AWS Secrets Manager backend.
//!
//! For teams whose jobs run on AWS (ECS tasks, Lambda, EKS pods, CodeBuild) and read their
//! tokens from Secrets Manager. Credentials come from the SDK's default chain (environment,
//! shared config and SSO profiles, web identity, ECS/EC2 roles), optionally with a named
//! `profile`; `region` and `endpoint_url` override the chain's.
//!
//! A write creates the secret when it is missing (`CreateSecret`, with the optional KMS key),
//! else stores a new version (`PutSecretValue`) and then the tags (`TagResource`): after the
//! caller's metadata read, a refresh is those two calls. Each write has a fresh
//! `ClientRequestToken` (the new version's id), so the SDK's retries of one write never make two
//! versions; its first half fingerprints the value, so the version id `DescribeSecret` gives
//! says whether the stored value is already the payload's without reading it. Tags carry what
//! is stored beside the token, readable by `metadata` without reading the value
//! (`DescribeSecret`):
//!
//! | tag | value |
//! |---|---|
//! | `secret-sync:expires-on` | expiry, Unix seconds |
//! | `secret-sync:expires-at` | expiry, RFC 3339 (for people in the console) |
//! | `secret-sync:managed-by` | the managed-by marker |
//!
//! A value written back ([`SecretStore::write_value`]: a client secret, whole or one `#field`
//! of a JSON value) is conditional on the version [`SecretStore::read_stored`] saw:
//! `PutSecretValue` stores it labelled [`PENDING_STAGE`] only (the current value is unchanged),
//! then `UpdateSecretVersionStage` moves `AWSCURRENT` to it with `RemoveFromVersionId` = the
//! version read, which Secrets Manager refuses once `AWSCURRENT` has moved (the commit point).
//! A whole value's record is in tags ([`TAG_KEY_ID`], ...), set before the value and naming the
//! version they describe ([`TAG_RECORD_VERSION`]), put back if the value write fails.
//!
//! AWS advises at most one `PutSecretValue` per 10 minutes per secret and keeps ~100 versions,
//! so a write whose token and expiry are already stored writes nothing ([`WriteOutcome::Unchanged`]),
//! and one whose token is stored with another expiry only updates the tags. Both are decided
//! from the metadata read (the current version's id and the tags); the value is read
//! (`GetSecretValue`) only when another writer made the current version and its expiry tag is
//! the payload's. Throttling and
//! transient failures are retried by the SDK (standard retry mode, `max_attempts`). A secret
//! scheduled for deletion is reported with the command that restores it. Names must match
//! `^[A-Za-z0-9/_+=.@-]{1,512}$` and values be at most 65,536 bytes, checked before any call.
//!
//! ```no_run
//! # async fn demo() -> Result<(), secret_backends::BackendError> {
//! use secret_backends::{AwsOptions, AwsStore};
//! // [backends.aws-prod]
//! // kind = "aws-secrets-manager"
//! // region = "eu-west-1"            # optional: else AWS_REGION / the profile's region
//! // profile = "sync"                # optional: a shared config profile
//! // kms_key_id = "alias/tokens"     # optional: KMS key for newly created secrets
//! // endpoint_url = "https://vpce-0123.secretsmanager.eu-west-1.vpce.amazonaws.com"  # optional
//! let options = AwsOptions {
//!     region: Some("eu-west-1".to_owned()),
//!     ..AwsOptions::default()
//! };
//! let store = AwsStore::new("aws-prod", options).await?;
//! # Ok(()) }
//! ```

use std::fmt;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::SdkConfig;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::config::Region;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_secretsmanager::operation::describe_secret::DescribeSecretOutput;
use aws_sdk_secretsmanager::primitives::DateTime;
use aws_sdk_secretsmanager::types::Tag;
use aws_smithy_types::body::SdkBody;
use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;

use crate::http::{BodyTooLarge, MAX_ANSWER_BYTES, find_cause};
use crate::value::{check_size, parse_document, set_field};
use crate::{
    BackendError, CredentialRecord, ErrorKind, SecretMetadata, SecretStore, SecretValue,
    StoredValue, TokenPayload, WriteOutcome, WritePrecondition, changed_since_read, pick_field,
    pick_from_map,
};

/// Tag holding the expiry as Unix seconds.
pub const TAG_EXPIRES_ON: &str = "secret-sync:expires-on";
/// Tag holding the expiry as RFC 3339.
pub const TAG_EXPIRES_AT: &str = "secret-sync:expires-at";
/// Tag holding the managed-by marker.
pub const TAG_MANAGED_BY: &str = "secret-sync:managed-by";

/// The largest `SecretString` Secrets Manager accepts.
const MAX_VALUE_BYTES: usize = 65_536;
/// The longest secret name.
const MAX_NAME_CHARS: usize = 512;
/// The longest tag value.
const MAX_TAG_VALUE_CHARS: usize = 256;

/// Options of the AWS Secrets Manager backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsOptions {
    /// The region (e.g. `eu-west-1`); `None` takes it from the environment or the profile.
    pub region: Option<String>,
    /// Another endpoint, e.g. a VPC endpoint (https) or a local test server (http on loopback only).
    pub endpoint_url: Option<String>,
    /// KMS key (id, ARN or `alias/...`) to encrypt secrets this backend creates.
    pub kms_key_id: Option<String>,
    /// A shared config profile to take credentials and region from.
    pub profile: Option<String>,
    /// Attempts per call, the first included, before throttling or a transient error is returned
    /// (default 5).
    pub max_attempts: u32,
}

impl Default for AwsOptions {
    fn default() -> Self {
        AwsOptions {
            region: None,
            endpoint_url: None,
            kms_key_id: None,
            profile: None,
            max_attempts: 5,
        }
    }
}

/// A [`SecretStore`] over AWS Secrets Manager.
#[derive(Clone)]
pub struct AwsStore {
    backend: String,
    client: Client,
    options: AwsOptions,
}

impl fmt::Debug for AwsStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The client holds the credentials provider: show the options only.
        f.debug_struct("AwsStore")
            .field("backend", &self.backend)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl AwsStore {
    /// A store named `backend` (for messages) with credentials and region from the default
    /// chain (and `options.profile` when set). No request is sent until the store is used.
    ///
    /// Fails with [`ErrorKind::InvalidConfig`] when no region is configured anywhere or the
    /// endpoint URL is unusable.
    pub async fn new(
        backend: impl Into<String>,
        options: AwsOptions,
    ) -> Result<Self, BackendError> {
        let backend = backend.into();
        check_options(&backend, &options)?;
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(region) = &options.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(profile) = &options.profile {
            loader = loader.profile_name(profile);
        }
        let sdk_config = loader.load().await;
        Self::with_sdk_config(backend, options, &sdk_config)
    }

    /// A store over an SDK config the caller built (e.g. with static credentials in tests);
    /// `options.region` and `options.endpoint_url` still override it, `options.profile` is
    /// ignored (the config is already loaded).
    pub fn with_sdk_config(
        backend: impl Into<String>,
        options: AwsOptions,
        sdk_config: &SdkConfig,
    ) -> Result<Self, BackendError> {
        let backend = backend.into();
        check_options(&backend, &options)?;
        let mut config = aws_sdk_secretsmanager::config::Builder::from(sdk_config)
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(options.max_attempts)
                    .with_initial_backoff(Duration::from_millis(200)),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_attempt_timeout(Duration::from_secs(30))
                    .operation_timeout(Duration::from_secs(120))
                    .build(),
            );
        if let Some(region) = &options.region {
            config = config.region(Region::new(region.clone()));
        }
        if let Some(url) = &options.endpoint_url {
            config = config.endpoint_url(url);
        }
        config = config.interceptor(CapAnswers);
        let config = config.build();
        if config.region().is_none() {
            return Err(BackendError::new(
                ErrorKind::InvalidConfig,
                &backend,
                "no AWS region is configured: set `region` for this backend, AWS_REGION, \
                 or a region in the AWS profile",
            ));
        }
        Ok(AwsStore {
            backend,
            client: Client::from_conf(config),
            options,
        })
    }

    /// The options this store was built with.
    pub fn options(&self) -> &AwsOptions {
        &self.options
    }

    fn error(&self, kind: ErrorKind, name: &str, message: impl Into<String>) -> BackendError {
        BackendError::new(kind, &self.backend, message).with_secret(name)
    }

    /// Translates every SDK error of this backend: what happened, what to do, the cause kept.
    ///
    /// The raw HTTP response is dropped (only the parsed error is kept as the source), so a
    /// response that carried a value can never reach a message.
    fn sdk_error<E>(&self, name: &str, op: &str, err: SdkError<E>) -> BackendError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let (kind, message) = match &err {
            SdkError::ServiceError(service) => {
                let status = service.raw().status().as_u16();
                let code = err.code().unwrap_or("");
                let aws_message = err.message().unwrap_or("");
                let (kind, advice) = classify(code, status, aws_message, name);
                let mut what = if code.is_empty() {
                    format!("HTTP {status}")
                } else {
                    code.to_owned()
                };
                if !aws_message.is_empty() {
                    what.push_str(&format!(" ({aws_message})"));
                }
                (kind, format!("{op} failed with {what}: {advice}"))
            }
            SdkError::TimeoutError(_) => (
                ErrorKind::Unreachable,
                format!("{op} timed out: check network access to the Secrets Manager endpoint"),
            ),
            SdkError::DispatchFailure(failure) if failure.is_io() || failure.is_timeout() => (
                ErrorKind::Unreachable,
                format!(
                    "{op} could not reach Secrets Manager: check the region, endpoint_url and network access"
                ),
            ),
            SdkError::DispatchFailure(_) | SdkError::ConstructionFailure(_) => {
                let chain = aws_sdk_secretsmanager::error::DisplayErrorContext(&err).to_string();
                if chain.contains("credentials") || chain.contains("identity") {
                    (
                        ErrorKind::Unauthorized,
                        format!(
                            "{op} failed: no usable AWS credentials: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, \
                             AWS_PROFILE (or `profile`), or run with an IAM role"
                        ),
                    )
                } else {
                    (
                        ErrorKind::Unreachable,
                        format!("{op} could not be sent to Secrets Manager"),
                    )
                }
            }
            _ if find_cause::<BodyTooLarge>(&err).is_some() => (
                ErrorKind::Protocol,
                format!(
                    "{op}: the Secrets Manager endpoint sent an answer larger than {} KiB, so it was not read: \
                     check that endpoint_url points at Secrets Manager",
                    MAX_ANSWER_BYTES / 1024
                ),
            ),
            SdkError::ResponseError(_) => (
                ErrorKind::Protocol,
                format!(
                    "{op}: Secrets Manager answered something unexpected: check that endpoint_url points at Secrets Manager"
                ),
            ),
            _ => (ErrorKind::Protocol, format!("{op} failed")),
        };
        let error = self.error(kind, name, message);
        match err.into_source() {
            Ok(source) => error.with_source(source),
            Err(_) => error,
        }
    }

    /// `DescribeSecret`, with a missing secret as `None`.
    async fn describe(&self, name: &str) -> Result<Option<DescribeSecretOutput>, BackendError> {
        match self.client.describe_secret().secret_id(name).send().await {
            Ok(out) => Ok(Some(out)),
            Err(err) if err.code() == Some("ResourceNotFoundException") => Ok(None),
            Err(err) => Err(self.sdk_error(name, "DescribeSecret", err)),
        }
    }

    /// Refuses a secret that is scheduled for deletion: it can neither be read nor written.
    fn check_not_deleted(
        &self,
        name: &str,
        out: &DescribeSecretOutput,
    ) -> Result<(), BackendError> {
        match out.deleted_date() {
            Some(date) => Err(self.error(
                ErrorKind::Conflict,
                name,
                format!(
                    "the secret is scheduled for deletion (deleted on {}): restore it with \
                     `aws secretsmanager restore-secret --secret-id {name}`, or pick another name",
                    to_offset(date).map_or_else(|| date.to_string(), crate::rfc3339)
                ),
            )),
            None => Ok(()),
        }
    }

    fn tags(&self, name: &str, payload: &TokenPayload) -> Result<Vec<Tag>, BackendError> {
        if payload.managed_by().chars().count() > MAX_TAG_VALUE_CHARS {
            return Err(self.error(
                ErrorKind::InvalidConfig,
                name,
                format!(
                    "the managed-by marker is longer than the {MAX_TAG_VALUE_CHARS} characters an AWS tag value holds: shorten it"
                ),
            ));
        }
        Ok([
            (
                TAG_EXPIRES_ON,
                payload.expires_on().unix_timestamp().to_string(),
            ),
            (TAG_EXPIRES_AT, payload.expires_at_rfc3339()),
            (TAG_MANAGED_BY, payload.managed_by().to_owned()),
        ]
        .into_iter()
        .map(|(key, value)| Tag::builder().key(key).value(value).build())
        .collect())
    }

    async fn create(
        &self,
        name: &str,
        payload: &TokenPayload,
        tags: Vec<Tag>,
    ) -> Result<(), SdkError<aws_sdk_secretsmanager::operation::create_secret::CreateSecretError>>
    {
        self.client
            .create_secret()
            .name(name)
            .description("Access token written by secret-sync")
            .secret_string(payload.encode().expose_secret())
            .client_request_token(version_id(name, payload))
            .set_kms_key_id(self.options.kms_key_id.clone())
            .set_tags(Some(tags))
            .send()
            .await
            .map(|_| ())
    }

    /// `CreateSecret`; when a secret of that name appeared since it was read
    /// (`ResourceExistsException`), what `DescribeSecret` says about it now, for the rule.
    async fn create_or_describe(
        &self,
        name: &str,
        payload: &TokenPayload,
        tags: &[Tag],
    ) -> Result<Option<SecretMetadata>, BackendError> {
        match self.create(name, payload, tags.to_vec()).await {
            Ok(()) => {
                tracing::debug!(backend = %self.backend, secret = name, "created the secret");
                Ok(None)
            }
            // Created by someone else since it was read: the rule decides on what is there.
            Err(err) if err.code() == Some("ResourceExistsException") => {
                let out = self
                    .describe(name)
                    .await?
                    .ok_or_else(|| self.sdk_error(name, "CreateSecret", err))?;
                self.check_not_deleted(name, &out)?;
                Ok(Some(described(&out)))
            }
            Err(err) => Err(self.sdk_error(name, "CreateSecret", err)),
        }
    }

    /// Stores a new version (`PutSecretValue`) and then the tags (`TagResource`), or only the
    /// tags when `current` (what a `DescribeSecret` said) shows the value is already the
    /// payload's, or nothing when the tags are the payload's too. When the tags fail the older
    /// expiry stays, so the token is only refreshed early, never late.
    async fn update(
        &self,
        name: &str,
        current: &SecretMetadata,
        payload: &TokenPayload,
        tags: Vec<Tag>,
    ) -> Result<WriteOutcome, BackendError> {
        let same_tags = current.expires_on == Some(payload.expires_on())
            && current.managed_by.as_deref() == Some(payload.managed_by());
        let holds = match current_holds(name, current.version.as_deref(), payload) {
            Some(holds) => holds,
            // A version someone else made (or an older secret-sync): the same token can only be
            // there with the expiry it was written with, so the value is read only then.
            None if current.expires_on == Some(payload.expires_on()) => {
                self.holds(name, payload).await?
            }
            None => false,
        };
        if holds {
            if same_tags {
                return Ok(WriteOutcome::Unchanged);
            }
        } else {
            self.client
                .put_secret_value()
                .secret_id(name)
                .secret_string(payload.encode().expose_secret())
                .client_request_token(version_id(name, payload))
                .send()
                .await
                .map_err(|e| self.sdk_error(name, "PutSecretValue", e))?;
        }
        self.client
            .tag_resource()
            .secret_id(name)
            .set_tags(Some(tags))
            .send()
            .await
            .map_err(|e| self.sdk_error(name, "TagResource", e))?;
        Ok(WriteOutcome::Updated)
    }

    /// Whether the current value is exactly what `payload` would store (compared, never logged).
    async fn holds(&self, name: &str, payload: &TokenPayload) -> Result<bool, BackendError> {
        let current = match self.get_value(name).await {
            Ok(value) => value,
            // A secret created without a value (no AWSCURRENT version) holds nothing yet.
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        Ok(current.expose_secret() == payload.encode().expose_secret())
    }

    async fn get_value(&self, name: &str) -> Result<SecretString, BackendError> {
        let out = self
            .client
            .get_secret_value()
            .secret_id(name)
            .version_stage("AWSCURRENT")
            .send()
            .await
            .map_err(|e| self.sdk_error(name, "GetSecretValue", e))?;
        match out.secret_string() {
            Some(value) => Ok(SecretString::from(value)),
            None => Err(self.error(
                ErrorKind::InvalidValue,
                name,
                "the secret holds a binary value (SecretBinary), not text: store the value as a string",
            )),
        }
    }
}

#[async_trait::async_trait]
impl SecretStore for AwsStore {
    fn backend(&self) -> &str {
        &self.backend
    }

    fn check_name(&self, name: &str) -> Result<(), BackendError> {
        check_name(&self.backend, name)
    }

    fn max_value_bytes(&self) -> usize {
        MAX_VALUE_BYTES
    }

    async fn read(&self, name: &str, field: Option<&str>) -> Result<SecretString, BackendError> {
        self.check_name(name)?;
        let value = self.get_value(name).await?;
        pick_field(&self.backend, name, value, field)
    }

    async fn metadata(&self, name: &str) -> Result<Option<SecretMetadata>, BackendError> {
        self.check_name(name)?;
        let Some(out) = self.describe(name).await? else {
            return Ok(None);
        };
        self.check_not_deleted(name, &out)?;
        Ok(Some(described(&out)))
    }

    async fn write(
        &self,
        name: &str,
        payload: &TokenPayload,
        precondition: &WritePrecondition,
    ) -> Result<WriteOutcome, BackendError> {
        self.check_write(name, payload)?;
        let tags = self.tags(name, payload)?;
        let current = match precondition.seen() {
            // The caller's DescribeSecret saw no secret: create it straight away. CreateSecret
            // fails if one appeared since, which a DescribeSecret first would not close.
            Some(None) => match self.create_or_describe(name, payload, &tags).await? {
                Some(current) => current,
                None => return Ok(WriteOutcome::Created),
            },
            // The caller's DescribeSecret saw it: that read is what the rule and the
            // identical-token check go by (PutSecretValue has no precondition, so a second
            // DescribeSecret would narrow the window by one round trip, not close it).
            Some(Some(seen)) => seen.clone(),
            None => match self.describe(name).await? {
                Some(out) => {
                    self.check_not_deleted(name, &out)?;
                    described(&out)
                }
                None => match self.create_or_describe(name, payload, &tags).await? {
                    Some(current) => current,
                    None => return Ok(WriteOutcome::Created),
                },
            },
        };
        precondition.check(&self.backend, name, Some(&current), payload.managed_by())?;
        let outcome = match self.update(name, &current, payload, tags.clone()).await {
            // Deleted for good since it was read: create it again, conditionally as any create.
            Err(err) if err.kind() == ErrorKind::NotFound => {
                match self.create_or_describe(name, payload, &tags).await? {
                    None => WriteOutcome::Created,
                    Some(now) => {
                        precondition.check(
                            &self.backend,
                            name,
                            Some(&now),
                            payload.managed_by(),
                        )?;
                        self.update(name, &now, payload, tags).await?
                    }
                }
            }
            outcome => outcome?,
        };
        tracing::debug!(backend = %self.backend, secret = name, %outcome, "wrote the secret");
        Ok(outcome)
    }
    async fn read_stored(
        &self,
        name: &str,
        field: Option<&str>,
    ) -> Result<StoredValue, BackendError> {
        self.check_name(name)?;
        let Some(current) = self.current_value(name).await? else {
            return Err(self.error(
                ErrorKind::NotFound,
                name,
                "the secret does not exist or has no current value: check the name and the region",
            ));
        };
        let (value, record) = match field {
            Some(field) => {
                let map = parse_document(&self.backend, name, current.text.expose_secret(), field)?;
                (
                    pick_from_map(&self.backend, name, &map, field)?,
                    CredentialRecord::from_siblings(&map, field),
                )
            }
            None => {
                let out = self.describe(name).await?;
                let record = out
                    .map(|out| record_from_tags(&out, &current.version_id))
                    .unwrap_or_default();
                (current.text, record)
            }
        };
        Ok(StoredValue {
            value,
            record,
            metadata: SecretMetadata {
                version: Some(current.version_id),
                updated_on: current.created,
                ..SecretMetadata::default()
            },
        })
    }

    async fn write_value(
        &self,
        name: &str,
        field: Option<&str>,
        value: &SecretValue,
        record: &CredentialRecord,
        precondition: &WritePrecondition,
    ) -> Result<WriteOutcome, BackendError> {
        self.check_write_value(name, field, value, record)?;
        let current = self.current_value(name).await?;
        precondition.check_unchanged(
            &self.backend,
            name,
            current.as_ref().map(|c| Some(c.version_id.as_str())),
        )?;
        let text = match field {
            Some(field) => {
                let mut map = match &current {
                    Some(c) => parse_document(&self.backend, name, c.text.expose_secret(), field)?,
                    None => serde_json::Map::new(),
                };
                let before = map.clone();
                set_field(&mut map, field, value, record);
                if current.is_some() && map == before {
                    return Ok(WriteOutcome::Unchanged);
                }
                serde_json::Value::Object(map).to_string()
            }
            None => value.secret().expose_secret().to_owned(),
        };
        check_size(&self.backend, name, text.len(), MAX_VALUE_BYTES)?;
        // A fresh id for the new version: the SDK's retries of one call reuse it, so they never
        // make two versions; a whole value's record tag names it before it exists.
        let new_version = format!("value-{}", uuid::Uuid::new_v4().simple());
        let record_tags = match field {
            Some(_) => None,
            None => Some(record_tags(record, &new_version)),
        };
        let Some(current) = current else {
            // Nothing was there: CreateSecret, which fails if a secret appeared since.
            let created = self
                .client
                .create_secret()
                .name(name)
                .secret_string(&text)
                .client_request_token(&new_version)
                .set_kms_key_id(self.options.kms_key_id.clone())
                .set_tags(record_tags.map(|(set, _)| set))
                .send()
                .await;
            return match created {
                Ok(_) => Ok(WriteOutcome::Created),
                Err(err) if err.code() == Some("ResourceExistsException") => {
                    Err(changed_since_read(&self.backend, name))
                }
                Err(err) => Err(self.sdk_error(name, "CreateSecret", err)),
            };
        };
        // A whole value: its record goes in the tags first, naming the new version, so until
        // the version is current (and if it never becomes so) it reads as no record.
        let old_tags = match &record_tags {
            Some((set, unset)) => {
                let out = self
                    .describe(name)
                    .await?
                    .ok_or_else(|| changed_since_read(&self.backend, name))?;
                self.check_not_deleted(name, &out)?;
                if current.text.expose_secret() == text
                    && record_from_tags(&out, &current.version_id) == *record
                {
                    return Ok(WriteOutcome::Unchanged);
                }
                let old: Vec<Tag> = out
                    .tags()
                    .iter()
                    .filter(|t| t.key().is_some_and(|k| RECORD_TAGS.contains(&k)))
                    .cloned()
                    .collect();
                self.set_tags(name, set.clone(), unset.clone()).await?;
                Some(old)
            }
            None => None,
        };
        let committed = self
            .put_and_promote(name, &text, &new_version, &current.version_id)
            .await;
        if let Err(err) = committed {
            if let Some(old) = old_tags {
                let unset = RECORD_TAGS
                    .iter()
                    .filter(|key| !old.iter().any(|t| t.key() == Some(**key)))
                    .map(|key| (*key).to_owned())
                    .collect();
                if let Err(e) = self.set_tags(name, old, unset).await {
                    tracing::warn!(backend = %self.backend, secret = name, error = %e,
                        "cannot restore the record tags after a failed value write");
                }
            }
            return Err(err);
        }
        Ok(WriteOutcome::Updated)
    }
}

/// Maps a Secrets Manager error code (or, without one, the HTTP status) to a kind and advice.
fn classify(code: &str, status: u16, aws_message: &str, name: &str) -> (ErrorKind, String) {
    match code {
        "ResourceNotFoundException" => (
            ErrorKind::NotFound,
            "no such secret in this account and region: check the name, region and account".to_owned(),
        ),
        "InvalidRequestException" if aws_message.contains("deletion") => (
            ErrorKind::Conflict,
            format!(
                "the secret is scheduled for deletion: restore it with \
                 `aws secretsmanager restore-secret --secret-id {name}`, or pick another name"
            ),
        ),
        "InvalidRequestException" | "InvalidParameterException" | "ResourceExistsException" => (
            ErrorKind::Conflict,
            "the request conflicts with the secret's current state".to_owned(),
        ),
        "LimitExceededException" => (
            ErrorKind::Conflict,
            "a Secrets Manager quota was reached (e.g. too many versions): wait or raise the quota".to_owned(),
        ),
        "ThrottlingException" | "TooManyRequestsException" | "RequestLimitExceeded" => (
            ErrorKind::Throttled,
            "Secrets Manager throttled the requests even after retries: write less often or raise max_attempts".to_owned(),
        ),
        "AccessDeniedException" | "AccessDenied" => (
            ErrorKind::Forbidden,
            "the credentials lack permission: allow secretsmanager:DescribeSecret, GetSecretValue, \
             CreateSecret, PutSecretValue and TagResource on this secret"
                .to_owned(),
        ),
        "DecryptionFailure" | "EncryptionFailure" | "KMSAccessDeniedException" => (
            ErrorKind::Forbidden,
            "the secret's KMS key cannot be used: allow kms:Decrypt/kms:GenerateDataKey on it, or check kms_key_id".to_owned(),
        ),
        "UnrecognizedClientException"
        | "InvalidClientTokenId"
        | "InvalidSignatureException"
        | "SignatureDoesNotMatch"
        | "IncompleteSignature"
        | "MissingAuthenticationToken"
        | "ExpiredTokenException"
        | "ExpiredToken" => (
            ErrorKind::Unauthorized,
            "AWS refused the credentials: check the access key, secret key and session token, or refresh them".to_owned(),
        ),
        "InternalServiceError" | "InternalFailure" | "ServiceUnavailable" => (
            ErrorKind::Unavailable,
            "Secrets Manager failed temporarily: try again later".to_owned(),
        ),
        _ => match status {
            401 => (ErrorKind::Unauthorized, "check the AWS credentials".to_owned()),
            403 => (ErrorKind::Forbidden, "check the IAM permissions".to_owned()),
            429 => (ErrorKind::Throttled, "try again later".to_owned()),
            500..=599 => (ErrorKind::Unavailable, "try again later".to_owned()),
            _ => (
                ErrorKind::Protocol,
                "unexpected answer from Secrets Manager".to_owned(),
            ),
        },
    }
}

/// The tags of a whole value's credential record, and the one naming the version it describes.
pub const TAG_KEY_ID: &str = "secret-sync:key-id";
/// See [`TAG_KEY_ID`].
pub const TAG_KEY_EXPIRES_ON: &str = "secret-sync:key-expires-on";
/// See [`TAG_KEY_ID`].
pub const TAG_PREVIOUS_KEY_ID: &str = "secret-sync:previous-key-id";
/// See [`TAG_KEY_ID`].
pub const TAG_RETIRE_PREVIOUS_ON: &str = "secret-sync:retire-previous-on";
/// See [`TAG_KEY_ID`].
pub const TAG_INSTALLATION: &str = "secret-sync:installation";
/// The version id (`ClientRequestToken`) the record tags describe.
pub const TAG_RECORD_VERSION: &str = "secret-sync:record-version";

/// Every record tag, in [`CredentialRecord`] field order, then [`TAG_RECORD_VERSION`].
const RECORD_TAGS: [&str; 6] = [
    TAG_KEY_ID,
    TAG_KEY_EXPIRES_ON,
    TAG_PREVIOUS_KEY_ID,
    TAG_RETIRE_PREVIOUS_ON,
    TAG_INSTALLATION,
    TAG_RECORD_VERSION,
];

/// The staging label a value written back has until `AWSCURRENT` is moved to it (not
/// `AWSPENDING`, which a rotation Lambda of the secret would take for its own).
pub const PENDING_STAGE: &str = "secret-sync-pending";

/// The tags to set for `record` describing version `version`, and the record tags to remove
/// (fields not recorded).
fn record_tags(record: &CredentialRecord, version: &str) -> (Vec<Tag>, Vec<String>) {
    let mut set = Vec::new();
    let mut unset = Vec::new();
    for ((_, text), key) in record.entries().into_iter().zip(RECORD_TAGS) {
        match text {
            Some(text) => set.push(Tag::builder().key(key).value(text).build()),
            None => unset.push(key.to_owned()),
        }
    }
    set.push(
        Tag::builder()
            .key(TAG_RECORD_VERSION)
            .value(version)
            .build(),
    );
    (set, unset)
}

/// The record in the tags of `out`, if they describe version `current`; else an empty record.
fn record_from_tags(out: &DescribeSecretOutput, current: &str) -> CredentialRecord {
    if tag(out, TAG_RECORD_VERSION) != Some(current) {
        return CredentialRecord::default();
    }
    let bases = crate::value::RECORD_FIELDS;
    CredentialRecord::from_lookup(|base| {
        let at = bases.iter().position(|b| *b == base)?;
        tag(out, RECORD_TAGS[at]).map(str::to_owned)
    })
}

/// The current value of a secret, with its version id.
struct CurrentValue {
    text: SecretString,
    version_id: String,
    created: Option<OffsetDateTime>,
}

impl AwsStore {
    /// `GetSecretValue` of `AWSCURRENT`; `None` when the secret does not exist (or has no
    /// current value).
    async fn current_value(&self, name: &str) -> Result<Option<CurrentValue>, BackendError> {
        // AWSCURRENT named explicitly: AWS's default, and moto (which the tests run against)
        // otherwise keeps answering the version that was current before a stage move.
        let out = match self
            .client
            .get_secret_value()
            .secret_id(name)
            .version_stage("AWSCURRENT")
            .send()
            .await
        {
            Ok(out) => out,
            Err(err) if err.code() == Some("ResourceNotFoundException") => return Ok(None),
            Err(err) => return Err(self.sdk_error(name, "GetSecretValue", err)),
        };
        let Some(text) = out.secret_string() else {
            return Err(self.error(
                ErrorKind::InvalidValue,
                name,
                "the secret holds a binary value (SecretBinary), not text: store the value as a string",
            ));
        };
        let Some(version_id) = out.version_id() else {
            return Err(self.error(
                ErrorKind::Protocol,
                name,
                "GetSecretValue answered without a version id",
            ));
        };
        Ok(Some(CurrentValue {
            text: SecretString::from(text),
            version_id: version_id.to_owned(),
            created: out.created_date().and_then(to_offset),
        }))
    }

    /// `TagResource` with `set`, then `UntagResource` of `unset` (when any).
    async fn set_tags(
        &self,
        name: &str,
        set: Vec<Tag>,
        unset: Vec<String>,
    ) -> Result<(), BackendError> {
        if !set.is_empty() {
            self.client
                .tag_resource()
                .secret_id(name)
                .set_tags(Some(set))
                .send()
                .await
                .map_err(|e| self.sdk_error(name, "TagResource", e))?;
        }
        if !unset.is_empty() {
            self.client
                .untag_resource()
                .secret_id(name)
                .set_tag_keys(Some(unset))
                .send()
                .await
                .map_err(|e| self.sdk_error(name, "UntagResource", e))?;
        }
        Ok(())
    }

    /// Stores `text` as version `new_version` labelled [`PENDING_STAGE`] only (not current),
    /// then moves `AWSCURRENT` to it from `read_version`, which Secrets Manager refuses
    /// (`InvalidParameterException`) when `AWSCURRENT` is no longer there: someone wrote
    /// since the read. That move is the commit point; before it the current value is the old
    /// one. The pending label is removed afterwards (best effort).
    async fn put_and_promote(
        &self,
        name: &str,
        text: &str,
        new_version: &str,
        read_version: &str,
    ) -> Result<(), BackendError> {
        self.client
            .put_secret_value()
            .secret_id(name)
            .secret_string(text)
            .client_request_token(new_version)
            .version_stages(PENDING_STAGE)
            .send()
            .await
            .map_err(|e| self.sdk_error(name, "PutSecretValue", e))?;
        let moved = self
            .client
            .update_secret_version_stage()
            .secret_id(name)
            .version_stage("AWSCURRENT")
            .move_to_version_id(new_version)
            .remove_from_version_id(read_version)
            .send()
            .await;
        let result = match moved {
            Ok(_) => Ok(()),
            Err(err) if err.code() == Some("InvalidParameterException") => {
                Err(changed_since_read(&self.backend, name))
            }
            Err(err) => Err(self.sdk_error(name, "UpdateSecretVersionStage", err)),
        };
        let unlabelled = self
            .client
            .update_secret_version_stage()
            .secret_id(name)
            .version_stage(PENDING_STAGE)
            .remove_from_version_id(new_version)
            .send()
            .await;
        if let Err(err) = unlabelled {
            let err = self.sdk_error(name, "UpdateSecretVersionStage", err);
            tracing::debug!(backend = %self.backend, secret = name, error = %err,
                "cannot remove the pending label of the version written");
        }
        result
    }
}

/// What `DescribeSecret` says about a secret, as [`SecretMetadata`].
fn described(out: &DescribeSecretOutput) -> SecretMetadata {
    let current_version = out.version_ids_to_stages().and_then(|versions| {
        versions
            .iter()
            .find(|(_, stages)| stages.iter().any(|s| s == "AWSCURRENT"))
            .map(|(id, _)| id.clone())
    });
    SecretMetadata {
        expires_on: tag(out, TAG_EXPIRES_ON)
            .and_then(|s| s.trim().parse().ok())
            .and_then(crate::unix_time),
        managed_by: tag(out, TAG_MANAGED_BY).map(str::to_owned),
        version: current_version,
        updated_on: out.last_changed_date().and_then(to_offset),
    }
}

/// The value of tag `key` on the described secret.
fn tag<'a>(out: &'a DescribeSecretOutput, key: &str) -> Option<&'a str> {
    out.tags()
        .iter()
        .find(|t| t.key() == Some(key))
        .and_then(Tag::value)
}

/// Caps every answer the SDK reads at [`MAX_ANSWER_BYTES`] (a secret value is at most 64 KiB):
/// the SDK reads a body whole before parsing it, so its body is swapped for one that fails
/// past the cap, before deserialization starts.
#[derive(Debug)]
struct CapAnswers;

impl aws_sdk_secretsmanager::config::Intercept for CapAnswers {
    fn name(&self) -> &'static str {
        "CapAnswers"
    }

    fn modify_before_deserialization(
        &self,
        context: &mut aws_sdk_secretsmanager::config::interceptors::BeforeDeserializationInterceptorContextMut<'_>,
        _runtime_components: &aws_sdk_secretsmanager::config::RuntimeComponents,
        _cfg: &mut aws_sdk_secretsmanager::config::ConfigBag,
    ) -> Result<(), aws_smithy_types::body::Error> {
        let body = context.response_mut().take_body();
        *context.response_mut().body_mut() = SdkBody::from_body_1_x(CappedBody {
            inner: Box::pin(body),
            read: 0,
            limit: MAX_ANSWER_BYTES,
        });
        Ok(())
    }
}

/// An SDK body that fails once more than `limit` bytes have come.
struct CappedBody {
    inner: std::pin::Pin<Box<SdkBody>>,
    read: usize,
    limit: usize,
}

impl http_body::Body for CappedBody {
    type Data = bytes::Bytes;
    type Error = aws_smithy_types::body::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = self.inner.as_mut().poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.read = self.read.saturating_add(data.len());
            if self.read > self.limit {
                let limit = self.limit;
                return std::task::Poll::Ready(Some(Err(Box::new(BodyTooLarge { limit }))));
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// `None` for a time outside the years 1 to 9999 (see [`crate::stored_time`]).
fn to_offset(date: &DateTime) -> Option<OffsetDateTime> {
    crate::unix_time(date.secs())
}

/// Hex digits of a version id that fingerprint its value ([`version_id`]).
const FINGERPRINT_HEX: usize = 32;

/// The `ClientRequestToken` of a write, which Secrets Manager makes the new version's id: 32
/// hex digits that fingerprint the stored value, then 32 random ones (64 in all, the most AWS
/// takes). The SDK's retries of one call reuse it, so a retried write never makes a second
/// version; the random half makes every write a new id, so a write is never taken for a
/// retry of an earlier one. The fingerprint lets a `DescribeSecret` (which gives the current
/// version's id, not its value) tell whether the current value is the payload's
/// ([`current_holds`]) without `GetSecretValue`: a version's value never changes, and AWS
/// refuses a second value under an id it already has.
///
/// The fingerprint is the first 128 bits of SHA-256 over a fixed label, the secret's name and
/// the value: it says nothing of a token to someone who reads version ids (DescribeSecret,
/// ListSecretVersionIds, CloudTrail) but not values, except whether a token they already hold
/// is the one stored (docs/security.md).
fn version_id(name: &str, payload: &TokenPayload) -> String {
    let mut id = fingerprint(name, payload);
    id.push_str(&uuid::Uuid::new_v4().simple().to_string());
    id
}

fn fingerprint(name: &str, payload: &TokenPayload) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    hash.update(b"secret-sync aws-secrets-manager version v1\0");
    hash.update(name.as_bytes());
    hash.update(b"\0");
    hash.update(payload.encode().expose_secret().as_bytes());
    hash.finalize()[..FINGERPRINT_HEX / 2]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether the current version (its id, as `DescribeSecret` gives it) holds the payload's
/// value: `Some` for an id [`version_id`] made, `None` for one it did not (another writer's,
/// an older secret-sync's) or no current version.
fn current_holds(name: &str, version: Option<&str>, payload: &TokenPayload) -> Option<bool> {
    let version = version?;
    let ours = version.len() == 2 * FINGERPRINT_HEX
        && version
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    ours.then(|| version[..FINGERPRINT_HEX] == fingerprint(name, payload))
}

/// Validates the options that can be checked without the network.
/// The AWS Secrets Manager naming rule, without a store (e.g. to validate a config):
/// what [`SecretStore::check_name`] of an [`AwsStore`] named `backend` checks.
pub fn check_name(backend: &str, name: &str) -> Result<(), BackendError> {
    let valid_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/_+=.@-".contains(c));
    if name.is_empty() || name.len() > MAX_NAME_CHARS || !valid_chars {
        return Err(BackendError::new(
            ErrorKind::InvalidName,
            backend,
            format!(
                "an AWS secret name is 1 to {MAX_NAME_CHARS} characters of A-Z a-z 0-9 / _ + = . @ -: \
                 rename the secret (use the name, not the ARN)"
            ),
        )
        .with_secret(name));
    }
    Ok(())
}

fn check_options(backend: &str, options: &AwsOptions) -> Result<(), BackendError> {
    let invalid = |message: String| BackendError::new(ErrorKind::InvalidConfig, backend, message);
    if options.max_attempts == 0 {
        return Err(invalid("max_attempts must be at least 1".to_owned()));
    }
    if let Some(raw) = &options.endpoint_url {
        let url = url::Url::parse(raw).map_err(|e| {
            invalid(format!(
                "endpoint_url \"{raw}\" is not a URL ({e}): use e.g. https://secretsmanager.eu-west-1.amazonaws.com"
            ))
        })?;
        let loopback = match url.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(host)) => host == "localhost",
            None => false,
        };
        match url.scheme() {
            "https" => {}
            "http" if loopback => {}
            _ => {
                return Err(invalid(format!(
                    "endpoint_url \"{raw}\" must use https (plain http is accepted only for a loopback test server)"
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The race the stage move closes, made deterministic: someone makes another version
    /// current after the write's own read. PutSecretValue leaves the current value alone
    /// (pending only), the move from the version read is refused (Conflict), and the other
    /// writer's value stays current (through moto).
    #[tokio::test]
    async fn the_stage_move_refuses_a_version_that_is_no_longer_current() {
        use aws_sdk_secretsmanager::config::{Credentials, SharedCredentialsProvider};
        let moto = testkit::real::Moto::start();
        let config = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("eu-west-1"))
            .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
                "AKIDTEST",
                "test-secret",
                None,
                None,
                "test",
            )))
            .build();
        let options = AwsOptions {
            endpoint_url: Some(moto.endpoint_url()),
            ..AwsOptions::default()
        };
        let store = AwsStore::with_sdk_config("aws-test", options, &config).unwrap();
        let value = |s: &str| SecretValue::new(SecretString::from(s)).unwrap();
        let none = CredentialRecord::default();
        let name = "stage-move";
        store
            .write_value(
                name,
                None,
                &value("first"),
                &none,
                &WritePrecondition::unread(true),
            )
            .await
            .unwrap();
        let read = store.current_value(name).await.unwrap().unwrap();
        store
            .write_value(
                name,
                None,
                &value("theirs"),
                &none,
                &WritePrecondition::unread(true),
            )
            .await
            .unwrap();
        let err = store
            .put_and_promote(
                name,
                "mine",
                "value-00000000000000000000000000000001",
                &read.version_id,
            )
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
        assert!(!format!("{err} {err:?}").contains("mine"), "{err}");
        let now = store.current_value(name).await.unwrap().unwrap();
        assert_eq!(now.text.expose_secret(), "theirs");
        // and from the version that is current, the same move succeeds
        store
            .put_and_promote(
                name,
                "mine",
                "value-00000000000000000000000000000002",
                &now.version_id,
            )
            .await
            .unwrap();
        let now = store.current_value(name).await.unwrap().unwrap();
        assert_eq!(now.text.expose_secret(), "mine");
    }

    #[test]
    fn error_codes_map_to_kinds_with_advice() {
        let cases = [
            ("ResourceNotFoundException", 400, "", ErrorKind::NotFound),
            (
                "ThrottlingException",
                400,
                "Rate exceeded",
                ErrorKind::Throttled,
            ),
            ("AccessDeniedException", 400, "", ErrorKind::Forbidden),
            ("DecryptionFailure", 400, "", ErrorKind::Forbidden),
            (
                "UnrecognizedClientException",
                400,
                "",
                ErrorKind::Unauthorized,
            ),
            ("InternalServiceError", 500, "", ErrorKind::Unavailable),
            ("", 503, "", ErrorKind::Unavailable),
            ("", 403, "", ErrorKind::Forbidden),
            ("SomethingNew", 400, "", ErrorKind::Protocol),
        ];
        for (code, status, message, kind) in cases {
            assert_eq!(
                classify(code, status, message, "a/b").0,
                kind,
                "{code} {status}"
            );
        }
        let (kind, advice) = classify(
            "InvalidRequestException",
            400,
            "You can't perform this operation on the secret because it was marked for deletion.",
            "graph/token",
        );
        assert_eq!(kind, ErrorKind::Conflict);
        assert!(
            advice.contains("aws secretsmanager restore-secret --secret-id graph/token"),
            "{advice}"
        );
    }

    #[test]
    fn a_version_id_fingerprints_the_value_of_that_secret_only() {
        let at = time::macros::datetime!(2026-11-24 06:00 UTC);
        let make = |token: &str, format| {
            TokenPayload::new(
                SecretString::from(token),
                "Bearer",
                at,
                "secret-sync",
                format,
            )
            .unwrap()
        };
        let raw = make("eyJ0eXAiOiJKV1QifQ.a.sig", crate::Format::Raw);
        let id = version_id("graph/token", &raw);
        assert_eq!(id.len(), 64, "{id}");
        assert_ne!(id, version_id("graph/token", &raw), "every write a new id");
        assert!(!id.contains("eyJ0eXAiOiJKV1QifQ"), "{id}");
        assert_eq!(current_holds("graph/token", Some(&id), &raw), Some(true));
        // Another value, the same value under another name, and ids secret-sync did not make.
        let other = make("eyJ0eXAiOiJKV1QifQ.b.sig", crate::Format::Raw);
        assert_eq!(current_holds("graph/token", Some(&id), &other), Some(false));
        assert_eq!(current_holds("graph/other", Some(&id), &raw), Some(false));
        let json = make("eyJ0eXAiOiJKV1QifQ.a.sig", crate::Format::Json);
        assert_eq!(current_holds("graph/token", Some(&id), &json), Some(false));
        for foreign in [
            "8a9f6c1e-3b2d-4e5f-9a8b-7c6d5e4f3a2b",
            &id.to_uppercase(),
            &id[..63],
        ] {
            assert_eq!(current_holds("graph/token", Some(foreign), &raw), None);
        }
        assert_eq!(current_holds("graph/token", None, &raw), None);
    }

    #[test]
    fn endpoint_url_must_be_https_unless_loopback() {
        let with = |url: &str| AwsOptions {
            endpoint_url: Some(url.to_owned()),
            ..AwsOptions::default()
        };
        for ok in [
            "https://secretsmanager.eu-west-1.amazonaws.com",
            "http://127.0.0.1:4566",
            "http://localhost:4566",
            "http://[::1]:4566",
        ] {
            assert!(check_options("aws", &with(ok)).is_ok(), "{ok}");
        }
        for bad in ["http://10.0.0.5:4566", "ftp://127.0.0.1", "not a url"] {
            let err = check_options("aws", &with(bad)).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{bad}");
        }
        let zero = AwsOptions {
            max_attempts: 0,
            ..AwsOptions::default()
        };
        assert_eq!(
            check_options("aws", &zero).unwrap_err().kind(),
            ErrorKind::InvalidConfig
        );
    }
}
