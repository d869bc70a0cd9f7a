//! The release files name the same things: the targets `.github/workflows/release.yml`
//! builds are the ones `action.yml` downloads and docs/recipes.md lists, with the same asset
//! names (`secret-sync-TARGET`) and checksum file (`SHA256SUMS`); the recipes use the action's
//! real inputs and this version; the image's user is the one the Kubernetes recipe runs as.
//! None of these files can run here (GitHub runs the workflow and the action, a container
//! engine builds the image), so this and `cargo xtask lint` (their schemas, hadolint) are what
//! keeps them from drifting apart. YAML is read with PyYAML from the test servers' venv.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support::yaml_documents;

const CHECKSUMS: &str = "SHA256SUMS";
const VERSION: &str = env!("CARGO_PKG_VERSION");

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo_root().join(path))
        .unwrap_or_else(|e| panic!("{path} cannot be read: {e}"))
}

/// The yaml block after `<!-- recipe-yaml: NAME -->` in docs/recipes.md, parsed.
fn recipe(name: &str) -> Value {
    let page = read("docs/recipes.md");
    let marker = format!("<!-- recipe-yaml: {name} -->\n```yaml\n");
    let start = page
        .find(&marker)
        .unwrap_or_else(|| panic!("docs/recipes.md has no {marker:?}"))
        + marker.len();
    let end = page[start..].find("```").unwrap();
    yaml_documents(&format!("the {name} recipe"), &page[start..start + end]).remove(0)
}

/// The targets the release workflow builds, in matrix order.
fn release_targets() -> Vec<String> {
    let workflow = yaml_documents("release.yml", &read(".github/workflows/release.yml")).remove(0);
    workflow["jobs"]["build"]["strategy"]["matrix"]["include"]
        .as_array()
        .expect("release.yml builds a matrix of targets")
        .iter()
        .map(|entry| entry["target"].as_str().unwrap().to_owned())
        .collect()
}

/// Every `secret-sync-TARGET` in `text` (a target triple has at least two dashes).
fn asset_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("secret-sync-") {
        let tail = &rest[at..];
        let name: String = tail
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect();
        if name["secret-sync-".len()..].matches('-').count() >= 2 {
            names.insert(name.clone());
        }
        rest = &tail[name.len().max(1)..];
    }
    names
}

#[test]
fn release_builds_linux_and_macos_for_x86_64_and_aarch64() {
    let targets = release_targets();
    assert_eq!(
        targets,
        [
            "x86_64-unknown-linux-musl",
            "aarch64-unknown-linux-musl",
            "x86_64-apple-darwin",
            "aarch64-apple-darwin"
        ]
    );
    let workflow = read(".github/workflows/release.yml");
    for needle in [
        "cargo build --release --locked --package secret-sync --target \"$TARGET\"",
        "name: secret-sync-${{ matrix.target }}",
        "\"secret-sync-$TARGET\"",
        &format!("sha256sum secret-sync-* > {CHECKSUMS}"),
        &format!("dist/secret-sync-* dist/{CHECKSUMS}"),
    ] {
        assert!(
            workflow.contains(needle),
            "release.yml should say {needle:?}"
        );
    }
    // The toolchain the release builds with is the workspace's rust-version.
    let manifest = read("Cargo.toml");
    let rust_version = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .unwrap()
        .trim_matches('"');
    assert!(
        workflow.contains(&format!("RUST_TOOLCHAIN: \"{rust_version}.")),
        "release.yml builds with Rust {rust_version}"
    );
}

#[test]
fn the_action_downloads_exactly_the_release_assets() {
    let action = read("action.yml");
    let mapped: BTreeSet<String> = action
        .lines()
        .filter_map(|l| l.split_once(") target=").map(|(_, t)| t))
        .map(|t| t.split_whitespace().next().unwrap().to_owned())
        .collect();
    let built: BTreeSet<String> = release_targets().into_iter().collect();
    assert_eq!(
        mapped, built,
        "action.yml maps runners to the targets release.yml builds"
    );
    for needle in [
        "asset=\"secret-sync-$target\"",
        &format!("--pattern \"$asset\" --pattern {CHECKSUMS}"),
        &format!("\" {CHECKSUMS} > \"$asset.sha256\""),
        "sha256sum -c \"$asset.sha256\"",
    ] {
        assert!(action.contains(needle), "action.yml should say {needle:?}");
    }
}

