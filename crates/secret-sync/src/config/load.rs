//! Loading a config file: TOML text to a validated [`SyncConfig`], or every error at once.
//!
//! The document is parsed into toml's spanned tree and walked here by hand, section by
//! section, instead of deserialized: a deserializer stops at the first error, and a user
//! fixing a file wants all of them, each with its line, column and key path. Every table's
//! known keys are listed once ([`keys`]); the JSON Schema (`secret-sync schema`) is checked
//! against the same lists.
//!
//! Nothing here reads a secret or contacts a server. The only environment variables read are
//! those an `authority = { env = "VAR" }` names (a URL, not a secret), so an emulator's
//! address can be passed in.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Display;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use entra_auth::{AssertionAlgorithm, Authority, ClientId, Cloud, Scope, TenantId};
use secret_backends::azure_kv::AzureCloud;
use secret_backends::vault::{JwtSource, KvVersion};
use secret_backends::{AwsOptions, BackendError, FileOptions, Format, NameRef};
use toml::Spanned;
use toml::de::{DeString, DeTable, DeValue};
use url::Url;

use super::error::{ConfigError, ConfigErrors};
use super::lifecycle::{JobLifecycle, WatchSpec};
use super::model::{
    AzureKeyVaultSpec, BackendRef, BackendSpec, CredentialSpec, EntraIdentity, JobSpec,
    PassTimeout, SecretSource, Settings, SyncConfig, TargetSpec, Value, VaultAuthSpec, VaultSpec,
};

#[path = "credentials.rs"]
mod credentials;

#[path = "blocks.rs"]
mod blocks;

#[path = "actions.rs"]
pub mod actions;

/// The keys each table accepts: the loader rejects any other, and the schema lists these.
pub mod keys {
    pub const ROOT: &[&str] = &["settings", "backends", "jobs"];
    pub const SETTINGS: &[&str] = &[
        "refresh_before",
        "concurrency",
        "authority",
        "cloud",
        "ca_file",
        "listen",
        "pass_timeout",
        "credentials",
    ];
    pub use super::actions::keys::*;
    #[allow(unused_imports)] // the schema's tests list them
    pub use super::credentials::keys::*;
    pub const BACKEND_KINDS: &[&str] = &["file", "vault", "aws-secrets-manager", "azure-key-vault"];
    pub const FILE: &[&str] = &["kind", "dir", "mode", "follow_symlinks", "stale_temp_after"];
    pub const VAULT: &[&str] = &[
        "kind",
        "address",
        "mount",
        "kv_version",
        "namespace",
        "auth",
        "allow_insecure_http",
        "ca_file",
        "timeout",
    ];
    pub const VAULT_AUTH_METHODS: &[&str] = &["token", "approle", "jwt", "kubernetes"];
    pub const VAULT_AUTH_TOKEN: &[&str] = &["method", "token_env", "token_file"];
    pub const VAULT_AUTH_APPROLE: &[&str] = &[
        "method",
        "mount",
        "role_id",
        "secret_id_env",
        "secret_id_file",
    ];
    pub const VAULT_AUTH_JWT: &[&str] = &["method", "mount", "role", "jwt_env", "jwt_file"];
    pub const VAULT_AUTH_KUBERNETES: &[&str] = &["method", "mount", "role", "jwt_file"];
    pub const AWS: &[&str] = &[
        "kind",
        "region",
        "endpoint_url",
        "kms_key_id",
        "profile",
        "max_attempts",
    ];
    pub const AZURE_KEY_VAULT: &[&str] =
        &["kind", "vault_url", "ca_file", "recover_deleted", "auth"];
    /// `auth` of an Azure Key Vault backend: `method` plus the identity keys of that method.
    pub const AZURE_AUTH_METHODS: &[&str] = &[
        "client-secret",
        "certificate",
        "federated-token",
        "workload-identity",
        "github-oidc",
        "managed-identity",
    ];
    /// Keys of an Entra identity common to every credential kind.
    pub const IDENTITY: &[&str] = &["authority", "tenant_id", "client_id"];
    /// The credential keys of a job (exactly one of the choosing keys is given).
    pub const CREDENTIAL: &[&str] = &[
        "client_secret",
        "certificate",
        "certificate_key",
        "assertion_alg",
        "federated_token_file",
        "federated_token_env",
        "workload_identity",
        "github_oidc",
        "managed_identity",
    ];
    pub const JOB_OWN: &[&str] = &[
        "scope",
        "targets",
        "pass_timeout",
        "credentials",
        "rotation",
        "actions",
    ];
    pub const TARGET: &[&str] = &["to", "name", "format", "adopt", "actions"];
    /// `{ env = "VAR" }`, `{ file = "PATH" }`, `{ from = "BACKEND", ref = "path#field" }`.
    pub const SOURCE: &[&str] = &["env", "file", "from", "ref"];
}

/// Loads and checks the config file at `path`. Relative paths in it are taken from the file's
/// directory; `authority = { env = "VAR" }` reads the process environment.
pub fn load(path: &Path) -> Result<SyncConfig, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|err| {
        ConfigErrors::new(
            path,
            vec![ConfigError {
                position: None,
                key: String::new(),
                message: format!(
                    "cannot read the config file ({err}): {}",
                    missing_file_advice(path)
                ),
            }],
        )
    })?;
    parse(&text, path, &|var| std::env::var(var).ok())
}

/// What to do about a config file that cannot be read, by where its path came from: the
/// variable SECRET_SYNC_CONFIG, the default `secret-sync.toml`, or `--config`.
fn missing_file_advice(path: &Path) -> &'static str {
    match std::env::var_os("SECRET_SYNC_CONFIG") {
        Some(var) if Path::new(&var) == path => {
            "it is the file the environment variable SECRET_SYNC_CONFIG names: correct the \
             variable or unset it, or pass --config FILE"
        }
        None if path == Path::new("secret-sync.toml") => {
            "without --config or SECRET_SYNC_CONFIG, secret-sync.toml in the current directory \
             is read: pass --config FILE or set SECRET_SYNC_CONFIG"
        }
        _ => "check the path given to --config",
    }
}

/// Checks `text` as the content of the file `path`, looking environment variables up with `env`.
pub fn parse(
    text: &str,
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<SyncConfig, ConfigErrors> {
    if text.len() >= IN_BLOCKS_FROM
        && let Some(config) = parse_in_blocks(text, path, env, BLOCK_BYTES)
    {
        return Ok(config);
    }
    parse_whole(text, path, env)
}

/// From this size on, a config is first parsed in blocks of jobs ([`parse_in_blocks`]); a
/// smaller one is one parse, whose tree is small anyway.
const IN_BLOCKS_FROM: usize = 256 * 1024;
/// About how much text of jobs is parsed at once (some 1,000 jobs of the bench's config).
const BLOCK_BYTES: usize = 256 * 1024;

/// A large config, parsed a block of `[jobs.NAME]` tables at a time ([`blocks`]), so that
/// toml's tokens, events and tree are held for one block at a time, not for the whole file
/// (issue 15: 600 MB for 100,000 jobs at once). `None` whenever anything is not plain: a
/// syntax error, a job name found twice (TOML may spread a table over two places; one parse
/// puts them together or refuses them), anything but `jobs` at a block's root, or any error
/// in the walk. The caller then parses the whole file as one document, so what `None` costs
/// is time and memory, never a difference in what a file means or in its errors.
fn parse_in_blocks(
    text: &str,
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    block_bytes: usize,
) -> Option<SyncConfig> {
    let split = blocks::split(text, block_bytes)?;
    let mut loader = Loader::new(text, path, env);
    let (document, syntax_errors) = DeTable::parse_recoverable(split.rest.as_str());
    if !syntax_errors.is_empty() {
        return None;
    }
    let root = Tbl {
        path: String::new(),
        at: 0..0,
        map: document.get_ref(),
    };
    loader.check_keys(&root, keys::ROOT);
    let settings = loader.settings(&root);
    loader.authority = settings.authority.clone();
    loader.pass_timeout = settings.pass_timeout;
    let backends = loader.backends(&root);
    // Sized once: at 100,000 jobs a `Vec<JobSpec>` grown by doubling peaks at 131,072 entries
    // plus the 65,536 being copied (issue 15). Every job has at least one target.
    let mut jobs = Vec::with_capacity(split.jobs);
    // The targets of one block, for `job_entries`; the checks across targets are made from
    // `jobs` once every block is read (a list of every target's key path, backend and name
    // held 20 MB at 100,000 targets; issue 15).
    let mut written = Vec::new();
    // Job names by hash: two equal hashes, whether the names are equal or not, make it `None`.
    let mut names = HashSet::with_capacity(split.jobs);
    // The spans of a block's tree are the block's, not the file's: they would point at the
    // wrong place in a message, but no message of this walk is ever shown (any error: `None`).
    let mut walk = |loader: &mut Loader<'_>, root: &Tbl<'_, '_>, written: &mut Vec<_>| {
        if !root.has("jobs") {
            return Some(());
        }
        let table = loader.sub_table(root, "jobs")?;
        for (key, _) in table.map.iter() {
            if !names.insert(hash_of(key.get_ref().as_ref() as &str)) {
                return None;
            }
        }
        loader.job_entries(&table, written, &mut jobs);
        written.clear();
        Some(())
    };
    walk(&mut loader, &root, &mut written)?;
    drop(document);
    for block in &split.blocks {
        let (document, syntax_errors) = DeTable::parse_recoverable(&text[block.clone()]);
        if !syntax_errors.is_empty() || !loader.errors.is_empty() {
            return None;
        }
        let root = Tbl {
            path: String::new(),
            at: 0..0,
            map: document.get_ref(),
        };
        if root.map.len() != 1 {
            return None;
        }
        walk(&mut loader, &root, &mut written)?;
    }
    drop(names);
    if jobs.is_empty() || !loader.errors.is_empty() {
        return None;
    }
    // The checks of `same_secrets` and `vault_names_below_mount`, without their messages:
    // any finding makes it `None`, and the whole parse reports it.
    let targets: Vec<&TargetSpec> = jobs.iter().flat_map(|job| &job.targets).collect();
    if !same_secret_pairs(&targets, |t| (&t.backend, &t.name), &backends).is_empty()
        || targets.iter().any(|t| match backends.get(&t.backend) {
            Some(BackendSpec::Vault(vault)) => vault_name_below_mount(&t.name, vault).is_some(),
            _ => false,
        })
    {
        return None;
    }
    drop(targets);
    loader.errors.is_empty().then(|| SyncConfig {
        source_path: path.to_owned(),
        settings,
        backends,
        jobs,
    })
}

