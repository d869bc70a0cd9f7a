//! `cargo xtask fuzz [--seconds N] [TARGET...]`: runs the cargo-fuzz targets in `fuzz/`.
//!
//! Each target runs for N seconds (default [`DEFAULT_SECONDS`]; `cargo xtask ci` gives each
//! [`CI_SECONDS`]) on nightly with AddressSanitizer, the defaults of cargo-fuzz (release,
//! debug assertions). Its corpus `fuzz/corpus/<target>/` is seeded first from the fixtures
//! and example configs ([`seed`]), and the inputs in `fuzz/regressions/<target>/` (ones that
//! crashed once) are run with it, so an old crash that comes back fails at once. Every target
//! runs even after one crashed; then the task fails, printing each crash input and the command
//! that replays it. The build goes to `fuzz/target`, so it never takes the stable target dir's
//! lock. cargo-fuzz itself is installed, pinned, by [`install`] (`cargo xtask setup`).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// The cargo-fuzz version `cargo xtask setup` installs (`cargo install --locked`).
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Seconds per target for `cargo xtask fuzz` without `--seconds`.
const DEFAULT_SECONDS: u64 = 300;

/// Seconds per target in `cargo xtask ci`.
pub const CI_SECONDS: u64 = 30;

/// The longest one input may take before libFuzzer calls it a hang (its default is 20 min).
const INPUT_TIMEOUT_SECONDS: u64 = 10;

pub const USAGE: &str = "\
usage: cargo xtask fuzz [--seconds N] [TARGET...]

Runs each cargo-fuzz target in fuzz/ (all of them unless named) for N seconds (default 300),
on the nightly toolchain, after seeding fuzz/corpus/<target>/ from the fixtures and with the
inputs kept in fuzz/regressions/<target>/. Fails if any target crashes, printing the input.
Needs `cargo xtask setup` (cargo-fuzz) and a nightly toolchain (`rustup toolchain install nightly`).";

/// `cargo xtask fuzz ARGS`.
pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let mut seconds = DEFAULT_SECONDS;
    let mut targets = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => {
                let value = args.next().context("--seconds needs a number")?;
                seconds =
                    value.parse().ok().filter(|s| *s > 0).with_context(|| {
                        format!("--seconds {value}: expected a positive number")
                    })?;
            }
            other if other.starts_with('-') => bail!("unknown option {other}\n\n{USAGE}"),
            target => targets.push(target.to_owned()),
        }
    }
    fuzz(root, seconds, &targets)
}

/// What `cargo xtask ci` runs: every target for [`CI_SECONDS`].
pub fn ci(root: &Path) -> Result<()> {
    fuzz(root, CI_SECONDS, &[])
}

/// Installs the pinned cargo-fuzz unless `cargo fuzz --version` already says it is that one.
pub fn install() -> Result<()> {
    let installed = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned());
    let wanted = format!("cargo-fuzz {CARGO_FUZZ_VERSION}");
    if installed.as_deref() == Some(wanted.as_str()) {
        return Ok(());
    }
    eprintln!("xtask: installing {wanted} (found: {installed:?})");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(&cargo)
        .args([
            "install",
            "--locked",
            "cargo-fuzz",
            "--version",
            CARGO_FUZZ_VERSION,
        ])
        .status()
        .with_context(|| format!("could not start `{cargo} install`"))?;
    if !status.success() {
        bail!(
            "`cargo install --locked cargo-fuzz --version {CARGO_FUZZ_VERSION}` failed ({status})"
        );
    }
    Ok(())
}

