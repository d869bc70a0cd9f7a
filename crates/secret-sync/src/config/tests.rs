//! Unit tests of config loading: what a good file becomes, and what each mistake is reported as
//! (line, column, key path, message), all at once.

use std::path::Path;
use std::time::Duration;

use entra_auth::{AssertionAlgorithm, Authority};
use secret_backends::Format;
use secret_backends::vault::KvVersion;

use super::error::ConfigErrors;
use super::load::parse;
use super::*;

const FILE: &str = "/etc/secret-sync/secret-sync.toml";

fn no_env(_: &str) -> Option<String> {
    None
}

fn ok(text: &str) -> SyncConfig {
    match parse(text, Path::new(FILE), &no_env) {
        Ok(config) => config,
        Err(errors) => panic!("expected the config to load, got:\n{errors}"),
    }
}

fn errors(text: &str) -> ConfigErrors {
    match parse(text, Path::new(FILE), &no_env) {
        Ok(config) => panic!("expected errors, the config loaded: {config:?}"),
        Err(errors) => errors,
    }
}

/// The errors as `LINE:COLUMN KEY: MESSAGE` lines, for compact assertions.
fn lines(errors: &ConfigErrors) -> Vec<String> {
    errors
        .errors()
        .iter()
        .map(|e| {
            let (line, column) = e.position.unwrap_or((0, 0));
            format!("{line}:{column} {}: {}", e.key, e.message)
        })
        .collect()
}

fn assert_one(text: &str, position: &str, key: &str, fragment: &str) {
    let errors = errors(text);
    let lines = lines(&errors);
    assert_eq!(lines.len(), 1, "expected one error, got: {lines:#?}");
    let expected = format!("{position} {key}: ");
    assert!(
        lines[0].starts_with(&expected) && lines[0].contains(fragment),
        "expected `{expected}...{fragment}...`, got: {}",
        lines[0]
    );
}

const MINIMAL: &str = r#"
[backends.local]
kind = "file"
dir = "out"

[jobs.graph]
tenant_id = "72f988bf-86f1-41af-91ab-2d7cd011db47"
client_id = "00000000-0000-0000-0000-000000000001"
client_secret = { env = "GRAPH_CLIENT_SECRET" }
scope = "https://graph.microsoft.com/.default"
targets = [{ to = "local", name = "graph.json", format = "json" }]
"#;

#[test]
fn minimal_config_gets_the_defaults_and_paths_relative_to_the_file() {
    let config = ok(MINIMAL);
    assert_eq!(config.settings.refresh_before, Duration::from_secs(15 * 60));
    assert_eq!(config.settings.concurrency, 8);
    assert_eq!(
        config.settings.authority.as_str(),
        "https://login.microsoftonline.com"
    );
    let BackendSpec::File(options) = &config.backends["local"] else {
        panic!("expected a file backend: {:?}", config.backends);
    };
    assert_eq!(options.dir, Path::new("/etc/secret-sync/out"));
    assert_eq!(options.mode, 0o600);
    assert!(!options.follow_symlinks);
    let job = config.job("graph").expect("the job graph");
    assert_eq!(job.scope.as_str(), "https://graph.microsoft.com/.default");
    assert_eq!(
        job.identity.credential,
        CredentialSpec::ClientSecret(SecretSource::Env("GRAPH_CLIENT_SECRET".into()))
    );
    assert_eq!(
        job.identity.tenant_id,
        Some(Value::Literal(
            "72f988bf-86f1-41af-91ab-2d7cd011db47".parse().unwrap()
        ))
    );
    assert_eq!(
        job.targets,
        vec![TargetSpec {
            backend: "local".into(),
            name: "graph.json".into(),
            format: Format::Json,
            adopt: false,
            actions: Default::default(),
        }]
    );
}

