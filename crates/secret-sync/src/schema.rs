//! `secret-sync schema`: a JSON Schema (draft 7) of the config file, for editor completion and
//! checks (e.g. Even Better TOML / taplo: `#:schema ./secret-sync.schema.json` at the top of
//! the file).
//!
//! Written by hand, beside the loader: the tests below check that every table of the schema
//! lists exactly the keys the loader accepts (`config::load::keys`) and that every example
//! config in config/ validates against it. The loader stays the authority: it also checks
//! what a schema cannot (one credential per job, names valid per backend, references).

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
    json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "secret-sync configuration",
        "description": "Jobs that keep Microsoft Entra ID access tokens fresh in secret stores. See docs/configuration.md.",
        "type": "object",
        "additionalProperties": false,
        "required": ["jobs"],
        "properties": {
            "settings": { "$ref": "#/definitions/settings" },
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
            "type": "string",
            "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"
        },
        "env": {
            "description": "Read from this environment variable.",
            "type": "object",
            "additionalProperties": false,
            "required": ["env"],
            "properties": { "env": { "$ref": "#/definitions/env_name" } }
        },
        "file": {
            "description": "Read from this file (one trailing newline is dropped).",
            "type": "object",
            "additionalProperties": false,
            "required": ["file"],
            "properties": { "file": { "$ref": "#/definitions/path" } }
        },
        "from": {
            "description": "Read from a configured backend: `ref` is NAME or NAME#FIELD inside it.",
            "type": "object",
            "additionalProperties": false,
            "required": ["from", "ref"],
            "properties": {
                "from": { "$ref": "#/definitions/name" },
                "ref": { "type": "string", "minLength": 1 }
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
        "value": {
            "description": "A literal, or where to read it at run time.",
            "oneOf": [
                { "type": "string", "minLength": 1 },
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
                "authority": { "$ref": "#/definitions/authority" },
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
                }
            }
        },
        "backend": {
            "type": "object",
            "required": ["kind"],
            "properties": {
                "kind": { "enum": ["file", "vault", "aws-secrets-manager", "azure-key-vault"] }
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
                "kind": { "const": "file" },
                "dir": { "$ref": "#/definitions/path" },
                "mode": {
                    "description": "Permission bits of written files, octal. Default 0o600.",
                    "oneOf": [
                        { "type": "integer", "minimum": 384, "maximum": 511 },
                        { "type": "string", "pattern": "^(0o|0)?[67][0-7]{2}$" }
                    ]
                },
                "follow_symlinks": { "type": "boolean" },
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
                "kind": { "const": "vault" },
                "address": { "type": "string", "format": "uri" },
                "mount": { "type": "string", "description": "KV mount. Default \"secret\"." },
                "kv_version": { "enum": [1, 2] },
                "namespace": { "type": "string" },
                "auth": { "$ref": "#/definitions/vault_auth" },
                "allow_insecure_http": { "type": "boolean" },
                "ca_file": { "$ref": "#/definitions/path" },
                "timeout": { "$ref": "#/definitions/duration" }
            }
        }
        }),
        json!({
        "vault_auth": {
            "oneOf": [
                {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["method"],
                    "properties": {
                        "method": { "const": "token" },
                        "token_env": { "$ref": "#/definitions/env_name" },
                        "token_file": { "$ref": "#/definitions/path" }
                    }
                },
                {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["method", "role_id"],
                    "properties": {
                        "method": { "const": "approle" },
                        "mount": { "type": "string" },
                        "role_id": { "type": "string" },
                        "secret_id_env": { "$ref": "#/definitions/env_name" },
                        "secret_id_file": { "$ref": "#/definitions/path" }
                    }
                },
                {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["method"],
                    "properties": {
                        "method": { "const": "jwt" },
                        "mount": { "type": "string" },
                        "role": { "type": "string" },
                        "jwt_env": { "$ref": "#/definitions/env_name" },
                        "jwt_file": { "$ref": "#/definitions/path" }
                    }
                },
                {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["method", "role"],
                    "properties": {
                        "method": { "const": "kubernetes" },
                        "mount": { "type": "string" },
                        "role": { "type": "string" },
                        "jwt_file": { "$ref": "#/definitions/path" }
                    }
                }
            ]
        },
        "aws_backend": {
            "type": "object",
            "additionalProperties": false,
            "required": ["kind"],
            "properties": {
                "kind": { "const": "aws-secrets-manager" },
                "region": { "type": "string" },
                "endpoint_url": { "type": "string", "format": "uri" },
                "kms_key_id": { "type": "string" },
                "profile": { "type": "string" },
                "max_attempts": { "type": "integer", "minimum": 1, "maximum": 20 }
            }
        },
        "azure_backend": {
            "type": "object",
            "additionalProperties": false,
            "required": ["kind", "vault_url", "auth"],
            "properties": {
                "kind": { "const": "azure-key-vault" },
                "vault_url": { "type": "string", "description": "https://NAME.vault.azure.net, or the vault's name." },
                "ca_file": { "$ref": "#/definitions/path" },
                "recover_deleted": { "type": "boolean" },
                "auth": { "$ref": "#/definitions/azure_auth" }
            }
        },
        "azure_auth": {
            "oneOf": [
                azure_auth("client-secret", &["client_secret"], json!({
                    "client_secret": { "$ref": "#/definitions/backend_secret" }
                })),
                azure_auth("certificate", &["certificate"], json!({
                    "certificate": { "$ref": "#/definitions/backend_secret" },
                    "certificate_key": { "$ref": "#/definitions/backend_secret" },
                    "assertion_alg": { "enum": ["ps256", "rs256"] }
                })),
                azure_auth("federated-token", &[], json!({
                    "federated_token_file": { "$ref": "#/definitions/path" },
                    "federated_token_env": { "$ref": "#/definitions/env_name" }
                })),
                azure_auth("workload-identity", &[], json!({})),
                azure_auth("github-oidc", &[], json!({})),
                azure_auth("managed-identity", &[], json!({}))
            ]
        }
        }),
        json!({
        "job": {
            "type": "object",
            "additionalProperties": false,
            "required": ["scope", "targets"],
            "properties": {
                "authority": { "$ref": "#/definitions/authority" },
                "tenant_id": {
                    "description": "Directory (tenant) id: a GUID or verified domain (not common/consumers/organizations).",
                    "$ref": "#/definitions/value"
                },
                "client_id": {
                    "description": "Application (client) id GUID.",
                    "$ref": "#/definitions/value"
                },
                "client_secret": { "$ref": "#/definitions/secret" },
                "certificate": { "$ref": "#/definitions/secret" },
                "certificate_key": { "$ref": "#/definitions/secret" },
                "assertion_alg": { "enum": ["ps256", "rs256"] },
                "federated_token_file": { "$ref": "#/definitions/path" },
                "federated_token_env": { "$ref": "#/definitions/env_name" },
                "workload_identity": { "type": "boolean" },
                "github_oidc": { "type": "boolean" },
                "managed_identity": { "type": "boolean" },
                "scope": {
                    "description": "One resource followed by /.default, e.g. https://graph.microsoft.com/.default.",
                    "type": "string",
                    "pattern": "/\\.default$"
                },
                "targets": {
                    "type": "array",
                    "minItems": 1,
                    "items": { "$ref": "#/definitions/target" }
                },
                "pass_timeout": {
                    "description": "This job's pass deadline, instead of [settings] pass_timeout.",
                    "$ref": "#/definitions/duration"
                }
            }
        },
        "target": {
            "type": "object",
            "additionalProperties": false,
            "required": ["to", "name"],
            "properties": {
                "to": { "$ref": "#/definitions/name" },
                "name": { "type": "string", "minLength": 1 },
                "format": { "enum": ["raw", "json"] },
                "adopt": {
                    "description": "Overwrite a secret that secret-sync did not write. Default false.",
                    "type": "boolean"
                }
            }
        }
        }),
    ] {
        if let Value::Object(part) = part {
            definitions.extend(part);
        }
    }
    Value::Object(definitions)
}

/// One `auth` method of an Azure Key Vault backend: `method`, the identity keys, its own keys.
fn azure_auth(method: &str, required: &[&str], own: Value) -> Value {
    let mut properties = json!({
        "method": { "const": method },
        "authority": { "$ref": "#/definitions/authority" },
        "tenant_id": { "$ref": "#/definitions/value" },
        "client_id": { "$ref": "#/definitions/value" }
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
        ] {
            let bad = good.replace(from, to);
            assert_ne!(bad, good, "the replacement for {mistake} did not apply");
            assert!(
                check(&schemas, index, &bad).is_err(),
                "the schema accepted {mistake}"
            );
        }
    }
}
