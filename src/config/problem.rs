//! What is wrong with a configuration: each problem with its key and where
//! it came from (`file:line:col`, a variable, `--set`), and suggestions for
//! misspelt names.

use super::*;

/// Where a value (or a problem) came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    File {
        path: PathBuf,
        line: usize,
        col: usize,
    },
    Env(String),
    Flag,
    /// A rule across keys, or the machine itself.
    Check,
}

/// One thing wrong with the configuration, naming the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub origin: Origin,
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.origin {
            Origin::File { path, line, col } => {
                write!(
                    f,
                    "{}:{line}:{col}: {}: {}",
                    path.display(),
                    self.key,
                    self.message
                )
            }
            Origin::Env(var) => write!(f, "environment {var} ({}): {}", self.key, self.message),
            Origin::Flag => write!(f, "--set {}: {}", self.key, self.message),
            Origin::Check => write!(f, "{}: {}", self.key, self.message),
        }
    }
}

impl Problem {
    /// Where it came from, in words: `file:line:col`, `environment VAR`,
    /// `--set`, or `check` (a rule across keys, or the machine).
    pub fn origin_text(&self) -> String {
        match &self.origin {
            Origin::File { path, line, col } => format!("{}:{line}:{col}", path.display()),
            Origin::Env(var) => format!("environment {var}"),
            Origin::Flag => "--set".into(),
            Origin::Check => "check".into(),
        }
    }

    /// The problem as the JSON object `config check --json` prints.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({"key": self.key, "origin": self.origin_text(), "message": self.message})
    }
}

/// Every problem found, one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<Problem>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// The closest known name, for "did you mean" hints.
pub(super) fn closest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    fn distance(a: &str, b: &str) -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut prev: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut cur = vec![i + 1];
            for (j, cb) in b.iter().enumerate() {
                let cost = usize::from(ca != *cb);
                cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
            }
            prev = cur;
        }
        prev[b.len()]
    }
    candidates
        .into_iter()
        .map(|c| (distance(word, c), c))
        .filter(|(d, c)| *d <= 3.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

pub(super) fn hint(word: &str, candidates: impl IntoIterator<Item = &'static str>) -> String {
    match closest(word, candidates) {
        Some(c) => format!(" (did you mean `{c}`?)"),
        None => String::new(),
    }
}

pub fn check(problems: &mut Vec<Problem>, key: &str, message: String) {
    problems.push(Problem {
        origin: Origin::Check,
        key: key.into(),
        message,
    });
}