#[test]
fn the_docs_name_only_assets_the_release_publishes() {
    let built: BTreeSet<String> = release_targets()
        .iter()
        .map(|t| format!("secret-sync-{t}"))
        .collect();
    let page = read("docs/recipes.md");
    assert_eq!(
        asset_names(&page),
        built,
        "docs/recipes.md lists every release asset and no other"
    );
    assert!(page.contains(&format!("`{CHECKSUMS}`")));
    for path in ["README.md", "action.yml"] {
        let unknown: Vec<String> = asset_names(&read(path))
            .difference(&built)
            .cloned()
            .collect();
        assert!(
            unknown.is_empty(),
            "{path} names unpublished assets {unknown:?}"
        );
    }
}

#[test]
fn the_recipes_use_the_action_and_the_image_as_they_are() {
    // GitHub Actions: the action, this version, inputs it declares.
    let action = yaml_documents("action.yml", &read("action.yml")).remove(0);
    let inputs = action["inputs"].as_object().unwrap();
    let workflow = recipe("github");
    let steps = workflow["jobs"]["sync"]["steps"].as_array().unwrap();
    let step = steps
        .iter()
        .find(|s| {
            s["uses"]
                .as_str()
                .is_some_and(|u| u.starts_with("contoso/secret-sync@"))
        })
        .expect("the GitHub Actions recipe uses the action");
    assert_eq!(step["uses"], format!("contoso/secret-sync@v{VERSION}"));
    let with = step["with"].as_object().unwrap();
    for key in with.keys() {
        assert!(inputs.contains_key(key), "action.yml has no input {key:?}");
    }
    for (name, input) in inputs {
        if input["required"] == true {
            assert!(
                with.contains_key(name),
                "the recipe omits the required input {name}"
            );
        }
    }
    assert_eq!(with["version"].as_str(), Some(VERSION));

    // GitLab: this version, the x86_64 Linux asset, checked against the checksum file.
    let job = &recipe("gitlab")["secret-sync"];
    assert_eq!(
        job["variables"]["SECRET_SYNC_VERSION"].as_str(),
        Some(VERSION)
    );
    let install = job["before_script"]
        .as_array()
        .unwrap()
        .iter()
        .map(|line| line.as_str().unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    for needle in [
        "$base/secret-sync-x86_64-unknown-linux-musl",
        &format!("$base/{CHECKSUMS}"),
        &format!("{CHECKSUMS} | sha256sum -c -"),
    ] {
        assert!(
            install.contains(needle),
            "the GitLab job should say {needle:?}:\n{install}"
        );
    }

    // Kubernetes: the image's user is the pod's, and its entrypoint takes the command.
    let dockerfile = read("Dockerfile");
    assert!(
        dockerfile.contains("\nFROM scratch\n"),
        "a minimal runtime image"
    );
    assert!(dockerfile.contains("\nUSER 65532:65532\n"));
    assert!(dockerfile.contains("\nENTRYPOINT [\"/usr/local/bin/secret-sync\"]\n"));
    assert!(dockerfile.contains("cargo build --release --locked --package secret-sync"));
    let page = read("docs/recipes.md");
    assert!(page.contains("runAsUser: 65532"));
    assert!(page.contains("args: [\"run\", \"--output\", \"json\"]"));
    assert!(page.contains(&format!("registry.example.com/tools/secret-sync:{VERSION}")));
}

#[test]
fn asset_names_finds_triples_only() {
    assert_eq!(
        asset_names(
            "`secret-sync-x86_64-apple-darwin` and secret-sync-config, secret-sync-$target"
        ),
        BTreeSet::from(["secret-sync-x86_64-apple-darwin".to_owned()])
    );
}
