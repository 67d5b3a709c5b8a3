//! Where a setting comes from: the process environment, `.env.local`, `.env`, in that order
//! (`.env.local` overrides `.env`, as with dotenv-flow, Vite and Next.js).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

/// Where a setting's value was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Source {
    /// The explicit organization (`--org`, [`VerifyOptions::organization_id`](super::VerifyOptions::organization_id)).
    Option,
    /// The process environment (as given in [`VerifyOptions::env_vars`](super::VerifyOptions::env_vars)).
    Environment,
    /// The `.env` file.
    DotEnv,
    /// The `.env.local` file.
    DotEnvLocal,
}

impl Source {
    /// `the --org option`, `environment`, `.env.local`, `.env`.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Option => "the --org option",
            Source::Environment => "environment",
            Source::DotEnv => ".env",
            Source::DotEnvLocal => ".env.local",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A setting's value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    pub(crate) value: String,
    pub(crate) source: Source,
    /// Later sources that also set it (to a non-empty value) and were ignored.
    pub(crate) shadowed: Vec<Source>,
}

impl Found {
    /// `from .env.local` or `from .env.local (also set in .env, ignored)`.
    pub(crate) fn origin(&self) -> String {
        if self.shadowed.is_empty() {
            format!("from {}", self.source)
        } else {
            let others: Vec<&str> = self.shadowed.iter().map(|s| s.as_str()).collect();
            format!(
                "from {} (also set in {}, ignored)",
                self.source,
                others.join(", ")
            )
        }
    }
}

/// The layered settings: the environment first, then `.env.local`, then `.env`.
#[derive(Debug, Default)]
pub(crate) struct EnvLayers {
    layers: Vec<(Source, BTreeMap<String, String>)>,
    /// Files that exist but could not be read or parsed, with the reason.
    pub(crate) problems: Vec<String>,
}

impl EnvLayers {
    /// The environment map and, when `dir` is given, its `.env.local` and `.env` files.
    pub(crate) fn load(env: &BTreeMap<String, String>, dir: Option<&Path>) -> Self {
        let mut out = EnvLayers {
            layers: vec![(Source::Environment, env.clone())],
            problems: Vec::new(),
        };
        if let Some(dir) = dir {
            for (source, name) in [(Source::DotEnvLocal, ".env.local"), (Source::DotEnv, ".env")] {
                let path = dir.join(name);
                if !path.is_file() {
                    continue;
                }
                match read_dotenv(&path, &mut out.problems) {
                    Ok(map) => out.layers.push((source, map)),
                    Err(e) => out.problems.push(format!("{}: {e}", path.display())),
                }
            }
        }
        out
    }

    /// The first non-empty value of `key`, by precedence.
    pub(crate) fn get(&self, key: &str) -> Option<Found> {
        let mut found: Option<Found> = None;
        for (source, map) in &self.layers {
            let Some(value) = map.get(key).filter(|v| !v.trim().is_empty()) else {
                continue;
            };
            match &mut found {
                None => {
                    found = Some(Found {
                        value: value.clone(),
                        source: *source,
                        shadowed: Vec::new(),
                    })
                }
                Some(f) => f.shadowed.push(*source),
            }
        }
        found
    }

    /// The sources that set `key` to an empty value.
    pub(crate) fn empty_in(&self, key: &str) -> Vec<Source> {
        self.layers
            .iter()
            .filter(|(_, map)| map.get(key).is_some_and(|v| v.trim().is_empty()))
            .map(|(s, _)| *s)
            .collect()
    }

    /// The sources consulted, for messages: `environment, .env`.
    pub(crate) fn consulted(&self) -> String {
        let names: Vec<&str> = self.layers.iter().map(|(s, _)| s.as_str()).collect();
        names.join(", ")
    }
}

/// Reads a `.env` file without touching the process environment. Lines that cannot be parsed are
/// reported (by number, never by content: they may hold a secret) and skipped.
fn read_dotenv(path: &Path, problems: &mut Vec<String>) -> Result<BTreeMap<String, String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let iter = dotenvy::from_read_iter(text.as_bytes());
    let mut map = BTreeMap::new();
    for item in iter {
        match item {
            Ok((k, v)) => {
                map.insert(k, v);
            }
            Err(dotenvy::Error::LineParse(line, _)) => {
                let number = text
                    .lines()
                    .position(|l| l.trim() == line.trim())
                    .map_or_else(|| "a line".to_owned(), |n| format!("line {}", n + 1));
                problems.push(format!(
                    "{}: {number} is not KEY=VALUE and was ignored",
                    path.display()
                ));
            }
            Err(e) => problems.push(format!("{}: {e}", path.display())),
        }
    }
    Ok(map)
}

/// The key as it may be shown: `sk_test_…abcd`, `sk_…abcd`, `…abcd` or its length only.
///
/// # Security
/// Never more than a known prefix and the last four characters, and only when the key is long
/// enough that those reveal little (at least 16 characters for the last four).
pub fn mask_key(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    let prefix = ["sk_test_", "sk_live_", "sk_"]
        .into_iter()
        .find(|p| key.starts_with(p))
        .unwrap_or("");
    if chars.len() < 16 {
        return if prefix.is_empty() {
            format!("({} characters)", chars.len())
        } else {
            format!("{prefix}… ({} characters)", chars.len())
        };
    }
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{prefix}…{tail}")
}

