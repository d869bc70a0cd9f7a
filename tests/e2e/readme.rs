//! README.md's commands are run as written, so the first page a newcomer reads stays true:
//! its config is saved as `secret-sync.toml` and its "Use" shell block runs with `sh -e` in a
//! temp dir, against the Entra ID emulator (named through `AZURE_AUTHORITY_HOST`, which both the
//! config loader and `secret-sync token` honour), and the first run's output it shows is what
//! the binary prints. The "Try it" block (`cargo xtask demo` and `cargo xtask ci`) is what CI
//! itself runs.
//!
//! The "Install" block is run by `cargo xtask ci` after the tests (`xtask/src/install.rs`: it
//! installs into a temporary root with `--debug` and the workspace's warm target dir, an
//! install build beside running tests would starve their timing), which then runs the Use test
//! again with `SECRET_SYNC_README_BIN_DIR` naming the installed `bin/`: the Use steps then run
//! the installed binary instead of the one cargo built for these tests.

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

/// The commands of the "Install" block, comments dropped. `cargo xtask ci` runs exactly these
/// (with `--debug` and a temporary `--root`), so this pins what it runs to what the README says.
#[test]
fn install_is_cargo_install_of_the_binary_package() {
    let block = block_after(&readme(), "Install", "sh");
    let commands: Vec<&str> = block
        .lines()
        .map(|line| line.split('#').next().unwrap().trim())
        .filter(|line| !line.is_empty())
        .collect();
    assert_eq!(
        commands,
        [
            "cargo install --locked --path crates/secret-sync",
            "secret-sync --version"
        ]
    );
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap();
    assert!(
        manifest.contains("[[bin]]\nname = \"secret-sync\""),
        "crates/secret-sync is the package of the secret-sync binary"
    );
    let xtask = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../xtask/src/install.rs"),
    )
    .unwrap();
    assert!(
        xtask.contains("block_after(&readme, \"Install\", \"sh\")"),
        "cargo xtask ci runs README's Install block"
    );
}

/// Each `YYYY-MM-DDTHH:MM:SSZ` replaced by `<time>`, so outputs of different runs compare.
fn without_times(text: &str) -> String {
    let shape = |window: &[u8]| {
        window.iter().enumerate().all(|(i, &c)| match i {
            4 | 7 => c == b'-',
            10 => c == b'T',
            13 | 16 => c == b':',
            19 => c == b'Z',
            _ => c.is_ascii_digit(),
        })
    };
    let bytes = text.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes.len() - i >= 20 && shape(&bytes[i..i + 20]) {
            out.push_str("<time>");
            i += 20;
        } else {
            let c = text[i..].chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

#[test]
fn without_times_replaces_only_timestamps() {
    assert_eq!(
        without_times("a 2026-12-01T12:11:22Z b 2026-12-01 12:11 é"),
        "a <time> b 2026-12-01 12:11 é"
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
    // `cargo xtask ci` runs this test a second time with the binary README's Install block
    // installed (see the module doc).
    let bin_dir = match std::env::var_os("SECRET_SYNC_README_BIN_DIR") {
        Some(dir) => std::path::PathBuf::from(dir),
        None => Path::new(env!("CARGO_BIN_EXE_secret-sync"))
            .parent()
            .unwrap()
            .to_path_buf(),
    };
    assert!(
        bin_dir.join("secret-sync").is_file(),
        "no secret-sync in {}",
        bin_dir.display()
    );
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
    // The first run's output shown in the README is what `run` printed, times aside.
    let shown = without_times(&block_after(&text, "Use", "text"));
    let printed = without_times(&stdout);
    assert!(
        printed.contains(&shown),
        "README shows the first run printing\n{shown}\nbut the commands printed\n{printed}"
    );
}
