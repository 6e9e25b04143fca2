//! The four layers: `raw -> processed -> curated -> archive`.
//!
//! Data moves one way, one step at a time ([`Layer::next`]); `crate::promotion` moves it. Raw is
//! never deleted through the lake by anyone.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One of the four storage layers.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Layer {
    /// Upstream bytes exactly as collected or uploaded; immutable and never deleted.
    #[default]
    Raw,
    /// Parsed and normalised data.
    Processed,
    /// Reviewed datasets ready for analysis.
    Curated,
    /// Long-term copies.
    Archive,
}

impl Layer {
    /// Every layer, in promotion order.
    pub const ALL: [Layer; 4] = [Layer::Raw, Layer::Processed, Layer::Curated, Layer::Archive];

    /// The lowercase name used in URLs, JSON and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Layer::Raw => "raw",
            Layer::Processed => "processed",
            Layer::Curated => "curated",
            Layer::Archive => "archive",
        }
    }

    /// The only layer this one may be promoted to.
    pub fn next(self) -> Option<Layer> {
        match self {
            Layer::Raw => Some(Layer::Processed),
            Layer::Processed => Some(Layer::Curated),
            Layer::Curated => Some(Layer::Archive),
            Layer::Archive => None,
        }
    }
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A layer name that is not one of the four.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown layer {0:?}; expected one of raw, processed, curated, archive")]
pub struct UnknownLayer(pub String);

impl FromStr for Layer {
    type Err = UnknownLayer;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "raw" => Ok(Layer::Raw),
            "processed" => Ok(Layer::Processed),
            "curated" => Ok(Layer::Curated),
            "archive" => Ok(Layer::Archive),
            _ => Err(UnknownLayer(s.to_owned())),
        }
    }
}