/// The byte ranges of what looks like a WorkOS secret key in `text`: `sk_` at the start of a word
/// and the key characters after it, when more than a bare prefix (`sk_`, `sk_test_`, `sk_live_`)
/// follows.
fn secret_key_spans(text: &str) -> Vec<std::ops::Range<usize>> {
    let bytes = text.as_bytes();
    let is_key_byte = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
    let mut spans = Vec::new();
    let mut from = 0;
    while let Some(found) = text[from..].find("sk_") {
        let start = from + found;
        let mut end = start + 3;
        while end < bytes.len() && is_key_byte(bytes[end]) {
            end += 1;
        }
        let at_word_start = start == 0 || !bytes[start - 1].is_ascii_alphanumeric();
        if at_word_start && !matches!(&text[start..end], "sk_" | "sk_test_" | "sk_live_") {
            spans.push(start..end);
        }
        from = end;
    }
    spans
}

/// Whether `value` holds what looks like a WorkOS secret key (`sk_…` at the start of a word),
/// wherever it was put: such a value is never shown, not even in part.
pub(crate) fn holds_secret_key(value: &str) -> bool {
    !secret_key_spans(value).is_empty()
}

/// `text` with every secret taken out: each of `known` (at least 4 characters: shorter strings
/// would mangle ordinary words) and everything that looks like a WorkOS secret key become
/// `[redacted]` (a key keeps its public prefix: `sk_test_[redacted]`).
///
/// # Security
/// The last line of defence of every finding and fix; the checks do not print secrets on
/// purpose in the first place.
pub(crate) fn redact(text: &str, known: &[&str]) -> String {
    let mut out = text.to_owned();
    for secret in known.iter().filter(|s| s.len() >= 4) {
        out = out.replace(secret, "[redacted]");
    }
    let mut redacted = String::with_capacity(out.len());
    let mut last = 0;
    for span in secret_key_spans(&out) {
        let prefix = ["sk_test_", "sk_live_", "sk_"]
            .into_iter()
            .find(|p| out[span.clone()].starts_with(p))
            .unwrap_or("sk_");
        redacted.push_str(&out[last..span.start]);
        redacted.push_str(prefix);
        redacted.push_str("[redacted]");
        last = span.end;
    }
    redacted.push_str(&out[last..]);
    redacted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_masked() {
        assert_eq!(mask_key("sk_test_0123456789abcdef"), "sk_test_…cdef");
        assert_eq!(mask_key("sk_live_0123456789abcdef"), "sk_live_…cdef");
        assert_eq!(mask_key("sk_0123456789abcdef"), "sk_…cdef");
        assert_eq!(mask_key("pk_0123456789abcdef"), "…cdef");
        assert_eq!(mask_key("sk_test_abc"), "sk_test_… (11 characters)");
        assert_eq!(mask_key("short"), "(5 characters)");
    }

    #[test]
    fn secret_keys_are_found_and_redacted_wherever_they_are() {
        assert!(holds_secret_key("sk_test_0123456789abcdef"));
        assert!(holds_secret_key("https://sk_live_abc.example.com"));
        assert!(holds_secret_key(" sk_oops"));
        assert!(!holds_secret_key("org_01EHWNCE74X7JSDV0X3SZ3KJNY"));
        assert!(!holds_secret_key("task_sk_is_not_a_word_start_for_ask_"));
        assert!(!holds_secret_key("does not start with \"sk_\" or sk_test_…abcd"));
        assert_eq!(
            redact(
                "org sk_live_0123456789abcdef (from env), a sk_test_…cdef mask",
                &[]
            ),
            "org sk_live_[redacted] (from env), a sk_test_…cdef mask"
        );
        assert_eq!(
            redact("token tok-123456 echoed", &["tok-123456", "ab"]),
            "token [redacted] echoed"
        );
        assert_eq!(redact("about", &["ab"]), "about");
    }

    #[test]
    fn first_non_empty_source_wins() {
        let env = BTreeMap::from([
            ("A".to_owned(), "".to_owned()),
            ("B".to_owned(), "env".to_owned()),
        ]);
        let mut layers = EnvLayers::load(&env, None);
        layers.layers.push((
            Source::DotEnv,
            BTreeMap::from([
                ("A".to_owned(), "file".to_owned()),
                ("B".to_owned(), "file".to_owned()),
            ]),
        ));
        let a = layers.get("A").unwrap();
        assert_eq!((a.value.as_str(), a.source), ("file", Source::DotEnv));
        let b = layers.get("B").unwrap();
        assert_eq!((b.value.as_str(), b.source), ("env", Source::Environment));
        assert_eq!(b.shadowed, vec![Source::DotEnv]);
        assert_eq!(layers.empty_in("A"), vec![Source::Environment]);
        assert!(layers.get("C").is_none());
    }
}
