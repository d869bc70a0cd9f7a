//! The conventions users expect of a command-line tool, checked on the built binary: shell
//! completions for every supported shell, a man page generated from the same definitions as
//! `--help`, and the environment fallbacks of the common flags (`SECRET_SYNC_CONFIG`,
//! `SECRET_SYNC_LOG_FORMAT`) taking effect.

use serde_json::Value;
use testkit::{AppRegistration, EntraEmulator};

use crate::support::secret_sync;

/// The commands a user can type; each must be completed and documented.
const SUBCOMMANDS: &[&str] = &["token", "run", "plan", "validate", "schema", "completions"];

#[tokio::test]
async fn completions_for_every_shell_name_every_subcommand() {
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let run = secret_sync(&["completions", shell], &[]).await;
        run.assert_code(0);
        assert!(
            run.stdout.len() > 1000,
            "{shell}: the script is suspiciously short:\n{}",
            run.stdout
        );
        assert!(run.stderr.is_empty(), "{shell}: stderr: {}", run.stderr);
        for sub in SUBCOMMANDS {
            assert!(
                run.stdout.contains(sub),
                "{shell}: the completion script does not name `{sub}`"
            );
        }
        for flag in ["config", "force", "log-format"] {
            // fish spells a long flag `-l NAME`, the other shells `--NAME`.
            assert!(
                run.stdout.contains(&format!("--{flag}"))
                    || run.stdout.contains(&format!("-l {flag}")),
                "{shell}: the completion script does not name `--{flag}`"
            );
        }
    }
}

#[tokio::test]
async fn completions_for_an_unknown_shell_is_a_usage_error() {
    let run = secret_sync(&["completions", "tcsh"], &[]).await;
    run.assert_code(2);
    assert!(
        run.stderr.contains("bash") && run.stderr.contains("powershell"),
        "the error lists the shells: {}",
        run.stderr
    );
}

#[tokio::test]
async fn man_page_documents_every_subcommand_and_the_exit_codes() {
    let run = secret_sync(&["man"], &[]).await;
    run.assert_code(0);
    let page = &run.stdout;
    assert!(
        page.starts_with(".ie") || page.contains(".TH secret-sync 1"),
        "not roff:\n{page}"
    );
    assert!(page.contains(".TH secret-sync 1"), "page:\n{page}");
    for sub in SUBCOMMANDS {
        let name = format!("secret\\-sync\\-{sub}(1)");
        assert!(page.contains(&name), "{name} missing from:\n{page}");
    }
    assert!(page.contains(".SH \"EXIT STATUS\""), "page:\n{page}");
    assert!(
        page.contains("usage or configuration error"),
        "exit code 2 is explained:\n{page}"
    );
    assert!(page.contains("SECRET_SYNC_CONFIG"), "page:\n{page}");
}

#[tokio::test]
async fn man_out_dir_writes_a_page_per_command() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("man");
    let run = secret_sync(&["man", "--out-dir", out.to_str().unwrap()], &[]).await;
    run.assert_code(0);
    for page in std::iter::once("secret-sync.1".to_owned())
        .chain(SUBCOMMANDS.iter().map(|sub| format!("secret-sync-{sub}.1")))
    {
        let text = std::fs::read_to_string(out.join(&page))
            .unwrap_or_else(|e| panic!("{page} was not written: {e}; stdout: {}", run.stdout));
        assert!(text.contains("EXIT STATUS"), "{page}:\n{text}");
    }
    assert!(
        !out.join("secret-sync-man.1").exists(),
        "the hidden man command gets no page"
    );
}

#[tokio::test]
async fn secret_sync_config_names_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        format!(
            "[backends.local]\nkind = \"file\"\ndir = \"{}\"\n\n\
             [jobs.graph]\ntenant_id = \"72f988bf-86f1-41af-91ab-2d7cd011db47\"\n\
             client_id = \"0a1b2c3d-1111-2222-3333-444455556666\"\n\
             client_secret = {{ env = \"GRAPH_SECRET\" }}\n\
             scope = \"https://graph.microsoft.com/.default\"\n\
             targets = [{{ to = \"local\", name = \"graph.json\", format = \"json\" }}]\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let good_path = good.to_str().unwrap();

    let run = secret_sync(&["validate"], &[("SECRET_SYNC_CONFIG", good_path)]).await;
    run.assert_code(0);
    assert!(
        run.stdout.contains(good_path) && run.stdout.contains("OK"),
        "validate read the file SECRET_SYNC_CONFIG names: {}",
        run.stdout
    );

    // --config wins over the environment.
    let missing = dir.path().join("missing.toml");
    let run = secret_sync(
        &["validate", "--config", missing.to_str().unwrap()],
        &[("SECRET_SYNC_CONFIG", good_path)],
    )
    .await;
    run.assert_code(2);
    assert!(
        run.stderr.contains("missing.toml"),
        "the error names the --config file: {}",
        run.stderr
    );
}

#[tokio::test]
async fn secret_sync_log_format_json_makes_json_log_lines() {
    const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    const CLIENT: &str = "0a1b2c3d-1111-2222-3333-444455556666";
    const SECRET: &str = "Zq8~conventions.client.secret-value";
    let entra = EntraEmulator::start().await.unwrap();
    entra.register_app(AppRegistration::new(TENANT, CLIENT).with_secret(SECRET));
    let base = entra.base_url();
    let args = [
        "token",
        "--tenant-id",
        TENANT,
        "--client-id",
        CLIENT,
        "--scope",
        "https://graph.microsoft.com/.default",
        "--authority",
        &base,
        "--client-secret-env",
        "APP_SECRET",
    ];

    for (format, want_json) in [("json", true), ("text", false)] {
        let run = secret_sync(
            &args,
            &[
                ("APP_SECRET", SECRET),
                ("RUST_LOG", "info"),
                ("SECRET_SYNC_LOG_FORMAT", format),
            ],
        )
        .await;
        run.assert_code(0);
        run.assert_no_leak(&[SECRET]);
        let line = run
            .stderr
            .lines()
            .find(|line| line.contains("access token acquired"))
            .unwrap_or_else(|| panic!("{format}: no log line in stderr: {}", run.stderr));
        let parsed = serde_json::from_str::<Value>(line);
        assert_eq!(
            parsed.is_ok(),
            want_json,
            "SECRET_SYNC_LOG_FORMAT={format}: log line {line:?}"
        );
        if let Ok(event) = parsed {
            assert_eq!(event["level"], "INFO", "{line}");
        }
    }

    let run = secret_sync(&["validate"], &[("SECRET_SYNC_LOG_FORMAT", "yaml")]).await;
    run.assert_code(2);
    assert!(
        run.stderr.contains("yaml"),
        "a bad SECRET_SYNC_LOG_FORMAT is refused by name: {}",
        run.stderr
    );
}
