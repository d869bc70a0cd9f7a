//! Splitting a large config file into blocks of whole `[jobs.NAME]` tables, so that the loader
//! can parse it a block at a time.
//!
//! toml's parser holds the whole document three times while it parses: every token, every
//! event, then the spanned tree (about 6 KB per job of a generated config: 600 MB for 100,000
//! jobs, issue 15). Parsed a block of jobs at a time, the most held at once is one block's.
//!
//! [`split`] only finds where each top-level table header starts (outside strings, comments and
//! multi-line arrays or inline tables) and groups the sections of `[jobs.NAME]` (and
//! `[jobs.NAME.…]`, `[[jobs.NAME.…]]`) tables by `NAME`; it is not a TOML parser and need not
//! be one: the loader (`load::parse_in_blocks`) takes a split only when every block and the
//! rest parse without an error, no job name comes twice and nothing in the walk fails;
//! otherwise it parses the whole document as before, so a file's errors, and the meaning of a
//! file this scan misreads, are exactly what one parse gives.

use std::ops::Range;

/// A document cut into the rest (everything that is not a `[jobs.NAME]` section, in order)
/// and blocks of consecutive job sections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// The sections that are not a job's, joined in their order (the text before the first
    /// header first).
    pub rest: String,
    /// Ranges of the text, each one or more whole job sections, at least `block_bytes` long
    /// unless a section of the rest or the end of the text comes first.
    pub blocks: Vec<Range<usize>>,
    /// How many runs of sections of one job the blocks hold: the number of jobs of a plain
    /// file (a name written two ways, `a` and `"a"`, counts twice), so the loader can size its
    /// `Vec<JobSpec>` once instead of growing it by doubling (issue 15).
    pub jobs: usize,
}

/// Splits `text` at its top-level table headers; `None` when it has no job section, or when a
/// header cannot be read (the loader then parses the whole text, which reports it).
pub fn split(text: &str, block_bytes: usize) -> Option<Split> {
    let headers = headers(text)?;
    // Sections: the text before the first header, then one per header.
    let mut sections: Vec<(Range<usize>, Option<&str>)> = Vec::with_capacity(headers.len() + 1);
    let first = headers.first().map_or(text.len(), |(at, _)| *at);
    sections.push((0..first, None));
    for (i, (at, job)) in headers.iter().enumerate() {
        let end = headers.get(i + 1).map_or(text.len(), |(next, _)| *next);
        sections.push((*at..end, *job));
    }
    if sections.iter().all(|(_, job)| job.is_none()) {
        return None;
    }
    let mut split = Split {
        rest: String::new(),
        blocks: Vec::new(),
        jobs: 0,
    };
    let mut block: Option<Range<usize>> = None;
    let mut last_job: Option<&str> = None;
    for (range, job) in sections {
        match job {
            None => {
                if let Some(done) = block.take() {
                    split.blocks.push(done);
                }
                last_job = None;
                split.rest.push_str(&text[range]);
            }
            Some(name) => {
                // A block ends only between two jobs, never inside one job's sections.
                let same_job = last_job == Some(name);
                if !same_job {
                    split.jobs += 1;
                }
                block = match block.take() {
                    Some(open) if same_job || open.len() < block_bytes => {
                        Some(open.start..range.end)
                    }
                    Some(full) => {
                        split.blocks.push(full);
                        Some(range)
                    }
                    None => Some(range),
                };
                last_job = Some(name);
            }
        }
    }
    split.blocks.extend(block);
    Some(split)
}

/// Every top-level table header: its offset and, for a `[jobs.NAME…]` or `[[jobs.NAME…]]`
/// header with a bare `jobs`, `NAME` as written. `None` when a header does not read as one.
fn headers(text: &str) -> Option<Vec<(usize, Option<&str>)>> {
    let bytes = text.as_bytes();
    let mut headers = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let start = skip_blank(bytes, at);
        if bytes.get(start) == Some(&b'[') {
            let (job, end) = header(text, start)?;
            headers.push((start, job));
            at = end;
        } else {
            at = content_line(bytes, at)?;
        }
    }
    Some(headers)
}

fn skip_blank(bytes: &[u8], mut at: usize) -> usize {
    while matches!(bytes.get(at), Some(b' ' | b'\t')) {
        at += 1;
    }
    at
}

