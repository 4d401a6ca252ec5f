//! A pool's parameters: the JSON a `CreatePool` carries, parsed and checked
//! into [`BdevParams`] before any device is opened. Parsing is pure (no file
//! or memory is touched), so it stands alone and is tested alone.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::size::{human, parse_size};

/// Smallest and largest block sizes a pool accepts.
pub const MIN_BLOCK_SIZE: u64 = 512;
pub const MAX_BLOCK_SIZE: u64 = 16 << 20;
/// Block size when params give none.
pub const DEFAULT_BLOCK_SIZE: u64 = 4096;

/// Where a pool's bytes live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Ram,
    File,
}

/// A pool's parameters, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BdevParams {
    pub kind: Kind,
    pub size: u64,
    pub block_size: u64,
    /// The file (absolute) of a file pool.
    pub path: Option<PathBuf>,
    /// O_DIRECT (file pools only).
    pub direct: bool,
}

const FIELDS: [&str; 5] = ["kind", "size", "block_size", "path", "direct"];

fn size_field(obj: &serde_json::Map<String, Value>, name: &str) -> Result<Option<u64>, String> {
    match obj.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| format!("{name}: expected a whole number of bytes, got {n}")),
        Some(Value::String(s)) => parse_size(s).map(Some).map_err(|e| format!("{name}: {e}")),
        Some(other) => Err(format!(
            "{name}: expected a size such as \"64M\" or a number of bytes, got {other}"
        )),
    }
}

impl BdevParams {
    /// Parses and checks a pool's params; the error names the field.
    pub fn parse(text: &[u8]) -> Result<BdevParams, String> {
        let example = r#"{"kind":"ram","size":"64M","block_size":4096}"#;
        let value: Value = serde_json::from_slice(text).map_err(|e| {
            format!(
                "expected a JSON object such as {example}, got {:?}: {e}",
                String::from_utf8_lossy(text)
            )
        })?;
        let Value::Object(obj) = value else {
            return Err(format!(
                "expected a JSON object such as {example}, got {value}"
            ));
        };
        if let Some(unknown) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(format!(
                "{unknown}: unknown field; known fields: {}",
                FIELDS.join(", ")
            ));
        }
        let kind = match obj.get("kind") {
            Some(Value::String(k)) if k == "ram" => Kind::Ram,
            Some(Value::String(k)) if k == "file" => Kind::File,
            Some(other) => return Err(format!("kind: expected \"ram\" or \"file\", got {other}")),
            None => return Err("kind: missing; \"ram\" or \"file\"".into()),
        };
        let size = size_field(&obj, "size")?.ok_or("size: missing; e.g. \"64M\"")?;
        let block_size = size_field(&obj, "block_size")?.unwrap_or(DEFAULT_BLOCK_SIZE);
        if !block_size.is_power_of_two() || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size)
        {
            return Err(format!(
                "block_size: expected a power of two from {} to {}, got {block_size}",
                human(MIN_BLOCK_SIZE),
                human(MAX_BLOCK_SIZE)
            ));
        }
        if size == 0 || !size.is_multiple_of(block_size) {
            return Err(format!(
                "size: expected a positive whole number of blocks of {block_size} bytes, got {size}"
            ));
        }
        if usize::try_from(size).is_err() || size > i64::MAX as u64 {
            return Err(format!(
                "size: {size} bytes is more than this machine can address"
            ));
        }
        let path = match obj.get("path") {
            None => None,
            Some(Value::String(p)) => {
                let p = PathBuf::from(p);
                if !p.is_absolute() {
                    return Err(format!(
                        "path: expected an absolute path (the daemon's working directory is not yours), got {}",
                        p.display()
                    ));
                }
                Some(p)
            }
            Some(other) => return Err(format!("path: expected a string, got {other}")),
        };
        let direct = match obj.get("direct") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => return Err(format!("direct: expected true or false, got {other}")),
        };
        match kind {
            Kind::File if path.is_none() => {
                return Err("path: missing; a file pool needs the file's absolute path".into());
            }
            Kind::Ram if path.is_some() => {
                return Err("path: only a file pool has a path (kind is \"ram\")".into());
            }
            Kind::Ram if direct => {
                return Err("direct: only a file pool can use O_DIRECT (kind is \"ram\")".into());
            }
            _ => {}
        }
        Ok(BdevParams {
            kind,
            size,
            block_size,
            path,
            direct,
        })
    }

    pub fn blocks(&self) -> u64 {
        self.size / self.block_size
    }
}

#[cfg(test)]
mod tests;
