//! ExpressGateway configuration: the TOML schema, parsing that names the key
//! path of every error, and validation of everything serde cannot check.
#![forbid(unsafe_code)]

mod error;
pub mod schema;
mod status;
mod validate;

use std::path::Path;

use serde::Deserialize;

pub use error::{ConfigError, Invalid};
pub use schema::global::*;
pub use schema::listener::*;
pub use schema::pool::*;
pub use schema::quic_lb::*;
pub use schema::xdp::*;
pub use status::StatusRanges;

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub listeners: Vec<Listener>,
    #[serde(default)]
    pub clusters: Vec<Cluster>,
    #[serde(default)]
    pub security: Security,
    #[serde(default)]
    pub runtime: Runtime,
    #[serde(default)]
    pub observability: Observability,
    #[serde(default)]
    pub admin: Admin,
    pub passthrough: Option<Passthrough>,
    #[serde(default)]
    pub xdp: Xdp,
}

impl Config {
    /// Parse and validate TOML text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let de = toml::Deserializer::new(text);
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let line = inner.span().map(|span| {
                text.bytes()
                    .take(span.start)
                    .filter(|b| *b == b'\n')
                    .count()
                    + 1
            });
            ConfigError::Parse {
                path: if path == "." { String::new() } else { path },
                message: inner.message().trim().to_owned(),
                line,
            }
        })?;
        config.validate().map_err(ConfigError::Invalid)?;
        Ok(config)
    }

    /// Read, parse and validate a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text)
    }

    /// Look up a `[[clusters]]` entry by name.
    pub fn cluster(&self, name: &str) -> Option<&Cluster> {
        self.clusters.iter().find(|c| c.name == name)
    }
}

#[cfg(test)]
mod doc_coverage;
#[cfg(test)]
mod tests;
