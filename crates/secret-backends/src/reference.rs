//! The secret reference syntax users type.
//!
//! A full reference names the backend kind and the secret:
//!
//! | reference | meaning |
//! |---|---|
//! | `vault://secret/apps/graph#client_secret` | Vault/OpenBao KV mount `secret`, path `apps/graph`, field `client_secret` |
//! | `aws-sm://graph/credentials#client_secret` | AWS Secrets Manager secret `graph/credentials`, field `client_secret` |
//! | `azure-kv://contoso-kv/graph-client-secret` | Azure Key Vault `contoso-kv`, secret `graph-client-secret` |
//! | `file:///etc/secret-sync/graph.json#client_secret` | the file `/etc/secret-sync/graph.json`, field `client_secret` |
//!
//! `#field` picks a field of a JSON object value. Inside a configured backend a shorter
//! [`NameRef`] is enough: `apps/graph#client_id`. Parsing and [`Display`](std::fmt::Display)
//! round-trip. Names are not percent-decoded: what you type is what is looked up.

use std::fmt;
use std::str::FromStr;

/// The backend kind a reference points into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `vault://` - HashiCorp Vault or OpenBao KV.
    Vault,
    /// `aws-sm://` - AWS Secrets Manager.
    AwsSm,
    /// `azure-kv://` - Azure Key Vault.
    AzureKv,
    /// `file://` - a local file.
    File,
}

impl Scheme {
    /// All schemes, in the order they are listed in messages.
    pub const ALL: [Scheme; 4] = [Scheme::Vault, Scheme::AwsSm, Scheme::AzureKv, Scheme::File];