#[test]
fn full_config_with_every_backend_kind() {
    let config = ok(r#"
[settings]
refresh_before = "20m"
concurrency = 4
authority = "usgov"
listen = "127.0.0.1:9090"

[backends.ops-vault]
kind = "vault"
address = "https://vault.example.com:8200"
mount = "kv"
kv_version = 2
namespace = "team-a"
auth = { method = "approle", role_id = "4f1c", secret_id_env = "VAULT_SECRET_ID" }
timeout = "10s"

[backends.k8s-vault]
kind = "vault"
address = "http://127.0.0.1:8200"
auth = { method = "kubernetes", role = "secret-sync" }

[backends.aws-prod]
kind = "aws-secrets-manager"
region = "eu-west-1"
kms_key_id = "alias/tokens"
max_attempts = 3

[backends.kv-prod]
kind = "azure-key-vault"
vault_url = "https://contoso-tokens.vault.azure.net"
recover_deleted = true
auth = { method = "workload-identity" }

[backends.local]
kind = "file"
dir = "/var/lib/secret-sync"
mode = 0o640
follow_symlinks = true

[jobs.graph]
tenant_id = { env = "GRAPH_TENANT_ID" }
client_id = { from = "ops-vault", ref = "apps/graph#client_id" }
certificate = { from = "ops-vault", ref = "apps/graph#certificate_pem" }
certificate_key = { file = "keys/graph.key" }
assertion_alg = "rs256"
scope = "https://graph.microsoft.com/.default"
targets = [
  { to = "aws-prod", name = "graph/access-token" },
  { to = "kv-prod", name = "graph-access-token", adopt = true },
  { to = "local", name = "graph.json", format = "json" },
]

[jobs.mi]
authority = "https://login.microsoftonline.com"
managed_identity = true
scope = "https://vault.azure.net/.default"

[[jobs.mi.targets]]
to = "k8s-vault"
name = "tokens/kv"
"#);
    assert_eq!(config.settings.refresh_before, Duration::from_secs(20 * 60));
    assert_eq!(config.settings.concurrency, 4);
    assert_eq!(
        config.settings.authority.as_str(),
        "https://login.microsoftonline.us"
    );
    assert_eq!(
        config.settings.listen,
        Some("127.0.0.1:9090".parse().unwrap())
    );
    let BackendSpec::Vault(vault) = &config.backends["ops-vault"] else {
        panic!("expected vault: {:?}", config.backends["ops-vault"]);
    };
    assert_eq!(vault.mount, "kv");
    assert_eq!(vault.kv_version, Some(KvVersion::V2));
    assert_eq!(vault.timeout, Duration::from_secs(10));
    assert!(matches!(
        &vault.auth,
        VaultAuthSpec::AppRole { mount, role_id, secret_id: SecretSource::Env(var) }
            if mount == "approle" && role_id == "4f1c" && var == "VAULT_SECRET_ID"
    ));
    let BackendSpec::Vault(k8s) = &config.backends["k8s-vault"] else {
        panic!("expected vault");
    };
    assert!(matches!(
        &k8s.auth,
        VaultAuthSpec::Kubernetes { jwt_file, .. }
            if jwt_file == Path::new("/var/run/secrets/kubernetes.io/serviceaccount/token")
    ));
    let BackendSpec::Aws(aws) = &config.backends["aws-prod"] else {
        panic!("expected aws");
    };
    assert_eq!(aws.region.as_deref(), Some("eu-west-1"));
    assert_eq!(aws.max_attempts, 3);
    let BackendSpec::AzureKeyVault(kv) = &config.backends["kv-prod"] else {
        panic!("expected key vault");
    };
    assert!(kv.recover_deleted);
    assert_eq!(kv.auth.credential, CredentialSpec::WorkloadIdentity);
    assert_eq!(
        kv.auth.tenant_id,
        Some(Value::Env("AZURE_TENANT_ID".into()))
    );
    assert_eq!(
        kv.auth.authority.as_str(),
        "https://login.microsoftonline.us"
    );
    let BackendSpec::File(file) = &config.backends["local"] else {
        panic!("expected file");
    };
    assert_eq!(file.mode, 0o640);
    assert!(file.follow_symlinks);

    let graph = config.job("graph").unwrap();
    assert_eq!(
        graph.identity.tenant_id,
        Some(Value::Env("GRAPH_TENANT_ID".into()))
    );
    assert_eq!(
        graph.identity.credential,
        CredentialSpec::Certificate {
            certificate: SecretSource::From(BackendRef {
                backend: "ops-vault".into(),
                reference: "apps/graph#certificate_pem".parse().unwrap(),
            }),
            key: Some(SecretSource::File("/etc/secret-sync/keys/graph.key".into())),
            algorithm: AssertionAlgorithm::Rs256,
        }
    );
    assert!(graph.targets[1].adopt);
    let mi = config.job("mi").unwrap();
    assert_eq!(mi.identity.credential, CredentialSpec::ManagedIdentity);
    assert_eq!(mi.identity.tenant_id, None);
    assert_eq!(
        mi.identity.authority.as_str(),
        "https://login.microsoftonline.com"
    );
    assert_eq!(config.target_count(), 4);
    assert_eq!(
        config
            .jobs
            .iter()
            .map(|j| j.name.as_str())
            .collect::<Vec<_>>(),
        ["graph", "mi"],
        "jobs keep the file's order"
    );
}

#[test]
fn several_mistakes_are_all_reported_in_file_order_with_line_column_and_key() {
    let text = r#"[settings]
refresh_befor = "15m"
concurrency = 0

[backends.aws-prod]
kind = "aws-secrets-manager"

[jobs.graph]
tenant_id = "common"
client_id = "00000000-0000-0000-0000-000000000001"
client_secret = { env = "S" }
scope = "https://graph.microsoft.com/User.Read"
targets = [{ to = "aws-prd", name = "graph/token" }]
"#;
    let lines = lines(&errors(text));
    assert_eq!(lines.len(), 5, "{lines:#?}");
    let expected = [
        (
            "2:1 settings.refresh_befor: ",
            "did you mean \"refresh_before\"?",
        ),
        ("3:15 settings.concurrency: ", "out of range"),
        ("9:13 jobs.graph.tenant_id: ", "AADSTS9001023"),
        ("12:9 jobs.graph.scope: ", "/.default"),
        (
            "13:19 jobs.graph.targets[0].to: ",
            "no backend named \"aws-prd\" (defined: aws-prod); did you mean \"aws-prod\"?",
        ),
    ];
    for (line, (start, fragment)) in lines.iter().zip(expected) {
        assert!(
            line.starts_with(start) && line.contains(fragment),
            "expected `{start}...{fragment}...`, got: {line}"
        );
    }
}

#[test]
fn display_is_one_error_per_line_with_the_file_name() {
    let text = "[settings]\nconcurrency = \"8\"\nlisten = \"nowhere\"\n";
    let shown = errors(text).to_string();
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines[0], format!("{FILE} has 3 configuration errors:"));
    assert!(
        lines[1].starts_with(&format!("{FILE}:1:1: jobs: the config defines no job")),
        "{shown}"
    );
    assert_eq!(
        lines[2],
        format!("{FILE}:2:15: settings.concurrency: expected an integer, found a string")
    );
    assert!(
        lines[3].starts_with(&format!(
            "{FILE}:3:10: settings.listen: \"nowhere\" is not an address"
        )),
        "{shown}"
    );
}

