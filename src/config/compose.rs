//! `compose:`: the pools the daemon creates at start, and the one rule for a
//! pool's name.

use super::*;

/// One entry of `compose:`: a pool the runtime creates when it starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSpec {
    pub name: String,
    pub module: String,
    /// The module's parameters as JSON text (a YAML mapping is converted).
    #[serde(default)]
    pub params: String,
    /// The entry's line in the configuration file (0: not from a file), for
    /// errors only the start can find (a module this binary lacks).
    #[serde(skip)]
    pub line: usize,
}

impl PoolSpec {
    /// Whether two entries create the same pool (the line does not count).
    pub fn same_pool(&self, other: &PoolSpec) -> bool {
        (&self.name, &self.module, &self.params) == (&other.name, &other.module, &other.params)
    }

    /// How errors name entry `i`: `compose[i] (line N)`.
    pub fn at(&self, i: usize) -> String {
        if self.line > 0 {
            format!("compose[{i}] (line {})", self.line)
        } else {
            format!("compose[{i}]")
        }
    }
}

pub use chimaera_proto::admin::check_pool_name;

/// A YAML value as JSON: mappings and lists as such, plain scalars as the
/// number, boolean or null they spell, everything else as a string.
pub(super) fn yaml_to_json(node: &Node) -> serde_json::Value {
    use serde_json::Value;
    match node {
        Node::Map { entries, .. } => Value::Object(
            entries
                .iter()
                .map(|(k, _, v)| (k.clone(), yaml_to_json(v)))
                .collect(),
        ),
        Node::Seq { items, .. } => Value::Array(items.iter().map(yaml_to_json).collect()),
        n if n.is_null() => Value::Null,
        Node::Scalar { text, plain, .. } => {
            if *plain {
                if let Ok(i) = text.parse::<i64>() {
                    return Value::from(i);
                }
                if let Ok(f) = text.parse::<f64>() {
                    return Value::from(f);
                }
                match text.as_str() {
                    "true" => return Value::Bool(true),
                    "false" => return Value::Bool(false),
                    _ => {}
                }
            }
            Value::String(text.clone())
        }
    }
}