/// [`parse`] as one document.
fn parse_whole(
    text: &str,
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<SyncConfig, ConfigErrors> {
    let mut loader = Loader::new(text, path, env);
    let (document, syntax_errors) = DeTable::parse_recoverable(text);
    if !syntax_errors.is_empty() {
        for err in syntax_errors {
            let span = err.span().unwrap_or(0..0);
            loader.error(
                &span,
                "",
                format!("{}: fix the TOML syntax", err.message().trim()),
            );
        }
        return Err(ConfigErrors::new(path, loader.errors));
    }
    let root = Tbl {
        path: String::new(),
        at: 0..0,
        map: document.get_ref(),
    };
    loader.check_keys(&root, keys::ROOT);
    let settings = loader.settings(&root);
    loader.authority = settings.authority.clone();
    loader.pass_timeout = settings.pass_timeout;
    let backends = loader.backends(&root);
    let jobs = loader.jobs(&root, &backends);
    if !loader.errors.is_empty() {
        return Err(ConfigErrors::new(path, loader.errors));
    }
    Ok(SyncConfig {
        source_path: path.to_owned(),
        settings,
        backends,
        jobs,
    })
}

type Span = Range<usize>;
type Item<'i> = Spanned<DeValue<'i>>;
type Key<'i> = Spanned<DeString<'i>>;

/// A table being read: its key path, where to point for a missing key, and its entries.
struct Tbl<'a, 'i> {
    path: String,
    at: Span,
    map: &'a DeTable<'i>,
}

impl<'a, 'i> Tbl<'a, 'i> {
    fn get(&self, key: &str) -> Option<(&'a Key<'i>, &'a Item<'i>)> {
        self.map.iter().find(|(k, _)| k.get_ref() == key)
    }

    fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    fn path_of(&self, key: &str) -> String {
        join(&self.path, key)
    }
}

/// The backend kinds, for name checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Vault,
    Aws,
    AzureKeyVault,
}

impl Kind {
    fn check_name(self, backend: &str, name: &str) -> Result<(), BackendError> {
        match self {
            Kind::File => secret_backends::file::check_name(backend, name),
            Kind::Vault => secret_backends::vault::check_name(backend, name),
            Kind::Aws => secret_backends::aws::check_name(backend, name),
            Kind::AzureKeyVault => secret_backends::azure_kv::check_name(backend, name),
        }
    }
}

/// How a job or Key Vault `auth` proves itself; the keys that go with each are read later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cred {
    ClientSecret,
    Certificate,
    FederatedToken,
    WorkloadIdentity,
    GithubOidc,
    ManagedIdentity,
}

/// The keys that choose a job's credential, and what each chooses.
const CREDENTIAL_CHOICES: &[(&str, Cred)] = &[
    ("client_secret", Cred::ClientSecret),
    ("certificate", Cred::Certificate),
    ("federated_token_file", Cred::FederatedToken),
    ("federated_token_env", Cred::FederatedToken),
    ("workload_identity", Cred::WorkloadIdentity),
    ("github_oidc", Cred::GithubOidc),
    ("managed_identity", Cred::ManagedIdentity),
];

const SECRET_SOURCE_HINT: &str = "give { env = \"VAR\" }, { file = \"PATH\" } or \
                                  { from = \"BACKEND\", ref = \"path#field\" }";

struct Loader<'s> {
    src: &'s str,
    base_dir: PathBuf,
    env: &'s dyn Fn(&str) -> Option<String>,
    errors: Vec<ConfigError>,
    /// Every defined backend and its kind (`None` when the kind itself is wrong), so that
    /// references to a backend with a mistake do not add a second, misleading error.
    kinds: BTreeMap<String, Option<Kind>>,
    /// `[settings] authority`, the default of jobs and Key Vault identities.
    authority: Authority,
    /// `[settings] cloud`: every authority is taken as this cloud's.
    cloud: Option<Cloud>,
    /// `[settings] pass_timeout`, the default of jobs.
    pass_timeout: Duration,
    /// `[settings.credentials]`, the default of jobs' `[jobs.NAME.credentials]`.
    watch_defaults: WatchSpec,
    /// One `Arc` of each distinct identity, scope, pass timeout and lifecycle of the jobs.
    shared: SharedParts,
}

/// The parts of [`JobSpec`] that many jobs have in common, one `Arc` per distinct value: at
/// 100,000 jobs over 1,000 apps, an identity held per job was 70 MB of the config (issue 15).
#[derive(Default)]
struct SharedParts {
    identities: Interner<EntraIdentity>,
    scopes: Interner<Scope>,
    pass_timeouts: Interner<PassTimeout>,
    lifecycles: Interner<JobLifecycle>,
}

/// Hands out one `Arc` for equal values.
struct Interner<T>(HashSet<Arc<T>>);

impl<T> Default for Interner<T> {
    fn default() -> Self {
        Interner(HashSet::new())
    }
}

impl<T: Eq + std::hash::Hash> Interner<T> {
    fn get(&mut self, value: T) -> Arc<T> {
        if let Some(shared) = self.0.get(&value) {
            return Arc::clone(shared);
        }
        let shared = Arc::new(value);
        self.0.insert(Arc::clone(&shared));
        shared
    }
}

impl<'s> Loader<'s> {
    fn new(text: &'s str, path: &Path, env: &'s dyn Fn(&str) -> Option<String>) -> Self {
        let base_dir = path
            .parent()
            .filter(|dir| !dir.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_owned();
        Loader {
            src: text,
            base_dir,
            env,
            errors: Vec::new(),
            kinds: BTreeMap::new(),
            authority: Authority::public(),
            cloud: None,
            pass_timeout: Settings::DEFAULT_PASS_TIMEOUT,
            watch_defaults: WatchSpec::default(),
            shared: SharedParts::default(),
        }
    }
}

impl Loader<'_> {
    // ----- reporting -----

    fn error(&mut self, span: &Span, key: &str, message: impl Into<String>) {
        let position = Some(self.line_column(span.start));
        self.errors.push(ConfigError {
            position,
            key: key.to_owned(),
            message: message.into(),
        });
    }

    fn line_column(&self, offset: usize) -> (usize, usize) {
        let before = self.src.get(..offset).unwrap_or(self.src);
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
        (line, column)
    }

    fn missing(&mut self, table: &Tbl<'_, '_>, key: &str, what: &str) {
        self.error(&table.at, &table.path_of(key), format!("missing: {what}"));
    }

    fn wrong_type(&mut self, item: &Item<'_>, path: &str, expected: &str) {
        self.error(
            &item.span(),
            path,
            format!("expected {expected}, found {}", type_name(item.get_ref())),
        );
    }

    /// Reports every key of `table` that is not in `allowed`, with a suggestion when one is close.
    fn check_keys(&mut self, table: &Tbl<'_, '_>, allowed: &[&str]) {
        for (key, _) in table.map.iter() {
            let name: &str = key.get_ref();
            if allowed.contains(&name) {
                continue;
            }
            let message = match suggest(name, allowed.iter().copied()) {
                Some(close) => format!("unknown key \"{name}\"; did you mean \"{close}\"?"),
                None => format!(
                    "unknown key \"{name}\"; the keys here are: {}",
                    allowed.join(", ")
                ),
            };
            self.error(&key.span(), &table.path_of(name), message);
        }
    }

    // ----- typed values -----

    fn table<'a, 'i>(&mut self, path: String, at: Span, item: &'a Item<'i>) -> Option<Tbl<'a, 'i>> {
        match item.get_ref() {
            DeValue::Table(map) => Some(Tbl { path, at, map }),
            _ => {
                self.wrong_type(item, &path, "a table");
                None
            }
        }
    }

    /// The sub-table `key` of `table`, if present and a table.
    fn sub_table<'a, 'i>(&mut self, table: &Tbl<'a, 'i>, key: &str) -> Option<Tbl<'a, 'i>> {
        let (k, item) = table.get(key)?;
        self.table(table.path_of(key), k.span(), item)
    }

    fn string(&mut self, table: &Tbl<'_, '_>, key: &str) -> Option<(String, Span)> {
        let (_, item) = table.get(key)?;
        match item.get_ref() {
            DeValue::String(s) if s.trim().is_empty() => {
                self.error(&item.span(), &table.path_of(key), "is empty");
                None
            }
            DeValue::String(s) => Some((s.to_string(), item.span())),
            _ => {
                self.wrong_type(item, &table.path_of(key), "a string");
                None
            }
        }
    }