#[test]
fn a_literal_client_secret_is_refused_without_repeating_it() {
    let secret = "Qx8~super.secret-value";
    let text = MINIMAL.replace(
        "client_secret = { env = \"GRAPH_CLIENT_SECRET\" }",
        &format!("client_secret = \"{secret}\""),
    );
    let errors = errors(&text);
    let shown = format!("{errors}\n{errors:?}");
    assert!(!shown.contains(secret), "the secret leaked: {shown}");
    assert_one(
        &text,
        "9:17",
        "jobs.graph.client_secret",
        "a secret is never written in the config file itself: give { env = \"VAR\" }, { file = \"PATH\" } or { from",
    );
}

#[test]
fn values_of_unknown_keys_and_wrong_types_are_never_printed() {
    let secret = "hvs.CAESIsecretvaultroot";
    let text = format!(
        "[backends.v]\nkind = \"vault\"\naddress = \"https://v.example.com\"\nauth = {{ method = \"token\", token = \"{secret}\" }}\n\n{}",
        MINIMAL
    );
    let errors = errors(&text);
    let shown = format!("{errors}\n{errors:?}");
    assert!(!shown.contains(secret), "the secret leaked: {shown}");
    let lines = lines(&errors);
    assert!(
        lines.iter().any(|l| l.starts_with(
            "4:28 backends.v.auth.token: unknown key \"token\"; did you mean \"token_env\"?"
        )),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l
                .starts_with("4:1 backends.v.auth.token_env: missing: where the Vault token is")),
        "{lines:#?}"
    );
}