fn fuzz(root: &Path, seconds: u64, only: &[String]) -> Result<()> {
    let fuzz_dir = root.join("fuzz");
    let all = targets(&fuzz_dir)?;
    for name in only {
        if !all.contains(name) {
            bail!("no fuzz target {name}: the targets are {}", all.join(", "));
        }
    }
    let chosen: Vec<&String> = if only.is_empty() {
        all.iter().collect()
    } else {
        all.iter().filter(|t| only.contains(t)).collect()
    };

    let started = Instant::now();
    cargo_fuzz(root, &["build"], &[])
        .context("building the fuzz targets (nightly, AddressSanitizer)")?;
    eprintln!(
        "xtask: fuzz targets built in {:.0} s",
        started.elapsed().as_secs_f64()
    );

    let mut crashes = Vec::new();
    for target in chosen {
        let corpus = fuzz_dir.join("corpus").join(target);
        fs::create_dir_all(&corpus)
            .with_context(|| format!("could not create {}", corpus.display()))?;
        let seeded = seed(root, target, &corpus)?;
        let regressions = fuzz_dir.join("regressions").join(target);
        let artifacts = fuzz_dir.join("artifacts").join(target);
        let before = files_in(&artifacts);

        let mut dirs = vec![corpus.display().to_string()];
        if regressions.is_dir() {
            dirs.push(regressions.display().to_string());
        }
        eprintln!(
            "xtask: fuzzing {target} for {seconds} s ({seeded} seeds, corpus {})",
            corpus.display()
        );
        let max_time = format!("-max_total_time={seconds}");
        let timeout = format!("-timeout={INPUT_TIMEOUT_SECONDS}");
        let mut args = vec!["run", target.as_str()];
        args.extend(dirs.iter().map(String::as_str));
        let ok = cargo_fuzz(root, &args, &[&max_time, &timeout, "-print_final_stats=1"]).is_ok();
        let found: Vec<PathBuf> = files_in(&artifacts).difference(&before).cloned().collect();
        if !ok || !found.is_empty() {
            crashes.push((target.clone(), found));
        }
    }

    if crashes.is_empty() {
        return Ok(());
    }
    for (target, inputs) in &crashes {
        if inputs.is_empty() {
            eprintln!("xtask: fuzz target {target} failed without writing an input (see above)");
        }
        for input in inputs {
            eprintln!(
                "xtask: fuzz target {target} crashed on {}\n       replay: cargo +nightly fuzz run --fuzz-dir fuzz {target} {}\n       then keep it in fuzz/regressions/{target}/ and add a test in the crate that owns the parser",
                input.display(),
                input.display()
            );
        }
    }
    bail!(
        "{} fuzz target(s) crashed: {}",
        crashes.len(),
        crashes
            .iter()
            .map(|(t, _)| t.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// The `[[bin]]` names of fuzz/Cargo.toml, in file order.
fn targets(fuzz_dir: &Path) -> Result<Vec<String>> {
    let manifest = fuzz_dir.join("Cargo.toml");
    let text = fs::read_to_string(&manifest)
        .with_context(|| format!("could not read {}", manifest.display()))?;
    let mut names = Vec::new();
    let mut in_bin = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
        } else if in_bin && let Some(value) = line.strip_prefix("name") {
            let name = value
                .trim_start()
                .trim_start_matches('=')
                .trim()
                .trim_matches('"');
            names.push(name.to_owned());
        }
    }
    if names.is_empty() {
        bail!("{} lists no [[bin]] fuzz targets", manifest.display());
    }
    Ok(names)
}

/// Runs `cargo +nightly fuzz ARGS --fuzz-dir fuzz --target-dir fuzz/target -- LIBFUZZER_ARGS`.
fn cargo_fuzz(root: &Path, args: &[&str], libfuzzer: &[&str]) -> Result<()> {
    let fuzz_dir = root.join("fuzz");
    let target_dir = fuzz_dir.join("target");
    let mut command = Command::new("cargo");
    command
        .arg("+nightly")
        .arg("fuzz")
        .args(args)
        .arg("--fuzz-dir")
        .arg(&fuzz_dir)
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(root)
        // `cargo xtask` runs on stable: what it set for itself must not pin the nightly build
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .env_remove("RUSTDOC");
    if !libfuzzer.is_empty() {
        command.arg("--").args(libfuzzer);
    }
    eprintln!("xtask: running cargo +nightly fuzz {}", args.join(" "));
    let status = command.status().context(
        "could not start `cargo +nightly fuzz`: run `cargo xtask setup` (cargo-fuzz) and \
         `rustup toolchain install nightly`",
    )?;
    if !status.success() {
        bail!("`cargo +nightly fuzz {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

fn files_in(dir: &Path) -> BTreeSet<PathBuf> {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default()
}

/// Writes the seeds of `target` into `corpus` (as `seed-N`, overwriting earlier seeds) from
/// the repository's fixtures and example configs; returns how many.
fn seed(root: &Path, target: &str, corpus: &Path) -> Result<usize> {
    let seeds = match target {
        "config" => config_files(root)?
            .into_iter()
            .map(|path| fs::read(&path).with_context(|| format!("reading {}", path.display())))
            .collect::<Result<Vec<_>>>()?,
        "token_response" => token_cases(root)?
            .into_iter()
            .map(|(status, body)| {
                // byte 0: credential kind; bytes 1-2: status - 100; byte 3: no Retry-After
                let mut input = vec![0];
                input.extend_from_slice(&(status.saturating_sub(100)).to_be_bytes());
                input.push(255);
                input.extend_from_slice(body.as_bytes());
                input
            })
            .collect(),
        "reference" => references(root)?,
        "file_documents" => file_documents(root)?,
        "backend_metadata" => backend_metadata(root)?,
        _ => Vec::new(),
    };
    for (i, seed) in seeds.iter().enumerate() {
        let path = corpus.join(format!("seed-{i}"));
        fs::write(&path, seed).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(seeds.len())
}

/// `config/*.toml` and every `.toml` under `tests/fixtures/configs/`.
fn config_files(root: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    collect(&root.join("config"), "toml", &mut files)?;
    collect(&root.join("tests/fixtures/configs"), "toml", &mut files)?;
    Ok(files)
}

fn collect(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) -> Result<()> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(());
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        if path.is_dir() {
            collect(&path, ext, out)?;
        } else if path.extension().is_some_and(|e| e == ext) {
            out.push(path);
        }
    }
    Ok(())
}

/// The recorded token endpoint answers: (status, body) of every case in the fixtures.
fn token_cases(root: &Path) -> Result<Vec<(u16, String)>> {
    let mut cases = Vec::new();
    for file in [
        "tests/fixtures/entra/token-responses.json",
        "crates/entra-auth/tests/fixtures/token-responses.json",
    ] {
        let Some(doc) = json_file(&root.join(file))? else {
            continue;
        };
        for case in doc["cases"].as_array().into_iter().flatten() {
            let status = case["status"]
                .as_u64()
                .and_then(|s| u16::try_from(s).ok())
                .unwrap_or(200);
            let body = match &case["body"] {
                Value::String(text) => text.clone(),
                Value::Null => continue,
                other => other.to_string(),
            };
            cases.push((status, body));
        }
    }
    Ok(cases)
}

/// The recorded Key Vault answer bodies (secret bundles, errors).
fn key_vault_bodies(root: &Path) -> Result<Vec<String>> {
    let mut files = Vec::new();
    collect(&root.join("tests/fixtures/keyvault"), "json", &mut files)?;
    let mut bodies = Vec::new();
    for file in files {
        let Some(doc) = json_file(&file)? else {
            continue;
        };
        for entry in doc["Entries"].as_array().into_iter().flatten() {
            match &entry["ResponseBody"] {
                Value::Null => {}
                Value::String(text) => bodies.push(text.clone()),
                other => bodies.push(other.to_string()),
            }
        }
    }
    Ok(bodies)
}

/// Every quoted string in the example configs that looks like a reference or a name.
fn references(root: &Path) -> Result<Vec<Vec<u8>>> {
    let mut seeds = BTreeSet::new();
    for path in config_files(root)? {
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        for (i, piece) in text.split('"').enumerate() {
            if i % 2 == 1 && piece.len() < 200 && (piece.contains('/') || piece.contains('#')) {
                seeds.insert(piece.as_bytes().to_vec());
            }
        }
    }
    for example in [
        "vault://secret/apps/graph#client_secret",
        "aws-sm://graph/credentials#client_secret",
        "azure-kv://contoso-kv/graph-client-secret",
        "file:///etc/secret-sync/graph.json#client_secret",
        "apps/graph#client_id",
    ] {
        seeds.insert(example.as_bytes().to_vec());
    }
    Ok(seeds.into_iter().collect())
}

const TOKEN: &str = "eyJ0eXAiOiJKV1QifQ.seed.token";

/// A JSON token document as the file backend writes it.
fn token_document() -> String {
    format!(
        r#"{{"access_token":"{TOKEN}","token_type":"Bearer","expires_on":1780315200,"expires_at":"2026-06-01T12:00:00Z","managed_by":"secret-sync"}}"#
    )
}

/// A raw token, a NUL, and a sidecar as the file backend writes them; then documents people
/// write by hand (the Key Vault bodies are JSON objects of all shapes).
fn file_documents(root: &Path) -> Result<Vec<Vec<u8>>> {
    let sidecar = r#"{"token_type":"Bearer","expires_on":1780315200,"expires_at":"2026-06-01T12:00:00Z","managed_by":"secret-sync","token_sha256":"0123456789abcdef"}"#;
    let mut seeds = vec![
        token_document().into_bytes(),
        format!("{TOKEN}\n\0{sidecar}").into_bytes(),
        format!("{TOKEN}\0{{}}").into_bytes(),
        br#"{"client_id":"00000000-0000-0000-0000-000000000001","client_secret":"s3cr3t"}"#
            .to_vec(),
    ];
    seeds.extend(key_vault_bodies(root)?.into_iter().map(String::into_bytes));
    Ok(seeds)
}

/// Key Vault bundles, Vault-shaped answers (custom_metadata, created_time, lease_duration) and
/// the token documents the backends read back.
fn backend_metadata(root: &Path) -> Result<Vec<Vec<u8>>> {
    let mut seeds = vec![
        token_document().into_bytes(),
        br#"{"data":{"current_version":3,"custom_metadata":{"expires_on":"1780315200","expires_at":"2026-06-01T12:00:00Z","managed_by":"secret-sync","version":"3"},"versions":{"3":{"created_time":"2026-06-01T11:00:00.123456789Z","deletion_time":"","destroyed":false}}}}"#.to_vec(),
        br#"{"auth":{"client_token":"hvs.x","lease_duration":2764800,"renewable":true}}"#.to_vec(),
        br#"{"Tags":[{"Key":"expires-on","Value":"1780315200"},{"Key":"managed-by","Value":"secret-sync"}],"LastChangedDate":1780311600.5}"#.to_vec(),
    ];
    seeds.extend(key_vault_bodies(root)?.into_iter().map(String::into_bytes));
    Ok(seeds)
}

fn json_file(path: &Path) -> Result<Option<Value>> {
    match fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .with_context(|| format!("{} is not JSON", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}
