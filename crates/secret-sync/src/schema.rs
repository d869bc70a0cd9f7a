//! `secret-sync schema`: a JSON Schema (draft 7) of the config file, for editor completion and
//! checks (e.g. Even Better TOML / taplo: `#:schema ./secret-sync.schema.json` at the top of
//! the file).
//!
//! Written by hand, beside the loader: the tests below check that every table of the schema
//! lists exactly the keys the loader accepts (`config::load::keys`), that every property has a
//! description (what an editor shows on hover), and that every example config in config/ and
//! every complete TOML example in README.md and docs/ validates against it, as an editor would
//! check them. It carries the rules a schema can express (tenant and client id shapes, the
//! multi-tenant aliases refused, Key Vault vault names, https for Vault and Key Vault off
//! loopback). The loader stays the authority: it also checks what a schema cannot (one
//! credential per job, names valid per backend, references, duplicate targets).
//!
//! Draft 7 ignores every keyword beside a `$ref`, so a description written beside one is
//! moved, with the `$ref`, into an `allOf` ([`draft07`]) before the schema is printed.

use serde_json::{Value, json};

use crate::failure::Failure;

pub fn run() -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(&schema())
        .map_err(|err| Failure::failed(anyhow::Error::new(err)))?;
    println!("{text}");
    Ok(())
}

/// The schema of the config file.
pub fn schema() -> Value {
    let mut schema = authored();
    draft07(&mut schema);
    schema
}

/// Draft 7 ignores the keywords beside a `$ref`: an object holding a `$ref` and anything else
/// (a description) becomes those keywords plus `allOf: [{ "$ref": ... }]`, everywhere.
fn draft07(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for child in map.values_mut() {
                draft07(child);
            }
            if map.len() > 1
                && let Some(reference) = map.remove("$ref")
            {
                map.insert("allOf".to_owned(), json!([{ "$ref": reference }]));
            }
        }
        Value::Array(items) => items.iter_mut().for_each(draft07),
        _ => {}
    }
}

/// A GUID, as Entra ID writes directory (tenant) and application (client) ids.
const GUID: &str = "^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$";

/// A tenant: a GUID or a domain name (so not `common`, `organizations` or `consumers`, where
/// Entra ID refuses client credentials).
const TENANT: &str = "^([0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}|([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.)+[A-Za-z]{2,63})$";

/// https, or plain http to a loopback address (tests, emulators).
const HTTPS_OR_LOOPBACK: &str =
    "^(https://|http://(127\\.[0-9]+\\.[0-9]+\\.[0-9]+|localhost|\\[::1\\])(:[0-9]+)?(/|$))";

/// An Azure Key Vault's name: 3-24 letters, digits and single dashes, starting with a letter
/// and not ending with a dash.
const VAULT_NAME: &str = "^[A-Za-z](-?[A-Za-z0-9])+$";

/// The schema as written, descriptions beside `$ref`s (see [`draft07`]).
fn authored() -> Value {
    json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "secret-sync configuration",
        "description": "Jobs that keep Microsoft Entra ID access tokens fresh in secret stores. See docs/configuration.md.",
        "type": "object",
        "additionalProperties": false,
        "required": ["jobs"],
        "properties": {
            "settings": {
                "description": "Defaults for every job and backend: refresh_before, concurrency, authority, pass_timeout, the daemon's listen address.",
                "$ref": "#/definitions/settings"
            },
            "backends": {
                "description": "Secret stores, by name. A job's targets and `from` references name them.",
                "type": "object",
                "propertyNames": { "$ref": "#/definitions/name" },
                "additionalProperties": { "$ref": "#/definitions/backend" }
            },
            "jobs": {
                "description": "One token each, and where it goes, by name (`run --job NAME`).",
                "type": "object",
                "minProperties": 1,
                "propertyNames": { "$ref": "#/definitions/name" },
                "additionalProperties": { "$ref": "#/definitions/job" }
            }
        },
        "definitions": definitions()
    })
}