#[test]
fn unknown_kind_method_and_format_suggest_the_close_one() {
    assert_one(
        &format!("[backends.x]\nkind = \"aws-secret-manager\"\n{MINIMAL}"),
        "2:8",
        "backends.x.kind",
        "unknown kind \"aws-secret-manager\": use one of file, vault, aws-secrets-manager, azure-key-vault; did you mean \"aws-secrets-manager\"?",
    );
    let text = MINIMAL.replace("format = \"json\"", "format = \"jsn\"");
    assert_one(
        &text,
        "11:58",
        "jobs.graph.targets[0].format",
        "did you mean \"json\"?",
    );
}

#[test]
fn durations_need_a_unit() {
    let text = format!("[settings]\nrefresh_before = 900\n{MINIMAL}");
    assert_one(
        &text,
        "2:18",
        "settings.refresh_before",
        "expected a duration with a unit such as \"15m\" or \"90s\", found an integer",
    );
    let text = format!("[settings]\nrefresh_before = \"15 minutes please\"\n{MINIMAL}");
    assert_one(
        &text,
        "2:18",
        "settings.refresh_before",
        "is not a duration",
    );
    let text = format!("[settings]\nrefresh_before = \"0s\"\n{MINIMAL}");
    assert_one(
        &text,
        "2:18",
        "settings.refresh_before",
        "must be longer than zero",
    );
}

#[test]
fn pass_timeout_defaults_to_five_minutes_and_a_job_can_set_its_own() {
    let config = ok(MINIMAL);
    assert_eq!(config.settings.pass_timeout, Duration::from_secs(5 * 60));
    assert_eq!(
        *config.job("graph").unwrap().pass_timeout,
        PassTimeout {
            limit: Duration::from_secs(5 * 60),
            key: "settings.pass_timeout".into()
        }
    );

    let text = format!("[settings]\npass_timeout = \"90s\"\n{MINIMAL}pass_timeout = \"2m\"\n");
    let config = ok(&text);
    assert_eq!(config.settings.pass_timeout, Duration::from_secs(90));
    assert_eq!(
        *config.job("graph").unwrap().pass_timeout,
        PassTimeout {
            limit: Duration::from_secs(120),
            key: "jobs.graph.pass_timeout".into()
        }
    );
    let text = format!("[settings]\npass_timeout = \"1m\"\n{MINIMAL}");
    assert_eq!(
        *ok(&text).job("graph").unwrap().pass_timeout,
        PassTimeout {
            limit: Duration::from_secs(60),
            key: "settings.pass_timeout".into()
        }
    );
    assert_one(
        &format!("{MINIMAL}pass_timeout = 30\n"),
        "12:16",
        "jobs.graph.pass_timeout",
        "expected a duration with a unit",
    );
}

#[test]
fn authority_rules_and_env() {
    let text = format!("[settings]\nauthority = \"http://login.example.com\"\n{MINIMAL}");
    assert_one(&text, "2:13", "settings.authority", "plain http");
    let text = format!("[settings]\nauthority = {{ env = \"DEMO_AUTHORITY\" }}\n{MINIMAL}");
    assert_one(
        &text,
        "2:21",
        "settings.authority",
        "the environment variable DEMO_AUTHORITY is not set",
    );
    let env = |var: &str| (var == "DEMO_AUTHORITY").then(|| "http://127.0.0.1:4567".to_owned());
    let config = parse(&text, Path::new(FILE), &env).unwrap();
    assert_eq!(config.settings.authority.as_str(), "http://127.0.0.1:4567");
    assert_eq!(
        config.jobs[0].identity.authority.as_str(),
        "http://127.0.0.1:4567",
        "jobs inherit the settings' authority"
    );
}