    fn required_string(
        &mut self,
        table: &Tbl<'_, '_>,
        key: &str,
        what: &str,
    ) -> Option<(String, Span)> {
        if !table.has(key) {
            self.missing(table, key, what);
            return None;
        }
        self.string(table, key)
    }

    fn boolean(&mut self, table: &Tbl<'_, '_>, key: &str) -> Option<bool> {
        let (_, item) = table.get(key)?;
        match item.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                self.wrong_type(item, &table.path_of(key), "true or false");
                None
            }
        }
    }

    fn integer(&mut self, table: &Tbl<'_, '_>, key: &str) -> Option<(i64, Span)> {
        let (_, item) = table.get(key)?;
        match item.get_ref() {
            DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
                Ok(n) => Some((n, item.span())),
                Err(_) => {
                    self.error(
                        &item.span(),
                        &table.path_of(key),
                        "is too large: give a smaller number",
                    );
                    None
                }
            },
            _ => {
                self.wrong_type(item, &table.path_of(key), "an integer");
                None
            }
        }
    }

    /// An integer in `range`.
    fn integer_in(
        &mut self,
        table: &Tbl<'_, '_>,
        key: &str,
        range: std::ops::RangeInclusive<i64>,
    ) -> Option<i64> {
        let (n, span) = self.integer(table, key)?;
        if range.contains(&n) {
            return Some(n);
        }
        self.error(
            &span,
            &table.path_of(key),
            format!(
                "{n} is out of range: give a number from {} to {}",
                range.start(),
                range.end()
            ),
        );
        None
    }

    /// A duration with a unit, e.g. `"15m"`, `"90s"`, `"1h 30m"`; never zero.
    fn duration(&mut self, table: &Tbl<'_, '_>, key: &str) -> Option<Duration> {
        let (_, item) = table.get(key)?;
        let path = table.path_of(key);
        let DeValue::String(text) = item.get_ref() else {
            let found = type_name(item.get_ref());
            self.error(
                &item.span(),
                &path,
                format!(
                    "expected a duration with a unit such as \"15m\" or \"90s\", found {found}"
                ),
            );
            return None;
        };
        match humantime::parse_duration(text.trim()) {
            Ok(d) if d.is_zero() => {
                self.error(&item.span(), &path, "must be longer than zero");
                None
            }
            Ok(d) => Some(d),
            Err(err) => {
                self.error(
                    &item.span(),
                    &path,
                    format!(
                        "\"{text}\" is not a duration ({err}): write a number and a unit, e.g. \"15m\", \"90s\", \"1h 30m\""
                    ),
                );
                None
            }
        }
    }

    /// A path; a relative one is taken from the config file's directory.
    fn path(&mut self, table: &Tbl<'_, '_>, key: &str) -> Option<PathBuf> {
        let (text, _) = self.string(table, key)?;
        Some(self.resolve(&text))
    }

    fn resolve(&self, text: &str) -> PathBuf {
        let path = Path::new(text);
        if path.is_absolute() {
            path.to_owned()
        } else {
            self.base_dir.join(path)
        }
    }

    /// A path to a file that must exist now (CA bundles: read when a store or client is built).
    fn existing_file(&mut self, table: &Tbl<'_, '_>, key: &str) -> Option<PathBuf> {
        let (text, span) = self.string(table, key)?;
        let path = self.resolve(&text);
        if path.is_file() {
            return Some(path);
        }
        self.error(
            &span,
            &table.path_of(key),
            format!(
                "{} does not exist or is not a file (a relative path is taken from the config file's directory)",
                path.display()
            ),
        );
        None
    }

    /// The name of an environment variable.
    fn env_name(&mut self, table: &Tbl<'_, '_>, key: &str) -> Option<String> {
        let (name, span) = self.string(table, key)?;
        let valid = name.chars().next().is_some_and(|c| !c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if valid {
            return Some(name);
        }
        self.error(
            &span,
            &table.path_of(key),
            format!(
                "\"{name}\" is not an environment variable name: use letters, digits and _, e.g. \"GRAPH_CLIENT_SECRET\""
            ),
        );
        None
    }

    /// A value parsed with `FromStr`, its error message reported as is.
    fn parsed<T: FromStr>(&mut self, table: &Tbl<'_, '_>, key: &str) -> Option<T>
    where
        T::Err: Display,
    {
        let (text, span) = self.string(table, key)?;
        match text.parse() {
            Ok(value) => Some(value),
            Err(err) => {
                self.error(&span, &table.path_of(key), err.to_string());
                None
            }
        }
    }

    /// `public`, `usgov`, `china`, an authority URL, or `{ env = "VAR" }` holding one of those.
    fn authority(&mut self, table: &Tbl<'_, '_>) -> Option<Authority> {
        let (key, item) = table.get("authority")?;
        let path = table.path_of("authority");
        let (text, span) = match item.get_ref() {
            DeValue::String(text) => (text.to_string(), item.span()),
            DeValue::Table(_) => {
                let source = self.table(path.clone(), key.span(), item)?;
                self.check_keys(&source, &["env"]);
                if !source.has("env") {
                    self.missing(&source, "env", "the variable holding the authority, e.g. { env = \"AZURE_AUTHORITY_HOST\" }");
                    return None;
                }
                let var = self.env_name(&source, "env")?;
                let span = source.get("env").map(|(_, v)| v.span())?;
                match (self.env)(&var) {
                    Some(value) => (value, span),
                    None => {
                        self.error(
                            &span,
                            &path,
                            format!(
                                "the environment variable {var} is not set: set it to public, usgov, china or \
                                 the authority's URL, or write the authority here"
                            ),
                        );
                        return None;
                    }
                }
            }
            _ => {
                self.wrong_type(
                    item,
                    &path,
                    "public, usgov, china, an https URL, or { env = \"VAR\" }",
                );
                return None;
            }
        };
        match authority_from_text(&text).and_then(|a| self.in_cloud(a)) {
            Ok(authority) => Some(authority),
            Err(message) => {
                self.error(&span, &path, message);
                None
            }
        }
    }

    /// `authority` taken as `[settings] cloud`'s (a proxy's or an emulator's URL), refusing the
    /// well-known authority of another cloud.
    fn in_cloud(&self, authority: Authority) -> Result<Authority, String> {
        let Some(cloud) = self.cloud else {
            return Ok(authority);
        };
        match authority.cloud() {
            Cloud::Custom => Ok(authority.in_cloud(cloud)),
            same if same == cloud => Ok(authority),
            other => Err(format!(
                "{} is the {} cloud's authority, but [settings] says cloud = \"{}\": \
                 remove one of them, or give that cloud's authority",
                authority.as_str(),
                cloud_description(other),
                cloud_name(cloud)
            )),
        }
    }

    /// `[settings] cloud`: `public`, `usgov` or `china`.
    fn cloud(&mut self, table: &Tbl<'_, '_>) -> Option<Cloud> {
        let (text, span) = self.string(table, "cloud")?;
        let cloud = match text.trim().to_ascii_lowercase().as_str() {
            "public" => Cloud::Public,
            "usgov" => Cloud::UsGovernment,
            "china" => Cloud::China,
            _ => {
                self.error(
                    &span,
                    &table.path_of("cloud"),
                    format!("\"{text}\" is not a cloud: use public, usgov or china"),
                );
                return None;
            }
        };
        Some(cloud)
    }

    // ----- [settings] -----

    fn settings(&mut self, root: &Tbl<'_, '_>) -> Settings {
        let mut settings = Settings::default();
        settings.credentials.state_dir = self.base_dir.clone();
        // Like the Azure SDKs and `secret-sync token`, the default authority is the one
        // AZURE_AUTHORITY_HOST names (AKS workload identity sets it, sovereign clouds need it).
        if let Some(host) = (self.env)("AZURE_AUTHORITY_HOST").filter(|h| !h.trim().is_empty()) {
            match authority_from_text(&host) {
                Ok(authority) => settings.authority = authority,
                Err(message) => self.error(
                    &(0..0),
                    "settings.authority",
                    format!(
                        "the default authority from AZURE_AUTHORITY_HOST is not usable: {message}"
                    ),
                ),
            }
        }
        let Some(table) = self.sub_table(root, "settings") else {
            return settings;
        };
        self.check_keys(&table, keys::SETTINGS);
        // The cloud first: the authorities below (and the jobs' and logins') are taken as its.
        self.cloud = self.cloud(&table);
        if let Some(cloud) = self.cloud {
            let from_env = (self.env)("AZURE_AUTHORITY_HOST").is_some_and(|h| !h.trim().is_empty());
            if !table.has("authority") && !from_env {
                settings.authority = match cloud {
                    Cloud::UsGovernment => Authority::us_government(),
                    Cloud::China => Authority::china(),
                    _ => Authority::public(),
                };
            }
            match self.in_cloud(settings.authority.clone()) {
                Ok(authority) => settings.authority = authority,
                Err(message) if !table.has("authority") => self.error(
                    &table.at,
                    "settings.authority",
                    format!("the default authority from AZURE_AUTHORITY_HOST: {message}"),
                ),
                Err(_) => {}
            }
        }
        if let Some(d) = self.duration(&table, "refresh_before") {
            settings.refresh_before = d;
        }
        if let Some(n) = self.integer_in(&table, "concurrency", 1..=1024) {
            settings.concurrency = n as usize;
        }
        if let Some(d) = self.duration(&table, "pass_timeout") {
            settings.pass_timeout = d;
        }
        if let Some(authority) = self.authority(&table) {
            settings.authority = authority;
        }
        settings.ca_file = self.existing_file(&table, "ca_file");
        if let Some((text, span)) = self.string(&table, "listen") {
            match text.parse::<SocketAddr>() {
                Ok(addr) => settings.listen = Some(addr),
                Err(_) => self.error(
                    &span,
                    &table.path_of("listen"),
                    format!(
                        "\"{text}\" is not an address and port: write e.g. \"127.0.0.1:9090\" or \"[::]:9090\""
                    ),
                ),
            }
        }
        if let Some(credentials) = self.credential_settings(&table) {
            self.watch_defaults = credentials.defaults.clone();
            settings.credentials = credentials;
        }
        settings
    }

    // ----- [backends.NAME] -----

    fn backends(&mut self, root: &Tbl<'_, '_>) -> BTreeMap<String, BackendSpec> {
        let mut backends = BTreeMap::new();
        let Some(table) = self.sub_table(root, "backends") else {
            return backends;
        };
        // Kinds first, so that every reference can be checked whatever the order.
        let mut tables = Vec::new();
        for (key, item) in table.map.iter() {
            let name = key.get_ref().to_string();
            self.check_item_name(&key.span(), &table.path_of(&name), &name, "backend");
            let Some(backend) = self.table(table.path_of(&name), key.span(), item) else {
                self.kinds.insert(name, None);
                continue;
            };
            let kind = self.kind(&backend);
            self.kinds.insert(name.clone(), kind);
            if let Some(kind) = kind {
                tables.push((name, kind, backend));
            }
        }
        for (name, kind, backend) in tables {
            let spec = match kind {
                Kind::File => self.file_backend(&backend).map(BackendSpec::File),
                Kind::Vault => self.vault_backend(&backend).map(BackendSpec::Vault),
                Kind::Aws => self.aws_backend(&backend).map(BackendSpec::Aws),
                Kind::AzureKeyVault => self.azure_backend(&backend).map(BackendSpec::AzureKeyVault),
            };
            if let Some(spec) = spec {
                backends.insert(name, spec);
            }
        }
        backends
    }

    fn kind(&mut self, backend: &Tbl<'_, '_>) -> Option<Kind> {
        let (kind, span) = self.required_string(
            backend,
            "kind",
            &format!(
                "the kind of store: one of {}",
                keys::BACKEND_KINDS.join(", ")
            ),
        )?;
        match kind.as_str() {
            "file" => Some(Kind::File),
            "vault" => Some(Kind::Vault),
            "aws-secrets-manager" => Some(Kind::Aws),
            "azure-key-vault" => Some(Kind::AzureKeyVault),
            _ => {
                let message = unknown_choice("kind", &kind, keys::BACKEND_KINDS);
                self.error(&span, &backend.path_of("kind"), message);
                None
            }
        }
    }

    fn file_backend(&mut self, table: &Tbl<'_, '_>) -> Option<FileOptions> {
        self.check_keys(table, keys::FILE);
        if !table.has("dir") {
            self.missing(
                table,
                "dir",
                "the directory tokens are written in, e.g. dir = \"/var/lib/secret-sync\"",
            );
        }
        let dir = self.path(table, "dir");
        let mode = self.mode(table);
        let follow_symlinks = self.boolean(table, "follow_symlinks");
        let stale_temp_after = self.duration(table, "stale_temp_after");
        let mut options = FileOptions::new(dir?);
        if let Some(mode) = mode {
            options.mode = mode;
        }
        if let Some(follow) = follow_symlinks {
            options.follow_symlinks = follow;
        }
        if let Some(after) = stale_temp_after {
            options.stale_temp_after = after;
        }
        Some(options)
    }

    /// `mode = 0o600` (a TOML octal integer) or `mode = "0600"`.
    fn mode(&mut self, table: &Tbl<'_, '_>) -> Option<u32> {
        let (_, item) = table.get("mode")?;
        let path = table.path_of("mode");
        let mode = match item.get_ref() {
            DeValue::Integer(_) => self.integer(table, "mode")?.0,
            DeValue::String(text) => {
                let digits = text.trim().trim_start_matches("0o");
                match i64::from_str_radix(digits, 8) {
                    Ok(n) => n,
                    Err(_) => {
                        self.error(
                            &item.span(),
                            &path,
                            format!(
                                "\"{text}\" is not an octal mode: write e.g. \"0600\" or 0o600"
                            ),
                        );
                        return None;
                    }
                }
            }
            _ => {
                self.wrong_type(item, &path, "a file mode such as 0o600 or \"0600\"");
                return None;
            }
        };
        if !(0..=0o777).contains(&mode) || mode & 0o600 != 0o600 {
            self.error(
                &item.span(),
                &path,
                "must be a permission mode up to 0o777 that lets the owner read and write \
                 (secret-sync reads the expiry back), written in octal: 0o600 or \"0600\"",
            );
            return None;
        }
        Some(mode as u32)
    }

    fn vault_backend(&mut self, table: &Tbl<'_, '_>) -> Option<VaultSpec> {
        self.check_keys(table, keys::VAULT);
        let allow_insecure_http = self.boolean(table, "allow_insecure_http").unwrap_or(false);
        let address = self.url(
            table,
            "address",
            "the server's URL, e.g. address = \"https://vault.example.com:8200\"",
            if allow_insecure_http {
                Http::Allowed
            } else {
                Http::LoopbackOnly(
                    "it would send the Vault token unencrypted: use https, or set \
                     allow_insecure_http = true if the network is trusted",
                )
            },
        );
        let mount = self.vault_mount(table);
        let kv_version = self
            .integer_in(table, "kv_version", 1..=2)
            .map(|v| if v == 1 { KvVersion::V1 } else { KvVersion::V2 });
        let namespace = self.string(table, "namespace").map(|(ns, _)| ns);
        let auth = self.vault_auth(table);
        let ca_file = self.existing_file(table, "ca_file");
        let timeout = self.duration(table, "timeout");
        Some(VaultSpec {
            address: address?,
            mount: mount?,
            kv_version,
            namespace,
            auth: auth?,
            allow_insecure_http,
            ca_file,
            timeout: timeout.unwrap_or(Duration::from_secs(30)),
        })
    }

    fn vault_mount(&mut self, table: &Tbl<'_, '_>) -> Option<String> {
        let Some((text, span)) = self.string(table, "mount") else {
            return (!table.has("mount")).then(|| "secret".to_owned());
        };
        let mount = text.trim_matches('/');
        if secret_backends::vault::check_name("", mount).is_ok() {
            return Some(mount.to_owned());
        }
        self.error(
            &span,
            &table.path_of("mount"),
            format!("\"{text}\" is not a mount path: write the KV mount, e.g. \"secret\""),
        );
        None
    }

    fn vault_auth(&mut self, backend: &Tbl<'_, '_>) -> Option<VaultAuthSpec> {
        if !backend.has("auth") {
            self.missing(
                backend,
                "auth",
                "how to log in, e.g. auth = { method = \"token\", token_env = \"VAULT_TOKEN\" }",
            );
            return None;
        }
        let table = self.sub_table(backend, "auth")?;
        let (method, span) = self.required_string(
            &table,
            "method",
            &format!("one of {}", keys::VAULT_AUTH_METHODS.join(", ")),
        )?;
        let mount = |loader: &mut Self, default: &str| {
            loader
                .string(&table, "mount")
                .map_or_else(|| default.to_owned(), |(m, _)| m)
        };
        match method.as_str() {
            "token" => {
                self.check_keys(&table, keys::VAULT_AUTH_TOKEN);
                let token = self.env_or_file(&table, "token", "the Vault token")?;
                Some(VaultAuthSpec::Token { token })
            }
            "approle" => {
                self.check_keys(&table, keys::VAULT_AUTH_APPROLE);
                let mount = mount(self, "approle");
                let role_id = self.required_string(&table, "role_id", "the AppRole's role id");
                let secret_id = self.env_or_file(&table, "secret_id", "the AppRole secret id");
                Some(VaultAuthSpec::AppRole {
                    mount,
                    role_id: role_id?.0,
                    secret_id: secret_id?,
                })
            }
            "jwt" => {
                self.check_keys(&table, keys::VAULT_AUTH_JWT);
                let mount = mount(self, "jwt");
                let role = self.string(&table, "role").map(|(r, _)| r);
                let jwt = self.env_or_file(&table, "jwt", "the JWT to log in with")?;
                Some(VaultAuthSpec::Jwt { mount, role, jwt })
            }
            "kubernetes" => {
                self.check_keys(&table, keys::VAULT_AUTH_KUBERNETES);
                let mount = mount(self, "kubernetes");
                let role = self.required_string(
                    &table,
                    "role",
                    "the Vault role bound to the service account",
                );
                let jwt_file = self
                    .path(&table, "jwt_file")
                    .unwrap_or_else(|| PathBuf::from(JwtSource::KUBERNETES_TOKEN_FILE));
                Some(VaultAuthSpec::Kubernetes {
                    mount,
                    role: role?.0,
                    jwt_file,
                })
            }
            _ => {
                let message = unknown_choice("method", &method, keys::VAULT_AUTH_METHODS);
                self.error(&span, &table.path_of("method"), message);
                None
            }
        }
    }

    /// Exactly one of `{prefix}_env` and `{prefix}_file`.
    fn env_or_file(
        &mut self,
        table: &Tbl<'_, '_>,
        prefix: &str,
        what: &str,
    ) -> Option<SecretSource> {
        let env_key = format!("{prefix}_env");
        let file_key = format!("{prefix}_file");
        match (table.has(&env_key), table.has(&file_key)) {
            (true, false) => self.env_name(table, &env_key).map(SecretSource::Env),
            (false, true) => self.path(table, &file_key).map(SecretSource::File),
            (false, false) => {
                self.missing(
                    table,
                    &env_key,
                    &format!(
                        "where {what} is: {env_key} = \"VAR\" (an environment variable) or {file_key} = \"PATH\""
                    ),
                );
                None
            }
            (true, true) => {
                let (key, _) = table.get(&file_key)?;
                self.error(
                    &key.span(),
                    &table.path_of(&file_key),
                    format!("give either {env_key} or {file_key}, not both"),
                );
                None
            }
        }
    }

    fn aws_backend(&mut self, table: &Tbl<'_, '_>) -> Option<AwsOptions> {
        self.check_keys(table, keys::AWS);
        let mut options = AwsOptions::default();
        if let Some((region, span)) = self.string(table, "region") {
            if region
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            {
                options.region = Some(region);
            } else {
                self.error(
                    &span,
                    &table.path_of("region"),
                    format!("\"{region}\" is not an AWS region code: write e.g. \"eu-west-1\""),
                );
            }
        }
        options.endpoint_url = self
            .url(
                table,
                "endpoint_url",
                "",
                Http::LoopbackOnly("plain http is accepted only for a local test server"),
            )
            .map(|url| url.to_string());
        options.kms_key_id = self.string(table, "kms_key_id").map(|(k, _)| k);
        options.profile = self.string(table, "profile").map(|(p, _)| p);
        if let Some(n) = self.integer_in(table, "max_attempts", 1..=20) {
            options.max_attempts = n as u32;
        }
        Some(options)
    }

    fn azure_backend(&mut self, table: &Tbl<'_, '_>) -> Option<AzureKeyVaultSpec> {
        self.check_keys(table, keys::AZURE_KEY_VAULT);
        // The login first: its authority's cloud is where a bare vault name points.
        let auth = self.azure_auth(table);
        let cloud = key_vault_cloud(
            auth.as_ref()
                .map_or_else(|| self.authority.cloud(), |a| a.authority.cloud()),
        );
        let vault_url = self.vault_url(table, cloud);
        let ca_file = self.existing_file(table, "ca_file");
        let recover_deleted = self.boolean(table, "recover_deleted").unwrap_or(false);
        Some(AzureKeyVaultSpec {
            vault_url: vault_url?,
            ca_file,
            recover_deleted,
            auth: auth?,
        })
    }

    /// `https://NAME.vault.azure.net` (https only: Key Vault and its SDK need TLS), or a vault
    /// name, the host of that name in `cloud`.
    fn vault_url(&mut self, table: &Tbl<'_, '_>, cloud: AzureCloud) -> Option<Url> {
        let (text, span) = self.required_string(
            table,
            "vault_url",
            "the vault's URL, e.g. vault_url = \"https://contoso-tokens.vault.azure.net\"",
        )?;
        let path = table.path_of("vault_url");
        if !text.contains("://") {
            return match secret_backends::azure_kv::vault_url_in(&text, cloud) {
                Ok(url) => Some(url),
                Err(err) => {
                    self.error(&span, &path, err.message().to_owned());
                    None
                }
            };
        }
        let url = match Url::parse(&text) {
            Ok(url) => url,
            Err(err) => {
                self.error(
                    &span,
                    &path,
                    format!(
                        "{} is not a URL ({err}): write e.g. \"https://contoso-tokens.vault.azure.net\"",
                        shown(&text)
                    ),
                );
                return None;
            }
        };
        let plain = url.path() == "/"
            && url.query().is_none()
            && url.fragment().is_none()
            && url.username().is_empty()
            && url.password().is_none();
        if url.scheme() != "https" || !plain {
            self.error(
                &span,
                &path,
                "must be just the vault's https address, e.g. \"https://contoso-tokens.vault.azure.net\" \
                 (Key Vault is only reachable over TLS; no path, query or user)",
            );
            return None;
        }
        Some(url)
    }

    /// A URL; plain http as `http` allows.
    fn url(&mut self, table: &Tbl<'_, '_>, key: &str, what: &str, http: Http) -> Option<Url> {
        let (text, span) = if what.is_empty() {
            self.string(table, key)?
        } else {
            self.required_string(table, key, what)?
        };
        let path = table.path_of(key);
        let url = match Url::parse(&text) {
            Ok(url) if has_userinfo(&url) => {
                self.error(&span, &path, USERINFO);
                return None;
            }
            Ok(url) if url.host_str().is_some_and(|h| !h.is_empty()) => url,
            _ => {
                self.error(
                    &span,
                    &path,
                    format!(
                        "{} is not a URL: write e.g. \"https://host.example.com:8200\"",
                        shown(&text)
                    ),
                );
                return None;
            }
        };
        match (url.scheme(), http) {
            ("https", _) | ("http", Http::Allowed) => Some(url),
            ("http", Http::LoopbackOnly(_)) if is_loopback(&url) => Some(url),
            ("http", Http::LoopbackOnly(why)) => {
                self.error(
                    &span,
                    &path,
                    format!("uses plain http for a host that is not a loopback address: {why}"),
                );
                None
            }
            (scheme, _) => {
                self.error(
                    &span,
                    &path,
                    format!("the scheme \"{scheme}\" is not https"),
                );
                None
            }
        }
    }

    fn azure_auth(&mut self, backend: &Tbl<'_, '_>) -> Option<EntraIdentity> {
        if !backend.has("auth") {
            self.missing(
                backend,
                "auth",
                "the identity the store writes with, e.g. auth = { method = \"workload-identity\" }",
            );
            return None;
        }
        let table = self.sub_table(backend, "auth")?;
        let (method, span) = self.required_string(
            &table,
            "method",
            &format!("one of {}", keys::AZURE_AUTH_METHODS.join(", ")),
        )?;
        let (cred, own): (Cred, &[&str]) = match method.as_str() {
            "client-secret" => (Cred::ClientSecret, &["client_secret"]),
            "certificate" => (
                Cred::Certificate,
                &["certificate", "certificate_key", "assertion_alg"],
            ),
            "federated-token" => (
                Cred::FederatedToken,
                &["federated_token_file", "federated_token_env"],
            ),
            "workload-identity" => (Cred::WorkloadIdentity, &[]),
            "github-oidc" => (Cred::GithubOidc, &[]),
            "managed-identity" => (Cred::ManagedIdentity, &[]),
            _ => {
                let message = unknown_choice("method", &method, keys::AZURE_AUTH_METHODS);
                self.error(&span, &table.path_of("method"), message);
                return None;
            }
        };
        let allowed: Vec<&str> = ["method"]
            .iter()
            .chain(keys::IDENTITY)
            .chain(own)
            .copied()
            .collect();
        self.check_keys(&table, &allowed);
        // A backend's own login never reads another backend: no `from` here.
        self.identity(&table, cred, false)
    }

    // ----- [jobs.NAME] -----

    fn jobs(
        &mut self,
        root: &Tbl<'_, '_>,
        backends: &BTreeMap<String, BackendSpec>,
    ) -> Vec<JobSpec> {
        let mut jobs = Vec::new();
        let table = self.sub_table(root, "jobs");
        let Some(table) = table.filter(|t| !t.map.is_empty()) else {
            if !root.has("jobs") || self.errors.is_empty() {
                self.error(
                    &(0..0),
                    "jobs",
                    "the config defines no job: add a [jobs.NAME] table with tenant_id, client_id, \
                     a credential, scope and targets",
                );
            }
            return jobs;
        };
        let mut written: Vec<WrittenTarget> = Vec::new();
        self.job_entries(&table, &mut written, &mut jobs);
        self.same_secrets(&written, backends);
        self.vault_names_below_mount(&written, backends);
        jobs
    }

    /// Every `[jobs.NAME]` of `table` (the `jobs` table), in order, onto `jobs`.
    fn job_entries(
        &mut self,
        table: &Tbl<'_, '_>,
        written: &mut Vec<WrittenTarget>,
        jobs: &mut Vec<JobSpec>,
    ) {
        for (key, item) in table.map.iter() {
            let name = key.get_ref().to_string();
            let path = table.path_of(&name);
            self.check_item_name(&key.span(), &path, &name, "job");
            let Some(job) = self.table(path, key.span(), item) else {
                continue;
            };
            if let Some(spec) = self.job(&name, &job, written) {
                jobs.push(spec);
            }
        }
    }

    /// Refuses a Vault target name that starts with the backend's mount (and on KV v2 its
    /// `data/` or `metadata/`): copied from the API, `secret/data/apps/graph/token` would be
    /// written to `secret/data/secret/data/apps/graph/token`. The message gives the right name.
    fn vault_names_below_mount(
        &mut self,
        written: &[WrittenTarget],
        backends: &BTreeMap<String, BackendSpec>,
    ) {
        for target in written {
            let Some(BackendSpec::Vault(vault)) = backends.get(&target.backend) else {
                continue;
            };
            let Some(right) = vault_name_below_mount(&target.name, vault) else {
                continue;
            };
            let mount = vault.mount.trim_matches('/');
            let message = if right.is_empty() {
                format!(
                    "\"{}\" starts with the mount \"{mount}\" of backend \"{}\": the name is \
                     the path below the mount, e.g. \"apps/graph/token\"",
                    target.name, target.backend
                )
            } else {
                format!(
                    "\"{}\" starts with the mount \"{mount}\" of backend \"{}\" (a path as the \
                     API or the UI shows it): the name is the path below the mount{}; write \
                     \"{right}\"",
                    target.name,
                    target.backend,
                    if vault.kv_version == Some(KvVersion::V1) {
                        ""
                    } else {
                        " and below KV v2's data/ or metadata/"
                    }
                )
            };
            self.error(&target.span, &join(&target.at, "name"), message);
        }
    }

    /// Refuses targets that are one secret however they are spelled, so that two targets (of
    /// one job or two) cannot overwrite each other: the same name in one backend; one file
    /// reached through two file backends (nested `dir`s, a `dir` through a symlink: compared
    /// after lexical normalisation and by canonical path where the directories exist, the one
    /// file-system read of loading); Key Vault names that differ only in case (Key Vault
    /// names are case-insensitive), also through two backends of one vault; one Vault path
    /// through two backends of one server.
    fn same_secrets(
        &mut self,
        written: &[WrittenTarget],
        backends: &BTreeMap<String, BackendSpec>,
    ) {
        let place_of = |target: &WrittenTarget| {
            let spec = backends.get(&target.backend)?;
            Some(Place::of(&target.backend, spec, &target.name))
        };
        let clashes = same_secret_pairs(written, |t| (&t.backend, &t.name), backends);
        for (index, first) in clashes {
            let (target, first) = (&written[index], &written[first]);
            let message = if first.backend == target.backend && first.name == target.name {
                format!(
                    "\"{}\" in backend \"{}\" is already the target {}: two targets would \
                     overwrite each other; remove one",
                    target.name, target.backend, first.at
                )
            } else {
                let why = place_of(target)
                    .map(|place| place.why())
                    .unwrap_or_default();
                format!(
                    "\"{}\" in backend \"{}\" is the same secret as the target {} (\"{}\" in \
                     backend \"{}\"): {}; two targets would overwrite each other: remove one, \
                     or point them at different secrets",
                    target.name, target.backend, first.at, first.name, first.backend, why
                )
            };
            self.error(&target.span, &join(&target.at, "name"), message);
        }
    }

    fn job(
        &mut self,
        name: &str,
        table: &Tbl<'_, '_>,
        written: &mut Vec<WrittenTarget>,
    ) -> Option<JobSpec> {
        let allowed: Vec<&str> = keys::IDENTITY
            .iter()
            .chain(keys::CREDENTIAL)
            .chain(keys::JOB_OWN)
            .copied()
            .collect();
        self.check_keys(table, &allowed);
        let cred = self.job_credential(table);
        let identity = cred.and_then(|cred| self.identity(table, cred, true));
        let scope = if table.has("scope") {
            self.parsed::<Scope>(table, "scope")
        } else {
            self.missing(
                table,
                "scope",
                "the resource to get a token for, e.g. scope = \"https://graph.microsoft.com/.default\"",
            );
            None
        };
        let targets = self.targets(table, written);
        let pass_timeout = match self.duration(table, "pass_timeout") {
            Some(limit) => PassTimeout {
                limit,
                key: table.path_of("pass_timeout"),
            },
            None => PassTimeout {
                limit: self.pass_timeout,
                key: "settings.pass_timeout".to_owned(),
            },
        };
        let lifecycle = self.job_lifecycle(table, identity.as_ref());
        let actions = self.actions(table);
        let shared = &mut self.shared;
        Some(JobSpec {
            name: name.to_owned(),
            lifecycle: shared.lifecycles.get(lifecycle?),
            identity: shared.identities.get(identity?),
            scope: shared.scopes.get(scope?),
            targets: targets?,
            pass_timeout: shared.pass_timeouts.get(pass_timeout),
            actions: actions?,
        })
    }

    /// Which credential a job uses: exactly one of the choosing keys.
    fn job_credential(&mut self, table: &Tbl<'_, '_>) -> Option<Cred> {
        let mut chosen: Vec<(&str, Cred)> = Vec::new();
        for &(key, cred) in CREDENTIAL_CHOICES {
            let is_flag = matches!(
                cred,
                Cred::WorkloadIdentity | Cred::GithubOidc | Cred::ManagedIdentity
            );
            let given = if is_flag {
                self.boolean(table, key).unwrap_or(false)
            } else {
                table.has(key)
            };
            if given {
                chosen.push((key, cred));
            }
        }
        for key in ["certificate_key", "assertion_alg"] {
            if table.has(key) && !chosen.iter().any(|(_, c)| *c == Cred::Certificate) {
                let (k, _) = table.get(key)?;
                self.error(&k.span(), &table.path_of(key), "goes only with certificate");
            }
        }
        match chosen.as_slice() {
            [(_, cred)] => Some(*cred),
            [] => {
                self.missing(
                    table,
                    "client_secret",
                    "a credential: one of client_secret = { env = \"VAR\" } (or file/from), certificate, \
                     federated_token_file, federated_token_env, workload_identity = true, \
                     github_oidc = true, managed_identity = true",
                );
                None
            }
            [_, (second, _), ..] => {
                let names: Vec<&str> = chosen.iter().map(|(k, _)| *k).collect();
                let (k, _) = table.get(second)?;
                self.error(
                    &k.span(),
                    &table.path_of(second),
                    format!(
                        "a job has exactly one credential, this one has {}: keep one",
                        names.join(" and ")
                    ),
                );
                None
            }
        }
    }

    /// Authority, tenant, client id and the credential's own keys.
    fn identity(
        &mut self,
        table: &Tbl<'_, '_>,
        cred: Cred,
        allow_from: bool,
    ) -> Option<EntraIdentity> {
        let authority = if table.has("authority") {
            self.authority(table)
        } else {
            Some(self.authority.clone())
        };
        let credential = self.credential(table, cred, allow_from);
        let tenant_id = self.value::<TenantId>(table, "tenant_id", allow_from);
        let client_id = self.value::<ClientId>(table, "client_id", allow_from);
        let (tenant_id, client_id) = match cred {
            Cred::ManagedIdentity => {
                if let Some((k, _)) = table.get("tenant_id") {
                    self.error(
                        &k.span(),
                        &table.path_of("tenant_id"),
                        "a managed identity takes no tenant id: remove it (client_id picks a user-assigned identity)",
                    );
                    return None;
                }
                (None, client_id.flatten())
            }
            Cred::WorkloadIdentity => (
                Some(tenant_id?.unwrap_or(Value::Env("AZURE_TENANT_ID".into()))),
                Some(client_id?.unwrap_or(Value::Env("AZURE_CLIENT_ID".into()))),
            ),
            _ => {
                let what = "a GUID, a verified domain, { env = \"VAR\" } or { from = \"BACKEND\", ref = \"path#field\" }";
                if !table.has("tenant_id") {
                    self.missing(
                        table,
                        "tenant_id",
                        &format!("the directory (tenant) id: {what}"),
                    );
                }
                if !table.has("client_id") {
                    self.missing(
                        table,
                        "client_id",
                        &format!("the application (client) id: {what}"),
                    );
                }
                (tenant_id.flatten(), client_id.flatten())
            }
        };
        if !matches!(cred, Cred::ManagedIdentity) && (tenant_id.is_none() || client_id.is_none()) {
            return None;
        }
        Some(EntraIdentity {
            authority: authority?,
            tenant_id,
            client_id,
            credential: credential?,
        })
    }

    fn credential(
        &mut self,
        table: &Tbl<'_, '_>,
        cred: Cred,
        allow_from: bool,
    ) -> Option<CredentialSpec> {
        match cred {
            Cred::ClientSecret => {
                if !table.has("client_secret") {
                    self.missing(
                        table,
                        "client_secret",
                        &format!("where the client secret is: {SECRET_SOURCE_HINT}"),
                    );
                    return None;
                }
                self.secret_source(table, "client_secret", allow_from)
                    .map(CredentialSpec::ClientSecret)
            }
            Cred::Certificate => {
                if !table.has("certificate") {
                    self.missing(table, "certificate", "the PEM certificate: { file = \"PATH\" }, { env = \"VAR\" } or { from = ... }");
                    return None;
                }
                let certificate = self.secret_source(table, "certificate", allow_from);
                let key = if table.has("certificate_key") {
                    Some(self.secret_source(table, "certificate_key", allow_from)?)
                } else {
                    None
                };
                let algorithm = match self.string(table, "assertion_alg") {
                    None => Some(AssertionAlgorithm::Ps256),
                    Some((alg, span)) => match alg.to_ascii_lowercase().as_str() {
                        "ps256" => Some(AssertionAlgorithm::Ps256),
                        "rs256" => Some(AssertionAlgorithm::Rs256),
                        _ => {
                            self.error(
                                &span,
                                &table.path_of("assertion_alg"),
                                format!("\"{alg}\" is not ps256 or rs256 (ps256, the default, is what current Entra docs use)"),
                            );
                            None
                        }
                    },
                };
                Some(CredentialSpec::Certificate {
                    certificate: certificate?,
                    key,
                    algorithm: algorithm?,
                })
            }
            Cred::FederatedToken => {
                match (
                    table.has("federated_token_file"),
                    table.has("federated_token_env"),
                ) {
                    (true, false) => self
                        .path(table, "federated_token_file")
                        .map(CredentialSpec::FederatedTokenFile),
                    (false, true) => self
                        .env_name(table, "federated_token_env")
                        .map(CredentialSpec::FederatedTokenEnv),
                    (false, false) => {
                        self.missing(
                            table,
                            "federated_token_file",
                            "federated_token_file = \"PATH\" or federated_token_env = \"VAR\"",
                        );
                        None
                    }
                    (true, true) => {
                        let (k, _) = table.get("federated_token_env")?;
                        self.error(
                            &k.span(),
                            &table.path_of("federated_token_env"),
                            "give either federated_token_file or federated_token_env, not both",
                        );
                        None
                    }
                }
            }
            Cred::WorkloadIdentity => Some(CredentialSpec::WorkloadIdentity),
            Cred::GithubOidc => Some(CredentialSpec::GithubOidc),
            Cred::ManagedIdentity => Some(CredentialSpec::ManagedIdentity),
        }
    }

    /// A non-secret value: a literal parsed as `T`, `{ env = "VAR" }` or `{ from, ref }`.
    /// `None`: invalid (reported); `Some(None)`: absent.
    fn value<T: FromStr>(
        &mut self,
        table: &Tbl<'_, '_>,
        key: &str,
        allow_from: bool,
    ) -> Option<Option<Value<T>>>
    where
        T::Err: Display,
    {
        let Some((k, item)) = table.get(key) else {
            return Some(None);
        };
        match item.get_ref() {
            DeValue::String(_) => self
                .parsed::<T>(table, key)
                .map(|v| Some(Value::Literal(v))),
            DeValue::Table(_) => {
                let source = self.table(table.path_of(key), k.span(), item)?;
                match self.source(&source, false, allow_from)? {
                    SecretSource::Env(var) => Some(Some(Value::Env(var))),
                    SecretSource::From(reference) => Some(Some(Value::From(reference))),
                    // `source` never gives a file when files are not allowed.
                    SecretSource::File(_) => None,
                }
            }
            _ => {
                self.wrong_type(
                    item,
                    &table.path_of(key),
                    "a string, { env = \"VAR\" } or { from = \"BACKEND\", ref = \"path#field\" }",
                );
                None
            }
        }
    }

    /// Where a secret is; a literal is refused without ever being printed.
    fn secret_source(
        &mut self,
        table: &Tbl<'_, '_>,
        key: &str,
        allow_from: bool,
    ) -> Option<SecretSource> {
        let (k, item) = table.get(key)?;
        let path = table.path_of(key);
        match item.get_ref() {
            DeValue::Table(_) => {
                let source = self.table(path, k.span(), item)?;
                self.source(&source, true, allow_from)
            }
            DeValue::String(_) => {
                let hint = if allow_from {
                    SECRET_SOURCE_HINT
                } else {
                    "give { env = \"VAR\" } or { file = \"PATH\" }"
                };
                self.error(
                    &item.span(),
                    &path,
                    format!("a secret is never written in the config file itself: {hint}"),
                );
                None
            }
            _ => {
                self.wrong_type(item, &path, "{ env = \"VAR\" }, { file = \"PATH\" } or { from = \"BACKEND\", ref = \"path#field\" }");
                None
            }
        }
    }

    /// `{ env }`, `{ file }` (when `allow_file`) or `{ from, ref }` (when `allow_from`).
    fn source(
        &mut self,
        table: &Tbl<'_, '_>,
        allow_file: bool,
        allow_from: bool,
    ) -> Option<SecretSource> {
        let allowed: Vec<&str> = keys::SOURCE
            .iter()
            .copied()
            .filter(|k| match *k {
                "file" => allow_file,
                "from" | "ref" => allow_from,
                _ => true,
            })
            .collect();
        self.check_keys(table, &allowed);
        let given: Vec<&str> = ["env", "file", "from"]
            .into_iter()
            .filter(|k| allowed.contains(k) && table.has(k))
            .collect();
        let shapes = allowed
            .iter()
            .filter(|k| **k != "ref")
            .map(|k| match *k {
                "env" => "{ env = \"VAR\" }",
                "file" => "{ file = \"PATH\" }",
                _ => "{ from = \"BACKEND\", ref = \"path#field\" }",
            })
            .collect::<Vec<_>>()
            .join(" or ");
        match given.as_slice() {
            ["env"] => self.env_name(table, "env").map(SecretSource::Env),
            ["file"] => self.path(table, "file").map(SecretSource::File),
            ["from"] => self.backend_ref(table).map(SecretSource::From),
            [] => {
                if table.has("ref") {
                    self.missing(
                        table,
                        "from",
                        "the backend `ref` is read from: from = \"BACKEND\"",
                    );
                } else if table.map.is_empty() {
                    self.error(&table.at, &table.path, format!("is empty: give {shapes}"));
                }
                None
            }
            _ => {
                self.error(
                    &table.at,
                    &table.path,
                    format!("give one of {shapes}, not {}", given.join(" and ")),
                );
                None
            }
        }
    }

    /// `{ from = "BACKEND", ref = "path#field" }`: a defined backend, a name valid there.
    fn backend_ref(&mut self, table: &Tbl<'_, '_>) -> Option<BackendRef> {
        let backend = self.defined_backend(table, "from");
        if !table.has("ref") {
            self.missing(
                table,
                "ref",
                "the secret to read, e.g. ref = \"apps/graph#client_secret\"",
            );
            return None;
        }
        let (text, span) = self.string(table, "ref")?;
        let reference = match NameRef::parse(&text) {
            Ok(reference) => reference,
            Err(err) => {
                self.error(&span, &table.path_of("ref"), err.to_string());
                return None;
            }
        };
        let (backend, kind) = backend?;
        if let Err(err) = kind.check_name(&backend, &reference.name) {
            self.error(
                &span,
                &table.path_of("ref"),
                refused_name(&reference.name, &err),
            );
            return None;
        }
        Some(BackendRef { backend, reference })
    }

    /// The backend named by `table.key`, and its kind. A backend with a mistake of its own
    /// gives `None` without a second error.
    fn defined_backend(&mut self, table: &Tbl<'_, '_>, key: &str) -> Option<(String, Kind)> {
        let (name, span) = self.string(table, key)?;
        match self.kinds.get(&name) {
            Some(Some(kind)) => Some((name, *kind)),
            Some(None) => None,
            None => {
                let defined: Vec<&str> = self.kinds.keys().map(String::as_str).collect();
                let mut message = if defined.is_empty() {
                    format!("no backend named \"{name}\" (no [backends.NAME] table is defined)")
                } else {
                    format!(
                        "no backend named \"{name}\" (defined: {})",
                        defined.join(", ")
                    )
                };
                if let Some(close) = suggest(&name, defined.iter().copied()) {
                    message.push_str(&format!("; did you mean \"{close}\"?"));
                }
                self.error(&span, &table.path_of(key), message);
                None
            }
        }
    }

    fn targets(
        &mut self,
        job: &Tbl<'_, '_>,
        written: &mut Vec<WrittenTarget>,
    ) -> Option<Vec<TargetSpec>> {
        let example = "targets = [{ to = \"BACKEND\", name = \"graph-token\" }]";
        let Some((key, item)) = job.get("targets") else {
            self.missing(
                job,
                "targets",
                &format!("where the token goes, e.g. {example}"),
            );
            return None;
        };
        let path = job.path_of("targets");
        let DeValue::Array(items) = item.get_ref() else {
            self.wrong_type(item, &path, "an array of tables");
            return None;
        };
        if items.is_empty() {
            self.error(
                &key.span(),
                &path,
                format!("a job needs at least one target, e.g. {example}"),
            );
            return None;
        }
        // Sized exactly: a `Vec` grown from empty holds four (256 bytes) for one target.
        let mut targets = Vec::with_capacity(items.len());
        let mut ok = true;
        for (index, item) in items.iter().enumerate() {
            let target_path = format!("{path}[{index}]");
            let target = self
                .table(target_path.clone(), item.span(), item)
                .and_then(|table| self.target(&table, written));
            match target {
                Some(target) => targets.push(target),
                None => ok = false,
            }
        }
        ok.then_some(targets)
    }

    fn target(
        &mut self,
        table: &Tbl<'_, '_>,
        written: &mut Vec<WrittenTarget>,
    ) -> Option<TargetSpec> {
        self.check_keys(table, keys::TARGET);
        let backend = if table.has("to") {
            self.defined_backend(table, "to")
        } else {
            self.missing(table, "to", "the backend to write to, e.g. to = \"local\"");
            None
        };
        let name = self.required_string(
            table,
            "name",
            "the secret's name in that backend, e.g. name = \"graph-token\"",
        );
        let format = match self.string(table, "format") {
            None => Some(Format::Raw),
            Some((text, span)) => match text.as_str() {
                "raw" => Some(Format::Raw),
                "json" => Some(Format::Json),
                _ => {
                    let message = unknown_choice("format", &text, &["raw", "json"]);
                    self.error(&span, &table.path_of("format"), message);
                    None
                }
            },
        };
        let adopt = self.boolean(table, "adopt").unwrap_or(false);
        let actions = self.actions(table);
        let (name, name_span) = name?;
        let (backend, kind) = backend?;
        if let Err(err) = kind.check_name(&backend, &name) {
            self.error(
                &name_span,
                &table.path_of("name"),
                refused_name(&name, &err),
            );
            return None;
        }
        // Checked against the other targets once every job is read (`same_secrets`).
        written.push(WrittenTarget {
            at: table.path.clone(),
            backend: backend.clone(),
            name: name.clone(),
            span: name_span,
        });
        Some(TargetSpec {
            backend,
            name,
            format: format?,
            adopt,
            actions: actions?,
        })
    }

    /// Job and backend names: used on the command line (`--job`) and in messages.
    fn check_item_name(&mut self, span: &Span, path: &str, name: &str, what: &str) {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            self.error(
                span,
                path,
                format!(
                    "\"{name}\" is not a usable {what} name: use 1-64 letters, digits, - and _"
                ),
            );
        }
    }
}