/// The shared pieces, in a few `json!` blocks (one would exceed the macro recursion limit).
fn definitions() -> Value {
    let mut definitions = serde_json::Map::new();
    for part in [
        json!({
        "name": {
            "description": "A job or backend name: 1-64 letters, digits, - and _.",
            "type": "string",
            "pattern": "^[A-Za-z0-9_-]{1,64}$"
        },
        "duration": {
            "description": "A duration with a unit: \"15m\", \"90s\", \"1h 30m\".",
            "type": "string",
            "pattern": "^\\s*[0-9]"
        },
        "path": {
            "description": "A file path; a relative path is taken from the config file's directory.",
            "type": "string",
            "minLength": 1
        },
        "env_name": {
            "description": "The name of an environment variable, read when it is needed (a missing one is a usage error, exit 2).",
            "type": "string",
            "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"
        },
        "env": {
            "description": "Read from this environment variable.",
            "type": "object",
            "additionalProperties": false,
            "required": ["env"],
            "properties": {
                "env": {
                    "description": "The environment variable that holds the value.",
                    "$ref": "#/definitions/env_name"
                }
            }
        },
        "file": {
            "description": "Read from this file (one trailing newline is dropped).",
            "type": "object",
            "additionalProperties": false,
            "required": ["file"],
            "properties": {
                "file": {
                    "description": "The file that holds the value (read each time it is needed).",
                    "$ref": "#/definitions/path"
                }
            }
        },
        "from": {
            "description": "Read from a configured backend: `ref` is NAME or NAME#FIELD inside it.",
            "type": "object",
            "additionalProperties": false,
            "required": ["from", "ref"],
            "properties": {
                "from": {
                    "description": "The backend to read from (a [backends.NAME] table).",
                    "$ref": "#/definitions/name"
                },
                "ref": {
                    "description": "The secret in that backend, NAME or NAME#FIELD (a field of a JSON value), e.g. \"apps/graph#client_secret\".",
                    "type": "string",
                    "minLength": 1
                }
            }
        },
        "secret": {
            "description": "Where a secret is. A secret is never written in the file itself.",
            "oneOf": [
                { "$ref": "#/definitions/env" },
                { "$ref": "#/definitions/file" },
                { "$ref": "#/definitions/from" }
            ]
        },
        "backend_secret": {
            "description": "Where a backend's login secret is (not in another backend).",
            "oneOf": [
                { "$ref": "#/definitions/env" },
                { "$ref": "#/definitions/file" }
            ]
        },
        "tenant_id": {
            "description": "Directory (tenant) id: a GUID or a verified domain such as contoso.onmicrosoft.com (not common, organizations or consumers: Entra ID refuses client credentials there), or where to read it at run time.",
            "oneOf": [
                { "type": "string", "pattern": TENANT },
                { "$ref": "#/definitions/env" },
                { "$ref": "#/definitions/from" }
            ]
        },
        "client_id": {
            "description": "Application (client) id: the GUID on the app registration's overview page, or where to read it at run time.",
            "oneOf": [
                { "type": "string", "pattern": GUID },
                { "$ref": "#/definitions/env" },
                { "$ref": "#/definitions/from" }
            ]
        },
        "authority": {
            "description": "public (default), usgov, china, an authority URL (https; http only for loopback), or { env = \"VAR\" } holding one of those.",
            "oneOf": [
                { "type": "string", "minLength": 1 },
                { "$ref": "#/definitions/env" }
            ]
        }
        }),
        json!({
        "settings": {
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "refresh_before": {
                    "description": "A token valid for longer than this is fresh and not rewritten. Default \"15m\".",
                    "$ref": "#/definitions/duration"
                },
                "concurrency": {
                    "description": "Token requests and writes at once. Default 8.",
                    "type": "integer", "minimum": 1, "maximum": 1024
                },
                "authority": {
                    "description": "The default authority of every job and Key Vault login. Default: AZURE_AUTHORITY_HOST when set, else public.",
                    "$ref": "#/definitions/authority"
                },
                "cloud": {
                    "description": "The Azure cloud every authority belongs to (federated audience, Key Vault host of a bare name): public, usgov or china. Default: the authority's.",
                    "enum": ["public", "usgov", "china"]
                },
                "ca_file": {
                    "description": "Extra PEM CA bundle trusted for the authority.",
                    "$ref": "#/definitions/path"
                },
                "listen": {
                    "description": "Where daemon mode (secret-sync daemon, run --watch) serves /healthz, /readyz and /metrics, e.g. \"127.0.0.1:9090\".",
                    "type": "string"
                },
                "pass_timeout": {
                    "description": "The longest one pass of a job may take (metadata reads, credentials, token request with its retries, writes); unfinished targets then fail. Default \"5m\".",
                    "$ref": "#/definitions/duration"
                },
                "credentials": {
                    "description": "Watching (and rotating) the apps' own client secrets and certificates through Microsoft Graph, for every job (docs/credentials.md).",
                    "$ref": "#/definitions/settings_credentials"
                }
            }
        },
        "backend": {
            "description": "A secret store: kind = file, vault, aws-secrets-manager or azure-key-vault, and that kind's keys.",
            "type": "object",
            "required": ["kind"],
            "properties": {
                "kind": {
                    "description": "The kind of store.",
                    "enum": ["file", "vault", "aws-secrets-manager", "azure-key-vault"]
                }
            },
            "oneOf": [
                { "$ref": "#/definitions/file_backend" },
                { "$ref": "#/definitions/vault_backend" },
                { "$ref": "#/definitions/aws_backend" },
                { "$ref": "#/definitions/azure_backend" }
            ]
        },
        "file_backend": {
            "type": "object",
            "additionalProperties": false,
            "required": ["kind", "dir"],
            "properties": {
                "kind": { "description": "Files in a directory.", "const": "file" },
                "dir": {
                    "description": "The directory target names are relative to. It must exist: secret-sync creates directories below it, never dir itself.",
                    "$ref": "#/definitions/path"
                },
                "mode": {
                    "description": "Permission bits of written files, octal. Default 0o600.",
                    "oneOf": [
                        { "type": "integer", "minimum": 384, "maximum": 511 },
                        { "type": "string", "pattern": "^(0o|0)?[67][0-7]{2}$" }
                    ]
                },
                "follow_symlinks": {
                    "description": "Follow a symlink at or on the way to a target. Default false: refused.",
                    "type": "boolean"
                },
                "stale_temp_after": {
                    "description": "Age after which a temporary file left by an interrupted write is removed by the next write of its target. Default \"5m\".",
                    "$ref": "#/definitions/duration"
                }
            }
        },
        "vault_backend": {
            "type": "object",
            "additionalProperties": false,
            "required": ["kind", "address", "auth"],
            "properties": {
                "kind": { "description": "HashiCorp Vault or OpenBao, KV v1 or v2.", "const": "vault" },
                "address": {
                    "description": "The server, e.g. https://vault.example.com:8200 (plain http only to a loopback address, unless allow_insecure_http = true).",
                    "type": "string",
                    "format": "uri"
                },
                "mount": {
                    "description": "The KV mount. Default \"secret\". Target names are paths below it (not starting with it, nor with data/).",
                    "type": "string"
                },
                "kv_version": {
                    "description": "The KV engine's version. Default: detected at first use.",
                    "enum": [1, 2]
                },
                "namespace": {
                    "description": "The Vault Enterprise / OpenBao namespace.",
                    "type": "string"
                },
                "auth": {
                    "description": "How to log in: method = token, approle, jwt or kubernetes.",
                    "$ref": "#/definitions/vault_auth"
                },
                "allow_insecure_http": {
                    "description": "Allow plain http to a host that is not a loopback address (a trusted network only). Default false.",
                    "type": "boolean"
                },
                "ca_file": {
                    "description": "Extra PEM CA bundle trusted for the server.",
                    "$ref": "#/definitions/path"
                },
                "timeout": {
                    "description": "The limit of one request. Default \"30s\".",
                    "$ref": "#/definitions/duration"
                }
            },
            "if": {
                "not": {
                    "required": ["allow_insecure_http"],
                    "properties": { "allow_insecure_http": { "const": true } }
                }
            },
            "then": {
                "properties": { "address": { "pattern": HTTPS_OR_LOOPBACK } }
            }
        }
        }),
        json!({
        "vault_auth": {
            "description": "A Vault login.",
            "oneOf": [
                {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["method"],
                    "properties": {
                        "method": { "description": "A Vault token.", "const": "token" },
                        "token_env": {
                            "description": "The environment variable that holds the token.",
                            "$ref": "#/definitions/env_name"
                        },
                        "token_file": {
                            "description": "The file that holds the token (read again at each renewal, e.g. a Vault Agent sink).",
                            "$ref": "#/definitions/path"
                        }
                    }
                },
                {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["method", "role_id"],
                    "properties": {
                        "method": { "description": "AppRole login.", "const": "approle" },
                        "mount": {
                            "description": "The AppRole auth mount. Default \"approle\".",
                            "type": "string"
                        },
                        "role_id": { "description": "The role's RoleID (not a secret).", "type": "string" },
                        "secret_id_env": {
                            "description": "The environment variable that holds the SecretID.",
                            "$ref": "#/definitions/env_name"
                        },
                        "secret_id_file": {
                            "description": "The file that holds the SecretID (read at each login).",
                            "$ref": "#/definitions/path"
                        }
                    }
                },
                {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["method"],
                    "properties": {
                        "method": { "description": "JWT/OIDC login, e.g. a CI job's OIDC token.", "const": "jwt" },
                        "mount": {
                            "description": "The JWT auth mount. Default \"jwt\".",
                            "type": "string"
                        },
                        "role": {
                            "description": "The role. Default: the mount's default role.",
                            "type": "string"
                        },
                        "jwt_env": {
                            "description": "The environment variable that holds the JWT.",
                            "$ref": "#/definitions/env_name"
                        },
                        "jwt_file": {
                            "description": "The file that holds the JWT (read at each login).",
                            "$ref": "#/definitions/path"
                        }
                    }
                },
                {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["method", "role"],
                    "properties": {
                        "method": { "description": "Kubernetes service-account login.", "const": "kubernetes" },
                        "mount": {
                            "description": "The Kubernetes auth mount. Default \"kubernetes\".",
                            "type": "string"
                        },
                        "role": { "description": "The role.", "type": "string" },
                        "jwt_file": {
                            "description": "The service-account token. Default /var/run/secrets/kubernetes.io/serviceaccount/token.",
                            "$ref": "#/definitions/path"
                        }
                    }
                }
            ]
        },
        "aws_backend": {
            "type": "object",
            "additionalProperties": false,
            "required": ["kind"],
            "properties": {
                "kind": { "description": "AWS Secrets Manager.", "const": "aws-secrets-manager" },
                "region": {
                    "description": "The region, e.g. eu-west-1. Default: the AWS SDK's (AWS_REGION, the profile).",
                    "type": "string"
                },
                "endpoint_url": {
                    "description": "Another endpoint (a VPC endpoint, a test server); plain http only to a loopback address.",
                    "type": "string",
                    "format": "uri"
                },
                "kms_key_id": {
                    "description": "The KMS key secrets are created with. Default: the account's aws/secretsmanager key.",
                    "type": "string"
                },
                "profile": {
                    "description": "The AWS profile to take credentials and region from.",
                    "type": "string"
                },
                "max_attempts": {
                    "description": "Attempts per request, retries included. Default: the SDK's (3).",
                    "type": "integer", "minimum": 1, "maximum": 20
                }
            }
        },
        "azure_backend": {
            "type": "object",
            "additionalProperties": false,
            "required": ["kind", "vault_url", "auth"],
            "properties": {
                "kind": { "description": "Azure Key Vault secrets.", "const": "azure-key-vault" },
                "vault_url": {
                    "description": "https://NAME.vault.azure.net (http only to a loopback address), the vault's host, or its name (3-24 letters, digits and single dashes, starting with a letter).",
                    "type": "string",
                    "anyOf": [
                        { "pattern": HTTPS_OR_LOOPBACK },
                        { "pattern": VAULT_NAME, "minLength": 3, "maxLength": 24 },
                        { "pattern": "^[A-Za-z0-9-]+(\\.[A-Za-z0-9-]+)+$" }
                    ]
                },
                "ca_file": {
                    "description": "Extra PEM CA bundle trusted for the vault.",
                    "$ref": "#/definitions/path"
                },
                "recover_deleted": {
                    "description": "Recover a deleted-but-recoverable secret of a target's name instead of failing. Default false.",
                    "type": "boolean"
                },
                "auth": {
                    "description": "How secret-sync gets its own token for the vault: method = client-secret, certificate, federated-token, workload-identity, github-oidc or managed-identity.",
                    "$ref": "#/definitions/azure_auth"
                }
            }
        },
        "azure_auth": {
            "description": "A Key Vault login through Entra ID.",
            "oneOf": [
                azure_auth("client-secret", &["client_secret"], json!({
                    "client_secret": {
                        "description": "Where the client secret is.",
                        "$ref": "#/definitions/backend_secret"
                    }
                })),
                azure_auth("certificate", &["certificate"], json!({
                    "certificate": {
                        "description": "Where the certificate (PEM) is; it may hold the key.",
                        "$ref": "#/definitions/backend_secret"
                    },
                    "certificate_key": {
                        "description": "Where the private key (PEM) is, when not in the certificate's file.",
                        "$ref": "#/definitions/backend_secret"
                    },
                    "assertion_alg": {
                        "description": "The client assertion's signature: ps256 (x5t#S256, default) or rs256 (x5t).",
                        "enum": ["ps256", "rs256"]
                    }
                })),
                azure_auth("federated-token", &[], json!({
                    "federated_token_file": {
                        "description": "The file that holds the federated (OIDC) token, re-read at each request.",
                        "$ref": "#/definitions/path"
                    },
                    "federated_token_env": {
                        "description": "The environment variable that holds the federated (OIDC) token.",
                        "$ref": "#/definitions/env_name"
                    }
                })),
                azure_auth("workload-identity", &[], json!({})),
                azure_auth("github-oidc", &[], json!({})),
                azure_auth("managed-identity", &[], json!({}))
            ]
        }
        }),
        json!({
        "job": {
            "description": "One token (an app, a scope) and the targets it is kept fresh in.",
            "type": "object",
            "additionalProperties": false,
            "required": ["scope", "targets"],
            "properties": {
                "authority": {
                    "description": "This job's authority. Default: [settings] authority.",
                    "$ref": "#/definitions/authority"
                },
                "tenant_id": {
                    "description": "Directory (tenant) id: a GUID or verified domain (not common/consumers/organizations).",
                    "$ref": "#/definitions/tenant_id"
                },
                "client_id": {
                    "description": "Application (client) id GUID.",
                    "$ref": "#/definitions/client_id"
                },
                "client_secret": {
                    "description": "Where the app's client secret is (its Value, not its Secret ID).",
                    "$ref": "#/definitions/secret"
                },
                "certificate": {
                    "description": "Where the certificate registered on the app (PEM) is; it may hold the key.",
                    "$ref": "#/definitions/secret"
                },
                "certificate_key": {
                    "description": "Where the certificate's private key (PEM) is, when not in the same file.",
                    "$ref": "#/definitions/secret"
                },
                "assertion_alg": {
                    "description": "The client assertion's signature: ps256 (x5t#S256, default) or rs256 (x5t).",
                    "enum": ["ps256", "rs256"]
                },
                "federated_token_file": {
                    "description": "Workload identity federation: the file that holds the OIDC token, re-read at each request.",
                    "$ref": "#/definitions/path"
                },
                "federated_token_env": {
                    "description": "Workload identity federation: the environment variable that holds the OIDC token.",
                    "$ref": "#/definitions/env_name"
                },
                "workload_identity": {
                    "description": "Workload identity as Azure sets it up (AKS): AZURE_FEDERATED_TOKEN_FILE, AZURE_TENANT_ID, AZURE_CLIENT_ID.",
                    "type": "boolean"
                },
                "github_oidc": {
                    "description": "Workload identity federation from GitHub Actions' OIDC endpoint (permissions: id-token: write).",
                    "type": "boolean"
                },
                "managed_identity": {
                    "description": "The Azure host's managed identity (IMDS, App Service, Container Apps, Azure Arc); with client_id, a user-assigned one.",
                    "type": "boolean"
                },
                "scope": {
                    "description": "One resource followed by /.default, e.g. https://graph.microsoft.com/.default.",
                    "type": "string",
                    "pattern": "/\\.default$"
                },
                "targets": {
                    "description": "Where the token goes: at least one { to = \"BACKEND\", name = \"...\" }.",
                    "type": "array",
                    "minItems": 1,
                    "items": { "$ref": "#/definitions/target" }
                },
                "pass_timeout": {
                    "description": "This job's pass deadline, instead of [settings] pass_timeout.",
                    "$ref": "#/definitions/duration"
                },
                "credentials": {
                    "description": "This job's credential watch, over [settings.credentials] (docs/credentials.md).",
                    "$ref": "#/definitions/job_credentials"
                },
                "rotation": {
                    "description": "Rotate this job's client secret (read from a backend) before it expires (docs/credentials.md).",
                    "$ref": "#/definitions/rotation"
                },
                "actions": {
                    "description": "After-write actions: run once per pass that created or updated one of this job's targets, after all of them were tried.",
                    "$ref": "#/definitions/actions"
                }
            }
        },
        "target": {
            "description": "One place the job's token is written to.",
            "type": "object",
            "additionalProperties": false,
            "required": ["to", "name"],
            "properties": {
                "to": {
                    "description": "The backend to write to (a [backends.NAME] table).",
                    "$ref": "#/definitions/name"
                },
                "name": {
                    "description": "The secret's name in that backend: a path inside a file backend's dir, a path below a Vault mount, an AWS secret name, a Key Vault secret name (1-127 letters, digits and dashes).",
                    "type": "string",
                    "minLength": 1
                },
                "format": {
                    "description": "raw: the bare token (file: expiry in a sidecar); json: a document with the token, its type and expiry. Default raw.",
                    "enum": ["raw", "json"]
                },
                "adopt": {
                    "description": "Overwrite a secret that secret-sync did not write. Default false.",
                    "type": "boolean"
                },
                "actions": {
                    "description": "After-write actions: run after this target was created or updated.",
                    "$ref": "#/definitions/actions"
                }
            }
        }
        }),
        lifecycle_definitions(),
        action_definitions(),
    ] {
        if let Value::Object(part) = part {
            definitions.extend(part);
        }
    }
    Value::Object(definitions)
}

