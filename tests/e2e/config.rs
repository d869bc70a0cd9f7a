//! The config file as users meet it through the binary: every example in config/ validates,
//! every broken config in tests/fixtures/configs/bad is refused with exit 2 and exactly the
//! errors its `.expected` file lists (all at once, each with line, column and key), the
//! config path comes from `--config`, `SECRET_SYNC_CONFIG` or `./secret-sync.toml`, and
//! `schema` prints a JSON Schema.

use std::path::{Path, PathBuf};

use crate::support::secret_sync;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The `.toml` files of `dir`, sorted.
fn toml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .toml file in {}", dir.display());
    files
}

/// Every example config validates with an empty environment except the demo's emulator
/// address: `validate` reads none of the secrets the examples name (VAULT_SECRET_ID,
/// DEMO_CLIENT_SECRET, ...), so their absence is no error.
#[tokio::test]
async fn every_example_config_validates() {
    for path in toml_files(&repo_root().join("config")) {
        let path = path.to_str().unwrap();
        let run = secret_sync(
            &["validate", "--config", path],
            &[("AZURE_AUTHORITY_HOST", "http://127.0.0.1:9")],
        )
        .await;
        run.assert_code(0);
        assert!(
            run.stdout.starts_with(&format!("{path}: OK: ")) && run.stdout.contains(" job"),
            "{path}: stdout was: {}",
            run.stdout
        );
        assert_eq!(run.stderr, "", "{path}: nothing on stderr");
    }
}

/// Each broken config exits 2 and prints exactly its expected errors, in order.
#[tokio::test]
async fn every_broken_config_is_refused_with_each_error_located() {
    let dir = repo_root().join("tests/fixtures/configs/bad");
    let files = toml_files(&dir);
    assert!(files.len() >= 15, "the corpus shrank: {files:?}");
    for path in files {
        let expected_file = path.with_extension("expected");
        let expected = std::fs::read_to_string(&expected_file)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", expected_file.display()));
        let expected: Vec<&str> = expected.lines().filter(|l| !l.is_empty()).collect();
        let run = secret_sync(&["validate", "--config", path.to_str().unwrap()], &[]).await;
        run.assert_code(2);
        assert_eq!(run.stdout, "", "{}: nothing on stdout", path.display());
        // Error lines name the file as it was given; compare them by file name.
        let prefix = format!("{}/", dir.display());
        let name = path.file_name().unwrap().to_str().unwrap();
        let printed: Vec<String> = run
            .stderr
            .lines()
            .filter_map(|line| line.strip_prefix(&prefix))
            .filter(|line| line.starts_with(&format!("{name}:")))
            .map(str::to_owned)
            .collect();
        assert_eq!(
            printed.len(),
            expected.len(),
            "{name}: expected {} error(s), stderr was:\n{}",
            expected.len(),
            run.stderr
        );
        for (line, want) in printed.iter().zip(&expected) {
            assert!(
                line.starts_with(want),
                "{name}: expected a line starting with\n  {want}\ngot\n  {line}"
            );
        }
        let count = expected.len();
        let header = format!(
            "error: {} has {count} configuration error{}:",
            path.display(),
            if count == 1 { "" } else { "s" }
        );
        assert!(
            run.stderr.starts_with(&header),
            "{name}: expected the header `{header}`, stderr was:\n{}",
            run.stderr
        );
    }
}

#[tokio::test]
async fn a_literal_secret_in_the_file_is_never_printed() {
    let path = repo_root().join("tests/fixtures/configs/bad/literal-secret.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let secret = "Qx8~this-must-never-be-printed";
    assert!(
        text.contains(secret),
        "the fixture holds the literal secret"
    );
    let run = secret_sync(&["validate", "--config", path.to_str().unwrap()], &[]).await;
    run.assert_code(2);
    run.assert_no_leak(&[secret]);
}

#[tokio::test]
async fn the_config_path_comes_from_the_flag_the_environment_or_the_default() {
    let example = repo_root().join("config/example.toml");
    let example = example.to_str().unwrap();

    let run = secret_sync(&["validate"], &[("SECRET_SYNC_CONFIG", example)]).await;
    run.assert_code(0);
    assert!(
        run.stdout.starts_with(&format!("{example}: OK: ")),
        "{}",
        run.stdout
    );

    let run = secret_sync(&["validate", "-c", example], &[]).await;
    run.assert_code(0);

    // The tests run in crates/secret-sync, where there is no secret-sync.toml.
    let run = secret_sync(&["validate"], &[]).await;
    run.assert_code(2);
    assert!(
        run.stderr
            .contains("secret-sync.toml: cannot read the config file")
            && run
                .stderr
                .contains("pass --config FILE or set SECRET_SYNC_CONFIG"),
        "stderr was: {}",
        run.stderr
    );
}

#[tokio::test]
async fn relative_paths_are_taken_from_the_config_files_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("certs")).unwrap();
    std::fs::write(dir.path().join("certs/ca.pem"), "not checked by validate").unwrap();
    let config = dir.path().join("secret-sync.toml");
    let text = r#"