    /// The scheme as typed, without `://`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Vault => "vault",
            Scheme::AwsSm => "aws-sm",
            Scheme::AzureKv => "azure-kv",
            Scheme::File => "file",
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A full secret reference such as `vault://secret/apps/graph#client_secret`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SecretRef {
    /// `vault://MOUNT/PATH[#FIELD]`
    Vault {
        /// The KV mount, e.g. `secret`.
        mount: String,
        /// The secret path inside the mount, e.g. `apps/graph`.
        path: String,
        /// The field of the KV map to read.
        field: Option<String>,
    },
    /// `aws-sm://NAME[#FIELD]` (the name may contain `/`).
    AwsSm {
        /// The secret name (or ARN-free path-like name), e.g. `graph/credentials`.
        name: String,
        /// The field of a JSON `SecretString` to read.
        field: Option<String>,
    },
    /// `azure-kv://VAULT/NAME[#FIELD]`
    AzureKv {
        /// The vault name (`contoso-kv`) or host (`contoso-kv.vault.azure.net`).
        vault: String,
        /// The secret name.
        name: String,
        /// The field of a JSON value to read.
        field: Option<String>,
    },
    /// `file:///ABSOLUTE/PATH[#FIELD]`
    File {
        /// The absolute path, e.g. `/etc/secret-sync/graph.json`.
        path: String,
        /// The field of a JSON file to read.
        field: Option<String>,
    },
}

impl SecretRef {
    /// Parses a full reference; the error says what is wrong and shows the expected shape.
    pub fn parse(input: &str) -> Result<SecretRef, ReferenceError> {
        let err = |reason: String| ReferenceError {
            input: input.to_owned(),
            reason,
        };
        let known = || {
            Scheme::ALL
                .iter()
                .map(|s| format!("{s}://"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let Some((scheme, rest)) = input.split_once("://") else {
            return Err(err(format!(
                "a reference starts with a scheme ({}), e.g. vault://secret/apps/graph#client_secret",
                known()
            )));
        };
        let scheme = Scheme::ALL
            .into_iter()
            .find(|s| s.as_str() == scheme)
            .ok_or_else(|| {
                err(format!(
                    "unknown scheme \"{scheme}\": use one of {}",
                    known()
                ))
            })?;
        let (location, field) = split_field(rest).map_err(err)?;
        check_plain(location).map_err(err)?;
        match scheme {
            Scheme::Vault => {
                let (mount, path) = location
                    .split_once('/')
                    .filter(|(m, p)| !m.is_empty() && !p.is_empty())
                    .ok_or_else(|| err("expected vault://MOUNT/PATH[#FIELD], e.g. vault://secret/apps/graph#client_secret".into()))?;
                check_segments(location).map_err(err)?;
                Ok(SecretRef::Vault {
                    mount: mount.to_owned(),
                    path: path.to_owned(),
                    field,
                })
            }
            Scheme::AwsSm => {
                if location.is_empty() {
                    return Err(err("expected aws-sm://NAME[#FIELD], e.g. aws-sm://graph/credentials#client_secret".into()));
                }
                Ok(SecretRef::AwsSm {
                    name: location.to_owned(),
                    field,
                })
            }
            Scheme::AzureKv => {
                let (vault, name) = location
                    .split_once('/')
                    .filter(|(v, n)| !v.is_empty() && !n.is_empty() && !n.contains('/'))
                    .ok_or_else(|| err("expected azure-kv://VAULT/NAME[#FIELD], e.g. azure-kv://contoso-kv/graph-client-secret".into()))?;
                Ok(SecretRef::AzureKv {
                    vault: vault.to_owned(),
                    name: name.to_owned(),
                    field,
                })
            }
            Scheme::File => {
                if !location.starts_with('/') || location.len() < 2 {
                    return Err(err(
                        "expected file:///ABSOLUTE/PATH[#FIELD] (three slashes: no host, an absolute path), \
                         e.g. file:///etc/secret-sync/graph.json#client_secret"
                            .into(),
                    ));
                }
                check_segments(&location[1..]).map_err(err)?;
                Ok(SecretRef::File {
                    path: location.to_owned(),
                    field,
                })
            }
        }
    }

    /// The backend kind.
    pub fn scheme(&self) -> Scheme {
        match self {
            SecretRef::Vault { .. } => Scheme::Vault,
            SecretRef::AwsSm { .. } => Scheme::AwsSm,
            SecretRef::AzureKv { .. } => Scheme::AzureKv,
            SecretRef::File { .. } => Scheme::File,
        }
    }

    /// The field to pick, if any.
    pub fn field(&self) -> Option<&str> {
        match self {
            SecretRef::Vault { field, .. }
            | SecretRef::AwsSm { field, .. }
            | SecretRef::AzureKv { field, .. }
            | SecretRef::File { field, .. } => field.as_deref(),
        }
    }
}

impl FromStr for SecretRef {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SecretRef::parse(s)
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.scheme())?;
        match self {
            SecretRef::Vault { mount, path, .. } => write!(f, "{mount}/{path}")?,
            SecretRef::AwsSm { name, .. } => f.write_str(name)?,
            SecretRef::AzureKv { vault, name, .. } => write!(f, "{vault}/{name}")?,
            SecretRef::File { path, .. } => f.write_str(path)?,
        }
        if let Some(field) = self.field() {
            write!(f, "#{field}")?;
        }
        Ok(())
    }
}

/// A secret inside an already configured backend: `NAME[#FIELD]`, e.g. `apps/graph#client_id`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NameRef {
    /// The secret name as the backend understands it.
    pub name: String,
    /// The field of a JSON value to pick.
    pub field: Option<String>,
}

impl NameRef {
    /// Parses `NAME[#FIELD]`.
    pub fn parse(input: &str) -> Result<NameRef, ReferenceError> {
        let err = |reason: String| ReferenceError {
            input: input.to_owned(),
            reason,
        };
        let (name, field) = split_field(input).map_err(err)?;
        if name.is_empty() {
            return Err(err(
                "the secret name is empty: expected NAME[#FIELD], e.g. apps/graph#client_id".into(),
            ));
        }
        check_plain(name).map_err(err)?;
        Ok(NameRef {
            name: name.to_owned(),
            field,
        })
    }
}

impl FromStr for NameRef {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NameRef::parse(s)
    }
}

impl fmt::Display for NameRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if let Some(field) = &self.field {
            write!(f, "#{field}")?;
        }
        Ok(())
    }
}

/// A reference that could not be parsed. References name secrets, they never contain values,
/// so the input is shown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid secret reference \"{input}\": {reason}")]
pub struct ReferenceError {
    input: String,
    reason: String,
}

impl ReferenceError {
    /// The text that failed to parse.
    pub fn input(&self) -> &str {
        &self.input
    }
}

