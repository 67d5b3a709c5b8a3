//! Where a setting comes from: the process environment, `.env`, `.env.local`, in that order.

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
    /// `the --org option`, `environment`, `.env`, `.env.local`.
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
    /// `from .env` or `from .env (also set in .env.local, ignored)`.
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

/// The layered settings: the environment first, then `.env`, then `.env.local`.
#[derive(Debug, Default)]
pub(crate) struct EnvLayers {
    layers: Vec<(Source, BTreeMap<String, String>)>,
    /// Files that exist but could not be read or parsed, with the reason.
    pub(crate) problems: Vec<String>,
}

impl EnvLayers {
    /// The environment map and, when `dir` is given, its `.env` and `.env.local` files.
    pub(crate) fn load(env: &BTreeMap<String, String>, dir: Option<&Path>) -> Self {
        let mut out = EnvLayers {
            layers: vec![(Source::Environment, env.clone())],
            problems: Vec::new(),
        };
        if let Some(dir) = dir {
            for (source, name) in [(Source::DotEnv, ".env"), (Source::DotEnvLocal, ".env.local")] {
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