#[test]
fn azure_authority_host_is_the_default_authority() {
    let host = |value: &'static str| {
        move |var: &str| (var == "AZURE_AUTHORITY_HOST").then(|| value.to_owned())
    };
    let config = parse(
        MINIMAL,
        Path::new(FILE),
        &host("https://login.microsoftonline.us/"),
    )
    .unwrap();
    assert_eq!(
        config.settings.authority.as_str(),
        Authority::us_government().as_str()
    );
    assert_eq!(
        config.jobs[0].identity.authority.as_str(),
        Authority::us_government().as_str()
    );

    // The file wins over the environment.
    let text = format!("[settings]\nauthority = \"china\"\n{MINIMAL}");
    let config = parse(
        &text,
        Path::new(FILE),
        &host("https://login.microsoftonline.us/"),
    )
    .unwrap();
    assert_eq!(
        config.settings.authority.as_str(),
        Authority::china().as_str()
    );

    // A bad value is a config error that names the variable.
    let errors = parse(MINIMAL, Path::new(FILE), &host("http://login.example.com")).unwrap_err();
    let lines = lines(&errors);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        lines[0].contains("settings.authority") && lines[0].contains("AZURE_AUTHORITY_HOST"),
        "{}",
        lines[0]
    );
    assert_eq!(
        ok(MINIMAL).settings.authority.as_str(),
        Authority::public().as_str()
    );
}

#[test]
fn target_names_follow_the_backend_rules() {
    let text = r#"
[backends.kv]
kind = "azure-key-vault"
vault_url = "contoso-kv"
auth = { method = "managed-identity" }

[jobs.graph]
managed_identity = true
scope = "https://graph.microsoft.com/.default"
targets = [{ to = "kv", name = "graph_token" }]
"#;
    assert_one(
        text,
        "10:32",
        "jobs.graph.targets[0].name",
        "Key Vault secret names are 1-127 letters, digits and dashes",
    );
    let fixed = ok(&text.replace("graph_token", "graph-token"));
    let BackendSpec::AzureKeyVault(kv) = &fixed.backends["kv"] else {
        panic!("expected key vault");
    };
    assert_eq!(kv.vault_url.as_str(), "https://contoso-kv.vault.azure.net/");
}

#[test]
fn from_must_name_a_defined_backend_and_a_valid_name() {
    let text = MINIMAL.replace(
        "client_secret = { env = \"GRAPH_CLIENT_SECRET\" }",
        "client_secret = { from = \"vault\", ref = \"apps/graph#client_secret\" }",
    );
    assert_one(
        &text,
        "9:26",
        "jobs.graph.client_secret.from",
        "no backend named \"vault\" (defined: local)",
    );
    let text = MINIMAL.replace(
        "client_secret = { env = \"GRAPH_CLIENT_SECRET\" }",
        "client_secret = { from = \"local\", ref = \"../graph#client_secret\" }",
    );
    assert_one(&text, "9:41", "jobs.graph.client_secret.ref", "\"..\"");
}

#[test]
fn a_job_needs_one_credential_and_targets() {
    let text = r#"
[backends.local]
kind = "file"
dir = "out"

[jobs.graph]
tenant_id = "contoso.onmicrosoft.com"
client_id = "00000000-0000-0000-0000-000000000001"
client_secret = { env = "A" }
github_oidc = true
scope = "https://graph.microsoft.com/.default"
targets = []

[jobs.none]
tenant_id = "contoso.onmicrosoft.com"
client_id = "00000000-0000-0000-0000-000000000001"
scope = "https://graph.microsoft.com/.default"
"#;
    let lines = lines(&errors(text));
    assert_eq!(
        lines,
        [
            "10:1 jobs.graph.github_oidc: a job has exactly one credential, this one has client_secret and github_oidc: keep one",
            "12:1 jobs.graph.targets: a job needs at least one target, e.g. targets = [{ to = \"BACKEND\", name = \"graph-token\" }]",
            "14:7 jobs.none.client_secret: missing: a credential: one of client_secret = { env = \"VAR\" } (or file/from), certificate, federated_token_file, federated_token_env, workload_identity = true, github_oidc = true, managed_identity = true",
            "14:7 jobs.none.targets: missing: where the token goes, e.g. targets = [{ to = \"BACKEND\", name = \"graph-token\" }]",
        ]
    );
}

