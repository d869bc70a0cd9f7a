//! README.md's commands are run as written, so the first page a newcomer reads stays true:
//! its config is saved as `secret-sync.toml` and its "Use" shell block runs with `sh -e` in a
//! temp dir, against the Entra ID emulator (named through `AZURE_AUTHORITY_HOST`, which both the
//! config loader and `secret-sync token` honour). The "Try it" block (`cargo xtask demo` and
//! `cargo xtask ci`) is what CI itself runs.

use std::path::Path;

use testkit::{AppRegistration, EntraEmulator};

const SECRET: &str = "readme~client.secret-value-42";

fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md")).unwrap()
}

/// The body of the first block fenced with ```LANG after the heading `## HEADING`.
fn block_after(text: &str, heading: &str, lang: &str) -> String {
    let start = text
        .find(&format!("\n## {heading}\n"))
        .unwrap_or_else(|| panic!("README has no `## {heading}`"));
    let rest = &text[start..];
    let open = rest
        .find(&format!("```{lang}\n"))
        .unwrap_or_else(|| panic!("no ```{lang} block after `## {heading}`"));
    let body = &rest[open + lang.len() + 4..];
    body[..body.find("```").unwrap()].to_owned()
}

#[test]
fn try_it_is_exactly_the_two_setup_commands() {
    let block = block_after(&readme(), "Try it", "sh");
    let commands: Vec<&str> = block
        .lines()
        .map(|line| line.split('#').next().unwrap().trim())
        .filter(|line| !line.is_empty())
        .collect();
    assert_eq!(commands, ["cargo xtask demo", "cargo xtask ci"]);
    let ci = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.ci/run"))
        .unwrap();
    assert!(
        ci.contains("cargo xtask ci"),
        ".ci/run calls README's test command"
    );
}

#[tokio::test]
async fn the_use_section_runs_as_written() {
    let text = readme();
    let config = block_after(&text, "Use", "toml");
    let script = block_after(&text, "Use", "sh");

    let tenant = config
        .lines()
        .find_map(|l| l.strip_prefix("tenant_id = "))
        .unwrap()
        .trim_matches('"');
    let client = config
        .lines()
        .find_map(|l| l.strip_prefix("client_id = "))
        .unwrap()
        .trim_matches('"');
    let entra = EntraEmulator::start().await.unwrap();
    entra.register_app(AppRegistration::new(tenant, client).with_secret(SECRET));

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret-sync.toml"), &config).unwrap();
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_secret-sync"))
        .parent()
        .unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = tokio::process::Command::new("sh")
        .args(["-ec", &script])
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", path)
        .env("AZURE_AUTHORITY_HOST", entra.base_url())
        .env("GRAPH_CLIENT_SECRET", SECRET)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        output.status.success(),
        "README commands failed:\n{stdout}\n{stderr}"
    );
    assert!(
        !stdout.contains(SECRET) && !stderr.contains(SECRET),
        "the secret leaked"
    );

    // run created the target; token printed one more token as JSON on the last line.
    let written: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("tokens/graph.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(written["managed_by"], "secret-sync");
    let printed: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(printed["token_type"], "Bearer");
    assert_eq!(entra.token_request_count(), 2, "one for run, one for token");
    assert!(
        stdout.contains("created"),
        "run reports the created target:\n{stdout}"
    );
}
