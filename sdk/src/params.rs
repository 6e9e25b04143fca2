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

/// Refuses any parameter: the default of plugins that take none.
pub(crate) fn none(params: &Params) -> Result<(), PluginError> {
    match params.pairs() {
        [] => Ok(()),
        pairs => {
            let names: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
            Err(PluginError::InvalidParams(format!(
                "this plugin takes no parameters; got {names:?}"
            )))
        }
    }
}

/// No parameters.
impl From<()> for Params {
    fn from((): ()) -> Self {
        Self::default()
    }
}

/// Parameters from a JSON object, as [`Params::from_json`].
impl From<serde_json::Value> for Params {
    fn from(v: serde_json::Value) -> Self {
        Self::from_json(&v)
    }
}

/// Parameters from name/value pairs; a value that is not JSON is taken as a string, so
/// `[("column", "n"), ("limit", "10")]` is `{"column": "n", "limit": 10}`.
impl<const N: usize> From<[(&str, &str); N]> for Params {
    fn from(pairs: [(&str, &str); N]) -> Self {
        Self(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }
}