/// Splits `LOCATION[#FIELD]`; an empty field or a second `#` is an error.
fn split_field(rest: &str) -> Result<(&str, Option<String>), String> {
    match rest.split_once('#') {
        None => Ok((rest, None)),
        Some((_, "")) => {
            Err("the field after \"#\" is empty: write NAME#FIELD or drop the \"#\"".into())
        }
        Some((_, field)) if field.contains('#') => Err("only one \"#FIELD\" is allowed".into()),
        Some((location, field)) => Ok((location, Some(field.to_owned()))),
    }
}

/// Refuses whitespace and control characters, which are never part of a real name.
fn check_plain(location: &str) -> Result<(), String> {
    if location
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err("the name contains whitespace or control characters".into());
    }
    Ok(())
}

/// Refuses empty, `.` and `..` path segments.
fn check_segments(path: &str) -> Result<(), String> {
    if path
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err("the path has an empty, \".\" or \"..\" segment".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_scheme() {
        assert_eq!(
            SecretRef::parse("vault://secret/apps/graph#client_secret").unwrap(),
            SecretRef::Vault {
                mount: "secret".into(),
                path: "apps/graph".into(),
                field: Some("client_secret".into())
            }
        );
        assert_eq!(
            SecretRef::parse("aws-sm://graph/credentials#client_secret").unwrap(),
            SecretRef::AwsSm {
                name: "graph/credentials".into(),
                field: Some("client_secret".into())
            }
        );
        assert_eq!(
            SecretRef::parse("azure-kv://contoso-kv/graph-client-secret").unwrap(),
            SecretRef::AzureKv {
                vault: "contoso-kv".into(),
                name: "graph-client-secret".into(),
                field: None
            }
        );
        assert_eq!(
            SecretRef::parse("file:///etc/secret-sync/graph.json#client_secret").unwrap(),
            SecretRef::File {
                path: "/etc/secret-sync/graph.json".into(),
                field: Some("client_secret".into())
            }
        );
    }

    #[test]
    fn display_round_trips() {
        for text in [
            "vault://secret/apps/graph#client_secret",
            "vault://kv/a",
            "aws-sm://graph/credentials#client_secret",
            "aws-sm://token",
            "azure-kv://contoso-kv/graph-client-secret",
            "azure-kv://contoso-kv.vault.azure.net/n#f",
            "file:///etc/secret-sync/graph.json#client_secret",
            "file:///tmp/token",
        ] {
            let parsed = SecretRef::parse(text).unwrap();
            assert_eq!(parsed.to_string(), text);
            assert_eq!(SecretRef::parse(&parsed.to_string()).unwrap(), parsed);
        }
        for text in ["apps/graph#client_id", "graph.json"] {
            assert_eq!(NameRef::parse(text).unwrap().to_string(), text);
        }
    }

    #[test]
    fn errors_say_what_is_expected() {
        let cases = [
            ("secret/apps/graph", "starts with a scheme"),
            (
                "s3://bucket/key",
                "unknown scheme \"s3\": use one of vault://, aws-sm://, azure-kv://, file://",
            ),
            ("vault://secret", "expected vault://MOUNT/PATH"),
            ("vault://secret/apps//graph", "empty"),
            ("vault://secret/../x", "\"..\""),
            ("vault://secret/apps#", "the field after \"#\" is empty"),
            ("vault://secret/apps#a#b", "only one"),
            ("aws-sm://", "expected aws-sm://NAME"),
            ("azure-kv://contoso-kv", "expected azure-kv://VAULT/NAME"),
            (
                "azure-kv://contoso-kv/a/b",
                "expected azure-kv://VAULT/NAME",
            ),
            ("file://etc/token", "three slashes"),
            ("file:///etc/../token", "\"..\""),
            ("aws-sm://my secret", "whitespace"),
        ];
        for (input, expected) in cases {
            let err = SecretRef::parse(input).unwrap_err();
            let text = err.to_string();
            assert!(
                text.starts_with(&format!("invalid secret reference \"{input}\": ")),
                "{text}"
            );
            assert!(
                text.contains(expected),
                "for {input}: expected {expected:?} in {text:?}"
            );
        }
        assert!(
            NameRef::parse("#x")
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
        assert_eq!(
            NameRef::parse("apps/graph#client_id").unwrap(),
            NameRef {
                name: "apps/graph".into(),
                field: Some("client_id".into())
            }
        );
    }
}
