//! The documentation's examples are run, so none rots: every ```toml block in README.md and
//! docs/*.md is a complete config file that `secret-sync validate` must accept. (A block meant
//! as a fragment is fenced as ```toml-fragment and is only checked to parse as TOML.)

use std::path::{Path, PathBuf};

use crate::support::secret_sync;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// (file, first line of the block, fence info, block text) for every fenced TOML block.
fn toml_blocks() -> Vec<(PathBuf, usize, String, String)> {
    let mut files = vec![root().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("docs/ exists")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    docs.sort();
    files.extend(docs);

    let mut blocks = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let mut current: Option<(usize, String, String)> = None;
        for (index, line) in text.lines().enumerate() {
            let trimmed = line.trim_start();
            match &mut current {
                None => {
                    if let Some(info) = trimmed.strip_prefix("```")
                        && info.starts_with("toml")
                    {
                        current = Some((index + 2, info.trim().to_owned(), String::new()));
                    }
                }
                Some((start, info, body)) => {
                    if trimmed.starts_with("```") {
                        blocks.push((file.clone(), *start, info.clone(), std::mem::take(body)));
                        current = None;
                    } else {
                        body.push_str(line);
                        body.push('\n');
                    }
                }
            }
        }
    }
    blocks
}

#[tokio::test]
async fn every_toml_example_in_the_docs_validates() {
    let blocks = toml_blocks();
    assert!(
        blocks
            .iter()
            .any(|(file, ..)| file.ends_with("backends.md")),
        "docs/backends.md has examples"
    );
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for (index, (file, line, info, body)) in blocks.iter().enumerate() {
        let place = format!("{}:{line}", file.display());
        match info.as_str() {
            "toml" => {
                let path = dir.path().join(format!("example-{index}.toml"));
                std::fs::write(&path, body).unwrap();
                let run = secret_sync(&["validate", "--config", path.to_str().unwrap()], &[]).await;
                assert_eq!(
                    run.code, 0,
                    "the example at {place} does not validate:\n{}{}",
                    run.stdout, run.stderr
                );
                checked += 1;
            }
            "toml-fragment" => {
                assert!(
                    toml::de::DeTable::parse(body).is_ok(),
                    "the fragment at {place} is not TOML"
                );
            }
            other => panic!("{place}: unknown fence ```{other}: use toml or toml-fragment"),
        }
    }
    assert!(checked >= 4, "only {checked} complete examples found");
}
