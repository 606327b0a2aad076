use std::fmt;

/// One value that parsed but is not allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// Key path, e.g. `listeners[1].backends[0].weight`.
    pub path: String,
    /// The offending value as written (or a summary of it).
    pub value: String,
    /// What is allowed instead.
    pub reason: String,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} = {}: {}", self.path, self.value, self.reason)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{}{}: {message}", if path.is_empty() { "<top level>" } else { path }, line.map(|l| format!(" (line {l})")).unwrap_or_default())]
    Parse {
        path: String,
        message: String,
        line: Option<usize>,
    },
    #[error("invalid configuration:\n{}", .0.iter().map(|i| format!("  {i}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Invalid>),
}