[settings]
ca_file = "certs/ca.pem"

[backends.local]
kind = "file"
dir = "out"

[jobs.graph]
managed_identity = true
scope = "https://graph.microsoft.com/.default"
targets = [{ to = "local", name = "graph.json" }]
"#;
    std::fs::write(&config, text).unwrap();
    let run = secret_sync(&["validate", "--config", config.to_str().unwrap()], &[]).await;
    run.assert_code(0);

    std::fs::write(&config, text.replace("certs/ca.pem", "certs/missing.pem")).unwrap();
    let run = secret_sync(&["validate", "--config", config.to_str().unwrap()], &[]).await;
    run.assert_code(2);
    let missing = dir.path().join("certs/missing.pem");
    assert!(
        run.stderr.contains(&format!(
            "secret-sync.toml:3:11: settings.ca_file: {} does not exist",
            missing.display()
        )),
        "stderr was: {}",
        run.stderr
    );
}

#[tokio::test]
async fn schema_prints_a_json_schema_of_the_config() {
    let run = secret_sync(&["schema"], &[]).await;
    run.assert_code(0);
    let schema: serde_json::Value = serde_json::from_str(&run.stdout).expect("schema prints JSON");
    assert_eq!(
        schema["$schema"], "http://json-schema.org/draft-07/schema#",
        "{schema}"
    );
    for definition in ["settings", "backend", "job", "target", "secret"] {
        assert!(
            schema["definitions"][definition].is_object(),
            "no definition {definition} in {schema}"
        );
    }
}

/// config/demo.toml does what `cargo xtask demo` shows: against the Entra emulator it writes
/// the token to ../demo-out (relative to the config file), and a second run skips the job.
#[tokio::test]
async fn the_demo_config_syncs_into_demo_out_and_then_skips() {
    use secrecy::ExposeSecret;
    use testkit::{AppRegistration, EntraEmulator};

    let secret = "demo-e2e-client-secret";
    let entra = EntraEmulator::start().await.unwrap();
    entra.register_app(
        AppRegistration::new(
            "11111111-2222-3333-4444-555555555555",
            "66666666-7777-8888-9999-000000000000",
        )
        .with_secret(secret),
    );
    // A copy of the repository layout: <dir>/config/demo.toml writes to <dir>/demo-out.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("config")).unwrap();
    let config = dir.path().join("config/demo.toml");
    std::fs::copy(repo_root().join("config/demo.toml"), &config).unwrap();
    // The file backend writes into an existing directory (the demo creates it).
    std::fs::create_dir(dir.path().join("demo-out")).unwrap();
    let authority = entra.base_url();
    let env = [
        ("AZURE_AUTHORITY_HOST", authority.as_str()),
        ("DEMO_CLIENT_SECRET", secret),
    ];
    let args = ["run", "--config", config.to_str().unwrap()];

    let first = secret_sync(&args, &env).await;
    first.assert_code(0);
    assert_eq!(entra.token_request_count(), 1, "one token for the job");
    let out = dir.path().join("demo-out");
    let raw = std::fs::read_to_string(out.join("graph-token")).expect("graph-token written");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("graph.json")).unwrap()).unwrap();
    let issued = entra.issued_tokens();
    let token = issued
        .last()
        .expect("a token was issued")
        .access_token
        .expose_secret();
    assert_eq!(raw.trim_end(), token, "graph-token holds the bare token");
    assert_eq!(json["access_token"], token, "graph.json holds the token");

    let second = secret_sync(&args, &env).await;
    second.assert_code(0);
    assert_eq!(
        entra.token_request_count(),
        1,
        "the second run asks for no token"
    );
    for run in [&first, &second] {
        run.assert_no_leak(&[secret, token]);
    }
}

/// `run` and `plan` load the config the same way: a broken file stops them before anything
/// happens, with the same errors and exit code 2.
#[tokio::test]
async fn run_and_plan_refuse_a_broken_config_with_every_error() {
    let path = repo_root().join("tests/fixtures/configs/bad/many-mistakes.toml");
    let path = path.to_str().unwrap();
    for command in ["run", "plan"] {
        let run = secret_sync(&[command, "--config", path], &[]).await;
        run.assert_code(2);
        assert_eq!(run.stdout, "", "{command}: no summary");
        assert!(
            run.stderr
                .starts_with(&format!("error: {path} has 5 configuration errors:")),
            "{command}: stderr was:\n{}",
            run.stderr
        );
        let located = run
            .stderr
            .lines()
            .filter(|line| line.starts_with(&format!("{path}:")))
            .count();
        assert_eq!(located, 5, "{command}: stderr was:\n{}", run.stderr);
    }
}