/// A name a backend's rule refuses, quoted (a name is never a secret), then the rule.
fn refused_name(name: &str, err: &BackendError) -> String {
    format!("\"{name}\" is not a valid name: {}", err.message())
}

/// The name a Vault target should have when `name` starts with the backend's `mount` (as a
/// path copied from the API or the UI does, `secret/data/apps/graph`): the path below the
/// mount, and on KV v2 (or a version to be detected) below its `data/` or `metadata/` too.
/// `None` when the name does not start with the mount.
fn vault_name_below_mount(name: &str, vault: &VaultSpec) -> Option<String> {
    let mount = vault.mount.trim_matches('/');
    let rest = name.strip_prefix(mount)?.strip_prefix('/')?;
    let kv2 = vault.kv_version != Some(KvVersion::V1);
    let below = ["data/", "metadata/"]
        .iter()
        .filter(|_| kv2)
        .find_map(|api| rest.strip_prefix(api))
        .unwrap_or(rest);
    Some(below.to_owned())
}

const USERINFO: &str = "must not contain user information (user:password@): remove it; \
                        logins go in the backend's auth settings";

/// A target as read, for [`Loader::same_secrets`].
struct WrittenTarget {
    /// Its key path, e.g. `jobs.graph.targets[0]`.
    at: String,
    backend: String,
    name: String,
    /// Where its `name` is.
    span: Span,
}