#[test]
fn duplicate_targets_are_refused_across_jobs() {
    let text = format!(
        "{MINIMAL}\n[jobs.other]\nmanaged_identity = true\nscope = \"api://x/.default\"\ntargets = [{{ to = \"local\", name = \"graph.json\" }}]\n"
    );
    assert_one(
        &text,
        "16:35",
        "jobs.other.targets[0].name",
        "already the target jobs.graph.targets[0]",
    );
}

#[test]
fn each_duplicate_target_names_the_first_and_the_errors_keep_file_order() {
    // Targets are compared by hashes of their places, sorted: the errors still come in file
    // order, each naming the first target that is the same secret.
    let mut text = String::from(MINIMAL);
    for (job, name) in [
        ("b", "y.json"),
        ("c", "graph.json"),
        ("d", "y.json"),
        ("e", "graph.json"),
    ] {
        text.push_str(&format!(
            "\n[jobs.{job}]\nmanaged_identity = true\nscope = \"api://x/.default\"\ntargets = [{{ to = \"local\", name = \"{name}\" }}]\n"
        ));
    }
    let lines = lines(&errors(&text));
    let keys: Vec<(&str, &str)> = lines
        .iter()
        .map(|line| {
            let key = line.split(' ').nth(1).unwrap();
            let first = line.split("already the target ").nth(1).unwrap_or("");
            (key, first.split(':').next().unwrap())
        })
        .collect();
    assert_eq!(
        keys,
        [
            ("jobs.c.targets[0].name:", "jobs.graph.targets[0]"),
            ("jobs.d.targets[0].name:", "jobs.b.targets[0]"),
            ("jobs.e.targets[0].name:", "jobs.graph.targets[0]"),
        ],
        "{lines:#?}"
    );
}

#[test]
fn one_file_through_two_file_backends_is_refused_naming_both_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("run/a");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::os::unix::fs::symlink(&root, dir.path().join("link")).unwrap();
    let job = |name: &str, to: &str, target: &str| {
        format!(
            "[jobs.{name}]\nmanaged_identity = true\nscope = \"api://x/.default\"\n\
             targets = [{{ to = \"{to}\", name = \"{target}\" }}]\n"
        )
    };
    let backends = format!(
        "[backends.a]\nkind = \"file\"\ndir = \"{a}\"\n\
         [backends.sub]\nkind = \"file\"\ndir = \"{a}/sub\"\n\
         [backends.link]\nkind = \"file\"\ndir = \"{link}/./sub/../sub\"\n\
         [backends.later]\nkind = \"file\"\ndir = \"{a}/not-yet/../sub\"\n",
        a = root.display(),
        link = dir.path().join("link").display()
    );
    // Nested dirs: a/sub/token and sub/token are one file.
    let text = format!(
        "{backends}{}{}",
        job("one", "a", "sub/token"),
        job("two", "sub", "token")
    );
    let found = lines(&errors(&text));
    assert_eq!(found.len(), 1, "{found:#?}");
    let expected = format!(
        "jobs.two.targets[0].name: \"token\" in backend \"sub\" is the same secret as the target \
         jobs.one.targets[0] (\"sub/token\" in backend \"a\"): both are the file {}",
        root.join("sub/token")
            .canonicalize()
            .unwrap_or(root.join("sub/token"))
            .display()
    );
    assert!(
        found[0].contains(&expected),
        "{}\nexpected: {expected}",
        found[0]
    );
    // The same dir through a symlink and through `.` and `..`.
    for other in ["link", "later"] {
        let text = format!(
            "{backends}{}{}",
            job("one", "sub", "t"),
            job("two", other, "t")
        );
        let found = lines(&errors(&text));
        assert_eq!(found.len(), 1, "{other}: {found:#?}");
        assert!(
            found[0].contains("jobs.two.targets[0].name")
                && found[0].contains("jobs.one.targets[0]"),
            "{}",
            found[0]
        );
    }
    // Nested dirs with different files are fine.
    ok(&format!(
        "{backends}{}{}",
        job("one", "a", "sub/x"),
        job("two", "sub", "y")
    ));
}