/// Reads the header at `start` (a `[`) to the end of its line: the job name, if it is a job's,
/// and where the next line starts.
fn header(text: &str, start: usize) -> Option<(Option<&str>, usize)> {
    let bytes = text.as_bytes();
    let double = bytes.get(start + 1) == Some(&b'[');
    let mut at = start + if double { 2 } else { 1 };
    let mut parts: Vec<&str> = Vec::new();
    loop {
        at = skip_blank(bytes, at);
        let key_start = at;
        match bytes.get(at)? {
            b'"' => at = basic_string_end(bytes, at)?,
            b'\'' => at = literal_string_end(bytes, at)?,
            _ => {
                while bytes
                    .get(at)
                    .is_some_and(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
                {
                    at += 1;
                }
                if at == key_start {
                    return None;
                }
            }
        }
        parts.push(&text[key_start..at]);
        at = skip_blank(bytes, at);
        match bytes.get(at)? {
            b'.' => at += 1,
            b']' => {
                at += 1;
                if double {
                    (bytes.get(at) == Some(&b']')).then_some(())?;
                    at += 1;
                }
                break;
            }
            _ => return None,
        }
    }
    at = skip_blank(bytes, at);
    match bytes.get(at) {
        None => {}
        Some(b'#') => at = line_end(bytes, at),
        Some(b'\r' | b'\n') => {}
        Some(_) => return None,
    }
    at = next_line(bytes, at)?;
    let job = match parts.as_slice() {
        ["jobs", name, ..] => Some(unquoted(name)),
        _ => None,
    };
    Some((job, at))
}

/// A key as its name: `"a"` and `'a'` are `a` (a key with an escape stays as written: only
/// where a block may end depends on it, and a job split in two is left to one parse).
fn unquoted(key: &str) -> &str {
    let inner = key
        .strip_prefix('"')
        .and_then(|k| k.strip_suffix('"'))
        .filter(|k| !k.contains('\\'))
        .or_else(|| key.strip_prefix('\'').and_then(|k| k.strip_suffix('\'')));
    inner.unwrap_or(key)
}

/// Skips a line that is not a header, with what continues it (a multi-line string, array or
/// inline table): where the next line starts.
fn content_line(bytes: &[u8], mut at: usize) -> Option<usize> {
    let mut depth: usize = 0;
    while let Some(&byte) = bytes.get(at) {
        match byte {
            b'#' => at = line_end(bytes, at),
            b'"' => at = basic_string_end(bytes, at)?,
            b'\'' => at = literal_string_end(bytes, at)?,
            b'[' | b'{' => {
                depth += 1;
                at += 1;
            }
            b']' | b'}' => {
                depth = depth.checked_sub(1)?;
                at += 1;
            }
            b'\n' if depth == 0 => return Some(at + 1),
            _ => at += 1,
        }
    }
    (depth == 0).then_some(at)
}

fn line_end(bytes: &[u8], mut at: usize) -> usize {
    while bytes.get(at).is_some_and(|b| *b != b'\n') {
        at += 1;
    }
    at
}

/// Past the `\n` at `at` (or `\r\n`); the end of the text stays where it is.
fn next_line(bytes: &[u8], at: usize) -> Option<usize> {
    match bytes.get(at) {
        None => Some(at),
        Some(b'\n') => Some(at + 1),
        Some(b'\r') if bytes.get(at + 1) == Some(&b'\n') => Some(at + 2),
        Some(_) => None,
    }
}

/// Past the basic string (`"…"` or `"""…"""`) that starts at `at`.
fn basic_string_end(bytes: &[u8], at: usize) -> Option<usize> {
    let multi = bytes.get(at..at + 3) == Some(b"\"\"\"");
    let mut i = at + if multi { 3 } else { 1 };
    loop {
        match bytes.get(i)? {
            b'\\' => i += 2,
            b'"' if !multi => return Some(i + 1),
            b'"' if bytes.get(i..i + 3) == Some(b"\"\"\"") => {
                return Some(closing_quotes(bytes, i, b'"'));
            }
            b'\n' if !multi => return None,
            _ => i += 1,
        }
    }
}

/// Past the literal string (`'…'` or `'''…'''`) that starts at `at`.
fn literal_string_end(bytes: &[u8], at: usize) -> Option<usize> {
    let multi = bytes.get(at..at + 3) == Some(b"'''");
    let mut i = at + if multi { 3 } else { 1 };
    loop {
        match bytes.get(i)? {
            b'\'' if !multi => return Some(i + 1),
            b'\'' if bytes.get(i..i + 3) == Some(b"'''") => {
                return Some(closing_quotes(bytes, i, b'\''));
            }
            b'\n' if !multi => return None,
            _ => i += 1,
        }
    }
}

/// Past the closing `"""` (or `'''`) found at `at`, with the one or two quotes a multi-line
/// string may end with just inside it (`""""` is a quote, then the delimiter).
fn closing_quotes(bytes: &[u8], at: usize, quote: u8) -> usize {
    let mut end = at + 3;
    let mut extra = 0;
    while extra < 2 && bytes.get(end) == Some(&quote) {
        end += 1;
        extra += 1;
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
title = \"[jobs.fake]\"
[settings]
refresh_before = \"20s\"

[jobs.a]
scope = '''
[jobs.inside]
'''
targets = [
  { to = \"out\", name = \"a\" },
  [ 1, 2 ],
]
[[jobs.a.extra]] # a comment [jobs.x]
x = 1
[ jobs . b ]
y = \"\"\"a\"\"\"\"
[backends.out]
kind = \"file\"
[jobs.\"c d\"]
z = 1
";

    #[test]
    fn headers_are_found_outside_strings_arrays_and_comments() {
        let found: Vec<(usize, Option<&str>)> = headers(TEXT).unwrap();
        let lines: Vec<(&str, Option<&str>)> = found
            .iter()
            .map(|(at, job)| (TEXT[*at..].lines().next().unwrap(), *job))
            .collect();
        assert_eq!(
            lines,
            [
                ("[settings]", None),
                ("[jobs.a]", Some("a")),
                ("[[jobs.a.extra]] # a comment [jobs.x]", Some("a")),
                ("[ jobs . b ]", Some("b")),
                ("[backends.out]", None),
                ("[jobs.\"c d\"]", Some("c d")),
            ]
        );
    }

    #[test]
    fn jobs_go_to_blocks_and_the_rest_keeps_the_other_sections_in_order() {
        let split = split(TEXT, 1).unwrap();
        let at = |needle: &str| TEXT.find(needle).unwrap();
        // With 1-byte blocks every job is its own block; a's two sections stay together.
        assert_eq!(
            split.blocks,
            [
                at("[jobs.a]")..at("[ jobs . b ]"),
                at("[ jobs . b ]")..at("[backends.out]"),
                at("[jobs.\"c d\"]")..TEXT.len(),
            ]
        );
        assert_eq!(
            split.rest,
            "title = \"[jobs.fake]\"\n[settings]\nrefresh_before = \"20s\"\n\n\
             [backends.out]\nkind = \"file\"\n"
        );
        // Large blocks: jobs next to each other share one.
        let big = super::split(TEXT, 1 << 20).unwrap();
        assert_eq!(big.blocks.len(), 2);
        assert_eq!(big.blocks[0], at("[jobs.a]")..at("[backends.out]"));
    }

    #[test]
    fn no_jobs_or_an_unreadable_header_is_no_split() {
        assert_eq!(split("[settings]\nx = 1\n", 1), None);
        assert_eq!(split("[jobs.a\nx = 1\n", 1), None);
        assert_eq!(split("[jobs.a] x = 1\n", 1), None);
        assert_eq!(split("x = \"unterminated\n[jobs.a]\n", 1), None);
        assert_eq!(
            split("x = [1,\n[jobs.a]\n", 1),
            None,
            "an array never closed"
        );
    }

    /// What a config loads to, through one parse and in blocks of any size.
    fn both(text: &str, block_bytes: usize) -> (String, Option<String>) {
        let path = std::path::Path::new("/etc/secret-sync/secret-sync.toml");
        let env = |var: &str| (var == "AUTH").then(|| "https://login.example.test/".to_owned());
        let whole = match super::super::parse_whole(text, path, &env) {
            Ok(config) => format!("{config:#?}"),
            Err(errors) => errors.to_string(),
        };
        let blocks = super::super::parse_in_blocks(text, path, &env, block_bytes)
            .map(|config| format!("{config:#?}"));
        (whole, blocks)
    }

    const JOB: &str = "tenant_id = \"72f988bf-86f1-41af-91ab-2d7cd011db47\"
client_id = \"00000000-0000-4000-8000-000000000001\"
client_secret = { env = \"SECRET\" }
scope = \"https://graph.microsoft.com/.default\"
";

    #[test]
    fn a_config_loads_the_same_in_blocks_as_in_one_parse() {
        let mut text = String::from(
            "# generated\n[settings]\nrefresh_before = \"20s\"\nauthority = { env = \"AUTH\" }\n\n",
        );
        for n in 0..40 {
            text.push_str(&format!(
                "[jobs.job-{n:02}]\n{JOB}targets = [\n  {{ to = \"out\", name = \"t-{n}\" }},\n                   {{ to = \"out\", name = \"u-{n}\", format = \"json\" }},\n]\n\n"
            ));
            if n == 20 {
                // a backend in the middle, and a job spread over two headers
                text.push_str("[backends.out]\nkind = \"file\"\ndir = \"out\"\n\n");
                text.push_str(&format!(
                    "[jobs.\"spread\"]\n{JOB}pass_timeout = \"1m\"\n[[jobs.spread.targets]]\n\
                     to = \"out\"\nname = \"spread\" # [jobs.not-a-header]\n\n"
                ));
            }
        }
        for block_bytes in [1, 300, 4096, 1 << 20] {
            let (whole, blocks) = both(&text, block_bytes);
            assert!(
                whole.contains("job-39") && whole.contains("spread"),
                "{whole}"
            );
            assert!(
                blocks.as_deref() == Some(whole.as_str()),
                "blocks of {block_bytes}"
            );
        }
        assert!(split(&text, 4096).unwrap().blocks.len() > 2);
        assert_eq!(split(&text, 4096).unwrap().jobs, 41);
    }

    #[test]
    fn anything_not_plain_is_left_to_one_parse() {
        let backend = "[backends.out]\nkind = \"file\"\ndir = \"out\"\n";
        let job = |name: &str, target: &str| {
            format!("[jobs.{name}]\n{JOB}targets = [{{ to = \"out\", name = \"{target}\" }}]\n")
        };
        let cases = [
            // a job named twice: one parse refuses it
            format!("{backend}{}{}", job("a", "x"), job("a", "y")),
            // two jobs writing one target: an error of the walk
            format!("{backend}{}{}", job("a", "x"), job("b", "x")),
            // a syntax error in a block
            format!("{backend}{}[jobs.b]\nscope = \n", job("a", "x")),
            // a table added to a job after another job: TOML allows it, one parse merges it
            format!(
                "{backend}{}{}[jobs.a.extra]\n",
                job("a", "x"),
                job("b", "y")
            ),
            // one file through two backends (nested dirs), the jobs in different blocks
            format!(
                "{backend}[backends.sub]\nkind = \"file\"\ndir = \"out/s\"\n{}{}{}",
                job("a", "s/t"),
                job("b", "y"),
                job("c", "t").replace("\"out\", name = \"t\"", "\"sub\", name = \"t\"")
            ),
            // a Vault name that repeats the mount
            format!(
                "{backend}[backends.v]\nkind = \"vault\"\naddress = \"https://v.example.test\"\n\
                 mount = \"kv\"\nauth = {{ method = \"kubernetes\", role = \"r\" }}\n{}{}",
                job("a", "x"),
                job("b", "y").replace("\"out\", name = \"y\"", "\"v\", name = \"kv/data/apps/y\"")
            ),
        ];
        for text in &cases {
            let (whole, blocks) = both(text, 1);
            assert_eq!(blocks, None, "{text}\n{whole}");
        }
        // The two checks across targets are reported by one parse.
        assert!(
            both(&cases[4], 1)
                .0
                .contains("is the same secret as the target jobs.a.targets[0]")
        );
        assert!(both(&cases[5], 1).0.contains("starts with the mount"));
        // The duplicate is reported as one parse reports it.
        assert!(
            both(&cases[0], 1).0.contains("duplicate"),
            "{}",
            both(&cases[0], 1).0
        );
        // A job from [jobs] and one from a block with the same name: left to one parse too.
        let inline = format!(
            "{backend}[jobs]\na = {{ {} targets = [{{ to = \"out\", name = \"z\" }}] }}\n{}",
            JOB.replace('\n', ", "),
            job("a", "x")
        );
        assert_eq!(both(&inline, 1).1, None);
    }
}