/// A hash of `value`, the same for equal values (within one process).
fn hash_of<T: std::hash::Hash + ?Sized>(value: &T) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault};
    BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(value)
}

/// The targets among `targets` (each a backend and a name) that are the same secret as an
/// earlier one ([`Place`]), each with the first such earlier one, in file order. Each place
/// is hashed, not kept: a map of every place held 25 MB at 100,000 targets (issue 15);
/// targets whose hashes are equal are then compared by their places.
fn same_secret_pairs<T>(
    targets: &[T],
    names: impl Fn(&T) -> (&str, &str),
    backends: &BTreeMap<String, BackendSpec>,
) -> Vec<(usize, usize)> {
    let place_of = |target: &T| {
        let (backend, name) = names(target);
        Some(Place::of(backend, backends.get(backend)?, name))
    };
    let mut hashed: Vec<(u64, usize)> = targets
        .iter()
        .enumerate()
        .filter_map(|(index, target)| Some((hash_of(&place_of(target)?), index)))
        .collect();
    hashed.sort_unstable();
    let mut pairs = Vec::new();
    for run in hashed
        .chunk_by(|a, b| a.0 == b.0)
        .filter(|run| run.len() > 1)
    {
        let mut firsts: Vec<(Place, usize)> = Vec::new();
        for &(_, index) in run {
            let Some(place) = place_of(&targets[index]) else {
                continue;
            };
            match firsts.iter().find(|(first, _)| *first == place) {
                Some(&(_, first)) => pairs.push((index, first)),
                None => firsts.push((place, index)),
            }
        }
    }
    pairs.sort_unstable();
    pairs
}