#[test]
fn key_vault_names_differing_only_in_case_are_one_secret() {
    let kv = |name: &str, url: &str| {
        format!(
            "[backends.{name}]\nkind = \"azure-key-vault\"\nvault_url = \"{url}\"\n\
             auth = {{ method = \"managed-identity\" }}\n"
        )
    };
    let job = |name: &str, to: &str, target: &str| {
        format!(
            "[jobs.{name}]\nmanaged_identity = true\nscope = \"api://x/.default\"\n\
             targets = [{{ to = \"{to}\", name = \"{target}\" }}]\n"
        )
    };
    let backends = format!(
        "{}{}{}",
        kv("kv", "https://contoso.vault.azure.net"),
        kv("same", "https://CONTOSO.vault.azure.net/"),
        kv("other", "https://fabrikam.vault.azure.net")
    );
    let text = format!(
        "{backends}{}{}",
        job("one", "kv", "graph-token"),
        job("two", "kv", "Graph-Token")
    );
    let found = lines(&errors(&text));
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0].contains(
            "jobs.two.targets[0].name: \"Graph-Token\" in backend \"kv\" is the same secret as \
             the target jobs.one.targets[0] (\"graph-token\" in backend \"kv\"): both are the \
             secret graph-token of the Key Vault https://contoso.vault.azure.net (Key Vault names \
             are case-insensitive)"
        ),
        "{}",
        found[0]
    );
    let text = format!(
        "{backends}{}{}",
        job("one", "kv", "graph-token"),
        job("two", "same", "GRAPH-token")
    );
    assert_eq!(lines(&errors(&text)).len(), 1);
    ok(&format!(
        "{backends}{}{}",
        job("one", "kv", "graph-token"),
        job("two", "other", "graph-token")
    ));
}

#[test]
fn backend_addresses_need_https_except_loopback() {
    let text = format!(
        "[backends.v]\nkind = \"vault\"\naddress = \"http://vault.internal:8200\"\nauth = {{ method = \"token\", token_env = \"VAULT_TOKEN\" }}\n\n[backends.a]\nkind = \"aws-secrets-manager\"\nendpoint_url = \"http://moto.internal:5000\"\n\n[backends.k]\nkind = \"azure-key-vault\"\nvault_url = \"http://127.0.0.1:8443\"\nauth = {{ method = \"managed-identity\" }}\n{MINIMAL}"
    );
    let lines = lines(&errors(&text));
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert!(
        lines[0].starts_with("3:11 backends.v.address: uses plain http")
            && lines[0].contains("allow_insecure_http = true"),
        "{lines:#?}"
    );
    assert!(
        lines[1].starts_with("8:16 backends.a.endpoint_url: uses plain http"),
        "{lines:#?}"
    );
    assert!(
        lines[2].starts_with("12:13 backends.k.vault_url: must be just the vault's https address"),
        "{lines:#?}"
    );
    let allowed = text
        .replace(
            "address = \"http://vault.internal:8200\"",
            "address = \"http://vault.internal:8200\"\nallow_insecure_http = true",
        )
        .replace("http://moto.internal:5000", "http://127.0.0.1:5000")
        .replace("http://127.0.0.1:8443", "https://127.0.0.1:8443");
    let config = ok(&allowed);
    assert_eq!(config.backends.len(), 4);
}

#[test]
fn managed_identity_takes_no_tenant_and_workload_identity_defaults_to_azure_env() {
    let text = r#"
[backends.local]
kind = "file"
dir = "out"

[jobs.mi]
managed_identity = true
tenant_id = "contoso.onmicrosoft.com"
scope = "https://graph.microsoft.com/.default"
targets = [{ to = "local", name = "mi" }]

[jobs.wi]
workload_identity = true
scope = "https://graph.microsoft.com/.default"
targets = [{ to = "local", name = "wi" }]
"#;
    assert_one(
        text,
        "8:1",
        "jobs.mi.tenant_id",
        "a managed identity takes no tenant id",
    );
    let config = ok(&text.replace("tenant_id = \"contoso.onmicrosoft.com\"\n", ""));
    let wi = config.job("wi").unwrap();
    assert_eq!(wi.identity.credential, CredentialSpec::WorkloadIdentity);
    assert_eq!(
        wi.identity.client_id,
        Some(Value::Env("AZURE_CLIENT_ID".into()))
    );
}