/// `[settings.credentials]`, `[jobs.NAME.credentials]`, `[jobs.NAME.rotation]` (issue 13).
fn lifecycle_definitions() -> Value {
    let watch = json!({
        "watch": {
            "description": "Read the app registration's client secret and certificate expiries from Microsoft Graph (needs a Graph permission: docs/credentials.md). Default false.",
            "type": "boolean"
        },
        "warn_within": {
            "description": "Warn when the credential in use expires within this. Default \"30d\".",
            "$ref": "#/definitions/duration"
        },
        "auth": {
            "description": "Who reads (and for rotation changes) the app registration: { method = \"job\" } (default: the job's own credential) or an identity as a Key Vault backend's auth, e.g. { method = \"managed-identity\" }.",
            "$ref": "#/definitions/graph_auth"
        },
        "graph_endpoint": {
            "description": "Microsoft Graph's base URL. Default: the cloud's (https://graph.microsoft.com, graph.microsoft.us, microsoftgraph.chinacloudapi.cn); http only for loopback.",
            "type": "string",
            "format": "uri"
        }
    });
    let mut settings = watch.clone();
    if let (Some(map), Value::Object(extra)) = (
        settings.as_object_mut(),
        json!({
            "state_dir": {
                "description": "Where the last watch is recorded (credentials-state.json), for plan. Default: the config file's directory.",
                "$ref": "#/definitions/path"
            },
            "check_every": {
                "description": "How often the daemon watches, and rotates what is due. Default \"1h\".",
                "$ref": "#/definitions/duration"
            }
        }),
    ) {
        map.extend(extra);
    }
    json!({
        "settings_credentials": {
            "description": "Credential watch for every job whose credential is a client secret or a certificate.",
            "type": "object",
            "additionalProperties": false,
            "properties": settings
        },
        "job_credentials": {
            "description": "This job's credential watch; unset keys come from [settings.credentials].",
            "type": "object",
            "additionalProperties": false,
            "properties": watch
        },
        "graph_auth": {
            "description": "The Graph caller: the job itself, or another identity.",
            "oneOf": [
                {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["method"],
                    "properties": {
                        "method": { "description": "The job's own app and credential.", "const": "job" }
                    }
                },
                { "$ref": "#/definitions/azure_auth" }
            ]
        },
        "rotation": {
            "description": "Rotation of the job's client secret; it must be read { from = BACKEND, ref = ... }.",
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "enabled": {
                    "description": "Rotate the client secret. Default false.",
                    "type": "boolean"
                },
                "rotate_within": {
                    "description": "Rotate when the secret in use expires within this. Default \"30d\".",
                    "$ref": "#/definitions/duration"
                },
                "lifetime": {
                    "description": "The new secret's lifetime, sent to Graph explicitly. Default \"180d\".",
                    "$ref": "#/definitions/duration"
                },
                "overlap": {
                    "description": "How long the old secret stays valid after the new one is written back. Default \"24h\".",
                    "$ref": "#/definitions/duration"
                },
                "propagation_timeout": {
                    "description": "How long the new secret may take to be accepted by the token endpoint. Default \"3m\".",
                    "$ref": "#/definitions/duration"
                }
            }
        }
    })
}