/// The secret a target writes, as the store sees it: equal places are one secret.
#[derive(Debug, PartialEq, Eq, Hash)]
enum Place {
    /// A file backend's target: the file's path.
    File(PathBuf),
    /// A Key Vault secret: the vault's origin and the name in lower case.
    KeyVault { vault: String, name: String },
    /// A Vault secret: server origin, namespace, mount and path.
    Vault {
        server: String,
        namespace: String,
        mount: String,
        name: String,
    },
    /// Other stores: a name in one backend.
    Named { backend: String, name: String },
}

impl Place {
    fn of(backend: &str, spec: &BackendSpec, name: &str) -> Place {
        match spec {
            BackendSpec::File(options) => Place::File(resolved_path(&options.dir.join(name))),
            BackendSpec::AzureKeyVault(kv) => Place::KeyVault {
                vault: kv
                    .vault_url
                    .origin()
                    .ascii_serialization()
                    .to_ascii_lowercase(),
                name: name.to_ascii_lowercase(),
            },
            BackendSpec::Vault(vault) => Place::Vault {
                server: vault.address.origin().ascii_serialization(),
                namespace: vault.namespace.clone().unwrap_or_default(),
                mount: vault.mount.trim_matches('/').to_owned(),
                name: name.to_owned(),
            },
            BackendSpec::Aws(_) => Place::Named {
                backend: backend.to_owned(),
                name: name.to_owned(),
            },
        }
    }

