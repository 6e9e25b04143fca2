//! Typed parameters: the host passes name/value pairs; a plugin reads them into its own struct.

use serde::de::DeserializeOwned;

use crate::PluginError;

/// Parameters as the host passed them: names with JSON values (bare strings are accepted too).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(Vec<(String, String)>);

impl Params {
    /// Wraps name/value pairs.
    pub fn new(pairs: Vec<(String, String)>) -> Self {
        Self(pairs)
    }

    /// Builds parameters from a JSON object, as tests and the host do.
    pub fn from_json(v: &serde_json::Value) -> Self {
        let pairs = v
            .as_object()
            .map(|o| o.iter().map(|(k, v)| (k.clone(), v.to_string())).collect())
            .unwrap_or_default();
        Self(pairs)
    }

    /// The pairs.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }

    /// Reads the parameters into a typed struct (use `#[serde(deny_unknown_fields)]` so a typo is an
    /// error, and `#[serde(default)]` for optional ones). Values that are not JSON are taken as strings.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, PluginError> {
        let mut obj = serde_json::Map::new();
        for (k, v) in &self.0 {
            let value =
                serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.clone()));
            obj.insert(k.clone(), value);
        }
        serde_json::from_value(serde_json::Value::Object(obj))
            .map_err(|e| PluginError::InvalidParams(e.to_string()))
    }
}
