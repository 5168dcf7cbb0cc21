//! Configuration layering shared by the panel and the node: built-in defaults, then a TOML
//! file, then environment variables with a prefix (`__` separates nested keys).

use std::path::Path;

use anyhow::Context;
use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use serde::{Serialize, de::DeserializeOwned};

/// `defaults`, overridden by `file` (which must exist when given), overridden by every
/// environment variable starting with `env_prefix`.
pub fn layered<T: Serialize + DeserializeOwned>(
    defaults: T,
    file: Option<&Path>,
    env_prefix: &str,
) -> anyhow::Result<T> {
    let mut figment = Figment::from(Serialized::defaults(defaults));
    if let Some(path) = file {
        anyhow::ensure!(
            path.exists(),
            "configuration file {} does not exist",
            path.display()
        );
        figment = figment.merge(Toml::file(path));
    }
    figment
        .merge(Env::prefixed(env_prefix).split("__"))
        .extract()
        .with_context(|| {
            format!("reading the configuration ({env_prefix}* variables and the file)")
        })
}