    /// Why two targets are this one place, for the message.
    fn why(&self) -> String {
        match self {
            Place::File(path) => format!("both are the file {}", path.display()),
            Place::KeyVault { vault, name } => format!(
                "both are the secret {name} of the Key Vault {vault} (Key Vault names are \
                 case-insensitive)"
            ),
            Place::Vault {
                server,
                mount,
                name,
                ..
            } => format!("both are {mount}/{name} on the Vault server {server}"),
            Place::Named { backend, name } => format!("both are {name} in backend {backend}"),
        }
    }
}

/// `path` normalised lexically (`.` dropped, `..` taking off the component before it), then its
/// longest existing ancestor replaced by its canonical path (symlinks resolved), so that two
/// spellings of one file (nested `dir`s, a `dir` through a symlink) compare equal. Reads only
/// metadata, never a file's content.
fn resolved_path(dir: &Path) -> PathBuf {
    use std::path::Component;
    let mut lexical = PathBuf::new();
    for part in dir.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                if !lexical.pop() {
                    lexical.push(part);
                }
            }
            other => lexical.push(other),
        }
    }
    let mut existing = lexical.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(canonical) = std::fs::canonicalize(existing) {
            return rest
                .iter()
                .rev()
                .fold(canonical, |path, part| path.join(part));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                existing = parent;
            }
            _ => return lexical,
        }
    }
}