#[test]
fn toml_syntax_errors_are_reported_with_their_line() {
    let errors = errors("[settings]\nconcurrency = = 3\n");
    let lines = lines(&errors);
    assert!(!lines.is_empty());
    assert!(lines[0].starts_with("2:"), "{lines:#?}");
    assert!(lines[0].contains("fix the TOML syntax"), "{lines:#?}");
}

#[test]
fn an_unreadable_file_says_how_to_point_at_the_right_one() {
    // A path given with --config (SECRET_SYNC_CONFIG is not set in unit tests): the advice is
    // about that path; the default and the variable are covered end to end (e2e first_hour).
    let errors = load(Path::new("/nonexistent/secret-sync.toml")).unwrap_err();
    let shown = errors.to_string();
    assert!(
        shown.contains("/nonexistent/secret-sync.toml: cannot read the config file")
            && shown.contains("check the path given to --config"),
        "{shown}"
    );
}

#[test]
fn file_modes_are_octal() {
    let with_mode =
        |mode: &str| MINIMAL.replace("dir = \"out\"", &format!("dir = \"out\"\nmode = {mode}"));
    let config = ok(&with_mode("\"0640\""));
    let BackendSpec::File(options) = &config.backends["local"] else {
        panic!("expected file");
    };
    assert_eq!(options.mode, 0o640);
    assert_one(
        &with_mode("600"),
        "5:8",
        "backends.local.mode",
        "written in octal",
    );
    assert_one(
        &with_mode("\"0400\""),
        "5:8",
        "backends.local.mode",
        "lets the owner read and write",
    );
}

#[test]
fn suggestions_are_only_for_close_words() {
    let suggest =
        |word: &str, candidates: &[&'static str]| load::suggest(word, candidates.iter().copied());
    assert_eq!(
        suggest("refresh_befor", &["refresh_before", "concurrency"]),
        Some("refresh_before")
    );
    assert_eq!(suggest("colour", &["to", "name", "format", "adopt"]), None);
    assert_eq!(suggest("id", &["to"]), None);
    assert_eq!(
        suggest("token", &["method", "token_env"]),
        Some("token_env")
    );
    // Two letters swapped is one mistake, as people make it.
    assert_eq!(suggest("grpah", &["graph", "sharepoint"]), Some("graph"));
    assert_eq!(suggest("scpoe", &["scope", "targets"]), Some("scope"));
}

#[test]
fn credentials_in_urls_are_refused_without_being_repeated() {
    let text = format!(
        "[settings]\nauthority = \"https://admin:hunter2@login.example.com\"\n\n[backends.v]\nkind = \"vault\"\naddress = \"https://admin:hunter2@vault.example.com\"\nauth = {{ method = \"token\", token_env = \"VAULT_TOKEN\" }}\n\n[backends.a]\nkind = \"aws-secrets-manager\"\nendpoint_url = \"https://admin:hunter2@@\"\n{MINIMAL}"
    );
    let errors = errors(&text);
    let shown = format!("{errors}\n{errors:?}");
    assert!(!shown.contains("hunter2"), "a password leaked: {shown}");
    let lines = lines(&errors);
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert!(
        lines[0].starts_with("2:13 settings.authority: must not contain user information"),
        "{lines:#?}"
    );
    assert!(
        lines[1].starts_with("6:11 backends.v.address: must not contain user information"),
        "{lines:#?}"
    );
    assert!(
        lines[2].starts_with("11:16 backends.a.endpoint_url: the value is not a URL"),
        "{lines:#?}"
    );
}

#[test]
fn a_key_holding_a_newline_cannot_add_a_line_to_the_error_output() {
    let text = "\"evil\\nsecret-sync.toml:1:1: jobs: all good\" = 1\n";
    let errors = errors(text);
    let shown = errors.to_string();
    // The header line and one line per error, each starting with the file; the newline is
    // shown escaped.
    assert_eq!(shown.lines().count(), 1 + errors.errors().len(), "{shown}");
    assert!(
        shown.lines().skip(1).all(|line| line.starts_with(FILE)),
        "{shown}"
    );
    assert!(shown.contains(r"evil\nsecret-sync.toml"), "{shown}");
}