/// One `auth` method of an Azure Key Vault backend: `method`, the identity keys, its own keys.
fn azure_auth(method: &str, required: &[&str], own: Value) -> Value {
    let mut properties = json!({
        "method": { "description": format!("Log in with {method}."), "const": method },
        "authority": {
            "description": "The login's authority. Default: [settings] authority.",
            "$ref": "#/definitions/authority"
        },
        "tenant_id": {
            "description": "Directory (tenant) id of the app that writes to the vault.",
            "$ref": "#/definitions/tenant_id"
        },
        "client_id": {
            "description": "Application (client) id GUID of the app that writes to the vault.",
            "$ref": "#/definitions/client_id"
        }
    });
    if let (Some(properties), Value::Object(own)) = (properties.as_object_mut(), own) {
        properties.extend(own);
    }
    let mut required_keys = vec!["method"];
    required_keys.extend_from_slice(required);
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": required_keys,
        "properties": properties
    })
}

/// `actions` of a job or target (issue 14): each one exec, signal or webhook.
fn action_definitions() -> Value {
    let timeout = json!({
        "description": "How long it may take, at most \"30s\" (the daemon's SIGTERM grace); also capped by the pass's deadline.",
        "$ref": "#/definitions/duration"
    });
    json!({
        "actions": {
            "description": "After-write actions (docs/configuration.md, Actions): each one of exec, signal, webhook.",
            "type": "array",
            "items": { "$ref": "#/definitions/action" }
        },
        "action": {
            "description": "One after-write action.",
            "oneOf": [
                {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["exec"],
                    "properties": {
                        "exec": {
                            "description": "The command and its arguments; the first is an absolute path. No shell; the token is never passed.",
                            "type": "array",
                            "minItems": 1,
                            "items": [{ "type": "string", "pattern": "^/" }],
                            "additionalItems": { "type": "string" }
                        },
                        "timeout": timeout.clone()
                    }
                },
                {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["signal", "pid_file"],
                    "properties": {
                        "signal": {
                            "description": "The signal to send, e.g. HUP.",
                            "type": "string",
                            "pattern": "^(SIG|sig)?(HUP|USR1|USR2|TERM|INT|QUIT|WINCH|hup|usr1|usr2|term|int|quit|winch)$"
                        },
                        "pid_file": {
                            "description": "The file holding the process's pid; its directory must exist.",
                            "$ref": "#/definitions/path"
                        },
                        "process_name": {
                            "description": "The process's /proc/PID/comm must be this (at most 15 bytes), against a reused pid.",
                            "type": "string",
                            "minLength": 1,
                            "maxLength": 15
                        }
                    }
                },
                {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["webhook"],
                    "properties": {
                        "webhook": {
                            "description": "The URL a JSON document (job, targets, expiry; no token) is POSTed to: https, or http to a loopback address.",
                            "type": "string",
                            "pattern": HTTPS_OR_LOOPBACK
                        },
                        "timeout": timeout,
                        "signing_key": {
                            "description": "The HMAC-SHA256 key of the X-Secret-Sync-Signature header.",
                            "$ref": "#/definitions/secret"
                        },
                        "attempts": {
                            "description": "Tries on 5xx, 429, timeouts and connection errors, with backoff. Default 3.",
                            "type": "integer",
                            "minimum": 1,
                            "maximum": 10
                        },
                        "ca_file": {
                            "description": "A PEM bundle of CA certificates trusted for the receiver beside the platform's (a private CA). Must exist.",
                            "$ref": "#/definitions/path"
                        }
                    }
                }
            ]
        }
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};

    use toml::de::{DeTable, DeValue};

    use super::*;
    use crate::config::load::keys;

    fn property_names(schema: &Value, pointer: &str) -> BTreeSet<String> {
        schema
            .pointer(pointer)
            .and_then(Value::as_object)
            .unwrap_or_else(|| panic!("the schema has no object at {pointer}"))
            .keys()
            .cloned()
            .collect()
    }

    fn set(keys: &[&str]) -> BTreeSet<String> {
        keys.iter().map(|k| k.to_string()).collect()
    }

    #[test]
    fn every_table_lists_exactly_the_keys_the_loader_accepts() {
        let schema = schema();
        let d = "/definitions";
        let cases: Vec<(String, BTreeSet<String>)> = vec![
            ("/properties".into(), set(keys::ROOT)),
            (format!("{d}/settings/properties"), set(keys::SETTINGS)),
            (format!("{d}/file_backend/properties"), set(keys::FILE)),
            (format!("{d}/vault_backend/properties"), set(keys::VAULT)),
            (format!("{d}/aws_backend/properties"), set(keys::AWS)),
            (
                format!("{d}/azure_backend/properties"),
                set(keys::AZURE_KEY_VAULT),
            ),
            (
                format!("{d}/vault_auth/oneOf/0/properties"),
                set(keys::VAULT_AUTH_TOKEN),
            ),
            (
                format!("{d}/vault_auth/oneOf/1/properties"),
                set(keys::VAULT_AUTH_APPROLE),
            ),
            (
                format!("{d}/vault_auth/oneOf/2/properties"),
                set(keys::VAULT_AUTH_JWT),
            ),
            (
                format!("{d}/vault_auth/oneOf/3/properties"),
                set(keys::VAULT_AUTH_KUBERNETES),
            ),
            (format!("{d}/target/properties"), set(keys::TARGET)),
            (
                format!("{d}/settings_credentials/properties"),
                set(keys::SETTINGS_CREDENTIALS),
            ),
            (
                format!("{d}/job_credentials/properties"),
                set(keys::JOB_CREDENTIALS),
            ),
            (format!("{d}/rotation/properties"), set(keys::ROTATION)),
            (
                format!("{d}/action/oneOf/0/properties"),
                set(keys::ACTION_EXEC),
            ),
            (
                format!("{d}/action/oneOf/1/properties"),
                set(keys::ACTION_SIGNAL),
            ),
            (
                format!("{d}/action/oneOf/2/properties"),
                set(keys::ACTION_WEBHOOK),
            ),
            (
                format!("{d}/job/properties"),
                [keys::IDENTITY, keys::CREDENTIAL, keys::JOB_OWN]
                    .concat()
                    .iter()
                    .map(|k| k.to_string())
                    .collect(),
            ),
        ];
        for (pointer, expected) in cases {
            assert_eq!(
                property_names(&schema, &pointer),
                expected,
                "keys at {pointer}"
            );
        }
        let kinds: Vec<&str> = schema["definitions"]["backend"]["properties"]["kind"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(kinds, keys::BACKEND_KINDS);
        let methods: Vec<&str> = schema["definitions"]["azure_auth"]["oneOf"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["properties"]["method"]["const"].as_str().unwrap())
            .collect();
        assert_eq!(methods, keys::AZURE_AUTH_METHODS);
        // Every Key Vault auth method takes the identity keys and only its own credential keys.
        for method in schema["definitions"]["azure_auth"]["oneOf"]
            .as_array()
            .unwrap()
        {
            let names: BTreeSet<String> = method["properties"]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect();
            for key in keys::IDENTITY {
                assert!(names.contains(*key), "{key} missing in {method}");
            }
            for key in &names {
                assert!(
                    key == "method"
                        || keys::IDENTITY.contains(&key.as_str())
                        || keys::CREDENTIAL.contains(&key.as_str()),
                    "{key} is not a key the loader knows, in {method}"
                );
            }
        }
    }

    /// TOML to JSON, for the validator (the example configs hold no dates or floats).
    fn to_json(value: &DeValue<'_>) -> Value {
        match value {
            DeValue::String(s) => Value::String(s.to_string()),
            DeValue::Integer(i) => json!(i64::from_str_radix(i.as_str(), i.radix()).unwrap()),
            DeValue::Float(f) => json!(f.as_str().parse::<f64>().unwrap()),
            DeValue::Boolean(b) => Value::Bool(*b),
            DeValue::Datetime(d) => Value::String(d.to_string()),
            DeValue::Array(items) => items.iter().map(|i| to_json(i.get_ref())).collect(),
            DeValue::Table(table) => table_to_json(table),
        }
    }

    fn table_to_json(table: &DeTable<'_>) -> Value {
        Value::Object(
            table
                .iter()
                .map(|(k, v)| (k.get_ref().to_string(), to_json(v.get_ref())))
                .collect(),
        )
    }

    fn example_configs() -> Vec<PathBuf> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|e| e == "toml"))
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no example config in {}", dir.display());
        files
    }

    fn validator() -> (boon::Schemas, boon::SchemaIndex) {
        let mut schemas = boon::Schemas::new();
        let mut compiler = boon::Compiler::new();
        compiler.enable_format_assertions();
        compiler
            .add_resource("config.schema.json", schema())
            .expect("the schema is JSON");
        let index = compiler
            .compile("config.schema.json", &mut schemas)
            .unwrap_or_else(|e| panic!("the schema is not a valid JSON Schema: {e:#}"));
        (schemas, index)
    }

    fn check(schemas: &boon::Schemas, index: boon::SchemaIndex, text: &str) -> Result<(), String> {
        let document = DeTable::parse(text).map_err(|e| e.to_string())?;
        let json = table_to_json(document.get_ref());
        schemas.validate(&json, index).map_err(|e| format!("{e:#}"))
    }

    #[test]
    fn every_example_config_validates_against_the_schema() {
        let (schemas, index) = validator();
        for path in example_configs() {
            let text = std::fs::read_to_string(&path).unwrap();
            if let Err(err) = check(&schemas, index, &text) {
                panic!("{} does not match the schema:\n{err}", path.display());
            }
        }
    }

    /// Every complete ```toml block of README.md and docs/*.md (```toml-fragment blocks are
    /// parts of a file), with its file and first line.
    fn docs_examples() -> Vec<(String, String)> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut files = vec![root.join("README.md")];
        let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|e| e == "md"))
            .collect();
        docs.sort();
        files.extend(docs);
        let mut examples = Vec::new();
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            let mut current: Option<(usize, String)> = None;
            for (index, line) in text.lines().enumerate() {
                let trimmed = line.trim_start();
                match &mut current {
                    None if trimmed.strip_prefix("```").map(str::trim) == Some("toml") => {
                        current = Some((index + 2, String::new()));
                    }
                    None => {}
                    Some((start, body)) if trimmed.starts_with("```") => {
                        examples
                            .push((format!("{}:{start}", file.display()), std::mem::take(body)));
                        current = None;
                    }
                    Some((_, body)) => {
                        body.push_str(line);
                        body.push('\n');
                    }
                }
            }
        }
        examples
    }

    /// What an editor does with the schema (`#:schema` in Even Better TOML): every example a
    /// user copies from the docs shows no error.
    #[test]
    fn every_docs_example_validates_against_the_schema_as_an_editor_checks_it() {
        let (schemas, index) = validator();
        let examples = docs_examples();
        assert!(
            examples.len() >= 4,
            "only {} examples found",
            examples.len()
        );
        for (place, text) in examples {
            if let Err(err) = check(&schemas, index, &text) {
                panic!("the example at {place} does not match the schema:\n{err}\n{text}");
            }
        }
    }

    /// Every property an editor can show has a description, and none is lost beside a `$ref`
    /// (draft 7 ignores a `$ref`'s siblings).
    #[test]
    fn every_property_has_a_description_and_no_ref_has_siblings() {
        fn walk(value: &Value, at: &str, missing: &mut Vec<String>, beside_ref: &mut Vec<String>) {
            match value {
                Value::Object(map) => {
                    if map.contains_key("$ref") && map.len() > 1 {
                        beside_ref.push(at.to_owned());
                    }
                    if let Some(Value::Object(properties)) = map.get("properties") {
                        for (name, property) in properties {
                            // `if`/`then` only narrow properties described elsewhere.
                            if property.get("description").is_none()
                                && !at.ends_with("/if")
                                && !at.ends_with("/then")
                                && !at.contains("/if/")
                            {
                                missing.push(format!("{at}/properties/{name}"));
                            }
                        }
                    }
                    for (key, child) in map {
                        walk(child, &format!("{at}/{key}"), missing, beside_ref);
                    }
                }
                Value::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        walk(item, &format!("{at}/{i}"), missing, beside_ref);
                    }
                }
                _ => {}
            }
        }
        let (mut missing, mut beside_ref) = (Vec::new(), Vec::new());
        walk(&schema(), "", &mut missing, &mut beside_ref);
        assert!(
            missing.is_empty(),
            "properties without a description: {missing:#?}"
        );
        assert!(
            beside_ref.is_empty(),
            "keywords beside a $ref: {beside_ref:#?}"
        );
        // Descriptions written beside a $ref survive, in an allOf.
        let tenant = &schema()["definitions"]["job"]["properties"]["tenant_id"];
        assert!(tenant["description"].is_string(), "{tenant}");
        assert_eq!(
            tenant["allOf"][0]["$ref"], "#/definitions/tenant_id",
            "{tenant}"
        );
    }

    #[test]
    fn the_schema_refuses_what_the_loader_refuses() {
        let (schemas, index) = validator();
        let good = r#"
[backends.local]
kind = "file"
dir = "out"

[jobs.graph]
tenant_id = "contoso.onmicrosoft.com"
client_id = "00000000-0000-0000-0000-000000000001"
client_secret = { env = "SECRET" }
scope = "https://graph.microsoft.com/.default"
targets = [{ to = "local", name = "graph.json" }]
"#;
        check(&schemas, index, good).expect("the good config matches");
        for (mistake, from, to) in [
            ("a literal secret", "{ env = \"SECRET\" }", "\"p4ssw0rd\""),
            (
                "an unknown key",
                "dir = \"out\"",
                "dir = \"out\"\ndirectory = \"x\"",
            ),
            ("an unknown kind", "kind = \"file\"", "kind = \"files\""),
            (
                "an action with a relative command",
                "scope = ",
                "actions = [{ exec = [\"systemctl\", \"reload\", \"nginx\"] }]\nscope = ",
            ),
            (
                "a webhook over http off loopback",
                "scope = ",
                "actions = [{ webhook = \"http://hooks.example.com/x\" }]\nscope = ",
            ),
            (
                "an action of two kinds",
                "scope = ",
                "actions = [{ exec = [\"/bin/true\"], signal = \"HUP\", pid_file = \"/run/x.pid\" }]\nscope = ",
            ),
            (
                "an unknown action key",
                "scope = ",
                "actions = [{ exec = [\"/bin/true\"], shell = true }]\nscope = ",
            ),
            (
                "an unknown format",
                "name = \"graph.json\"",
                "name = \"graph.json\", format = \"yaml\"",
            ),
            (
                "no targets",
                "targets = [{ to = \"local\", name = \"graph.json\" }]",
                "targets = []",
            ),
            (
                "a scope without /.default",
                "microsoft.com/.default",
                "microsoft.com/User.Read",
            ),
            (
                "the common tenant",
                "\"contoso.onmicrosoft.com\"",
                "\"common\"",
            ),
            (
                "the organizations tenant",
                "\"contoso.onmicrosoft.com\"",
                "\"Organizations\"",
            ),
            (
                "a client id that is not a GUID",
                "\"00000000-0000-0000-0000-000000000001\"",
                "\"graph-app\"",
            ),
            (
                "plain http to a remote Vault",
                "[jobs.graph]",
                "[backends.v]\nkind = \"vault\"\naddress = \"http://vault.example.com:8200\"\n\
                 auth = { method = \"token\", token_env = \"T\" }\n\n[jobs.graph]",
            ),
            (
                "a Key Vault name with an underscore",
                "[jobs.graph]",
                "[backends.kv]\nkind = \"azure-key-vault\"\nvault_url = \"contoso_kv\"\n\
                 auth = { method = \"managed-identity\" }\n\n[jobs.graph]",
            ),
            (
                "a Key Vault name too short",
                "[jobs.graph]",
                "[backends.kv]\nkind = \"azure-key-vault\"\nvault_url = \"kv\"\n\
                 auth = { method = \"managed-identity\" }\n\n[jobs.graph]",
            ),
        ] {
            let bad = good.replace(from, to);
            assert_ne!(bad, good, "the replacement for {mistake} did not apply");
            assert!(
                check(&schemas, index, &bad).is_err(),
                "the schema accepted {mistake}"
            );
        }
        // What the loader accepts, the schema accepts too.
        for (what, from, to) in [
            (
                "a GUID tenant",
                "\"contoso.onmicrosoft.com\"",
                "\"72F988BF-86F1-41AF-91AB-2D7CD011DB47\"",
            ),
            (
                "http to a loopback Vault",
                "[jobs.graph]",
                "[backends.v]\nkind = \"vault\"\naddress = \"http://127.0.0.1:8200\"\n\
                 auth = { method = \"token\", token_env = \"T\" }\n\n[jobs.graph]",
            ),
            (
                "http to a remote Vault when allowed",
                "[jobs.graph]",
                "[backends.v]\nkind = \"vault\"\naddress = \"http://vault.internal:8200\"\n\
                 allow_insecure_http = true\nauth = { method = \"token\", token_env = \"T\" }\n\n[jobs.graph]",
            ),
            (
                "a Key Vault by name",
                "[jobs.graph]",
                "[backends.kv]\nkind = \"azure-key-vault\"\nvault_url = \"contoso-kv\"\n\
                 auth = { method = \"managed-identity\" }\n\n[jobs.graph]",
            ),
            (
                "a tenant from the environment",
                "\"contoso.onmicrosoft.com\"",
                "{ env = \"TENANT\" }",
            ),
            (
                "actions of every kind on a job and a target",
                "name = \"graph.json\" }]",
                "name = \"graph.json\", actions = [{ exec = [\"/usr/bin/systemctl\", \"reload\", \"x\"], timeout = \"20s\" }] }]\n\
                 actions = [{ signal = \"HUP\", pid_file = \"/run/nginx.pid\", process_name = \"nginx\" }, \
                 { webhook = \"https://hooks.example.com/x\", signing_key = { env = \"K\" }, attempts = 5 }]",
            ),
        ] {
            let fine = good.replace(from, to);
            assert_ne!(fine, good, "the replacement for {what} did not apply");
            if let Err(err) = check(&schemas, index, &fine) {
                panic!("the schema refused {what}: {err}");
            }
        }
    }
}