fn has_userinfo(url: &Url) -> bool {
    !url.username().is_empty() || url.password().is_some()
}

/// A URL as typed, for a message; not shown when it may hold a `user:password@` part.
fn shown(text: &str) -> String {
    if text.contains('@') {
        "the value".to_owned()
    } else {
        format!("\"{text}\"")
    }
}

#[derive(Debug, Clone, Copy)]
enum Http {
    Allowed,
    /// Plain http only to a loopback host; the text says why.
    LoopbackOnly(&'static str),
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(host)) => host.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// `path.key`, quoting a key that is not a bare TOML key.
fn join(path: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    let key = if bare {
        key.to_owned()
    } else {
        format!("{key:?}")
    };
    if path.is_empty() {
        key
    } else {
        format!("{path}.{key}")
    }
}

fn type_name(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

fn unknown_choice(what: &str, value: &str, choices: &[&str]) -> String {
    let mut message = format!(
        "unknown {what} \"{value}\": use one of {}",
        choices.join(", ")
    );
    if let Some(close) = suggest(value, choices.iter().copied()) {
        message.push_str(&format!("; did you mean \"{close}\"?"));
    }
    message
}

/// The candidate closest to `word`, when it is close enough to be a likely typo.
pub(crate) fn suggest<'a>(
    word: &str,
    candidates: impl Iterator<Item = &'a str>,
) -> Option<&'a str> {
    let word = word.to_ascii_lowercase();
    let candidates: Vec<&str> = candidates.collect();
    let typo = candidates
        .iter()
        .map(|c| (edit_distance(&word, &c.to_ascii_lowercase()), *c))
        .filter(|(d, c)| *d < word.len() && *d <= (c.len().max(word.len()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c);
    // `token` for `token_env`, `tenant` for `tenant_id`: a word cut short or run on.
    typo.or_else(|| {
        candidates.into_iter().find(|c| {
            let c = c.to_ascii_lowercase();
            word.len() >= 3 && c.len() >= 3 && (c.starts_with(&word) || word.starts_with(&c))
        })
    })
}

/// Edits (insert, delete, substitute, or swap two neighbours: `grpah` is one from `graph`)
/// between `a` and `b` (optimal string alignment distance).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // Three rows: two before the current one, for the swap.
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut row = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            row[j] = (previous[j - 1] + cost)
                .min(row[j - 1] + 1)
                .min(previous[j] + 1);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                row[j] = row[j].min(before[j - 2] + 1);
            }
        }
        before = std::mem::replace(&mut previous, row);
    }
    previous[b.len()]
}

/// The Key Vault cloud of a login in `cloud` (another authority: the public cloud's).
pub(crate) fn key_vault_cloud(cloud: Cloud) -> AzureCloud {
    match cloud {
        Cloud::UsGovernment => AzureCloud::UsGovernment,
        Cloud::China => AzureCloud::China,
        _ => AzureCloud::Public,
    }
}

/// The `[settings] cloud` value naming `cloud`.
fn cloud_name(cloud: Cloud) -> &'static str {
    match cloud {
        Cloud::UsGovernment => "usgov",
        Cloud::China => "china",
        _ => "public",
    }
}

/// How messages name `cloud`.
fn cloud_description(cloud: Cloud) -> &'static str {
    match cloud {
        Cloud::UsGovernment => "US Government",
        Cloud::China => "China (21Vianet)",
        _ => "public",
    }
}

/// `public`, `usgov`, `china` or an authority URL, as written in the file or in
/// `AZURE_AUTHORITY_HOST`; the error says what to write instead.
fn authority_from_text(text: &str) -> Result<Authority, String> {
    if text.contains('@') {
        return Err(USERINFO.to_owned());
    }
    let parsed = match text.trim().to_ascii_lowercase().as_str() {
        "public" => Ok(Authority::public()),
        "usgov" => Ok(Authority::us_government()),
        "china" => Ok(Authority::china()),
        _ => Authority::parse(text.trim()),
    };
    parsed.map_err(|err| {
        if text.contains("://") {
            err.to_string()
        } else {
            format!(
                "\"{text}\" is not an authority: use public, usgov, china or the authority's \
                 https URL, e.g. https://login.microsoftonline.com"
            )
        }
    })
}
