//! The shipped recipes (`configs/*.toml`), compiled into the binary.
//!
//! `--config NAME` resolves a file path first (a path wins when both exist), then a recipe name
//! (`cifar10-2-512`, also written `cifar10-2-512.toml` or `configs/cifar10-2-512.toml`).

use std::path::{Path, PathBuf};

use statten_train::config::RunConfig;

include!(concat!(env!("OUT_DIR"), "/recipes.rs"));

/// The text of the recipe `name`.
pub fn get(name: &str) -> Option<&'static str> {
    RECIPES.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// The recipe's one-line description (its first comment line).
pub fn describe(text: &str) -> &str {
    text.lines()
        .next()
        .unwrap_or("")
        .trim_start_matches('#')
        .trim()
}

/// Where a `--config` value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// A file on disk.
    File(PathBuf),
    /// A compiled-in recipe, by name.
    Recipe(&'static str),
}

impl ConfigSource {
    /// The name runs of this config are filed under (`runs/<name>`).
    pub fn stem(&self) -> String {
        match self {
            ConfigSource::File(p) => p
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "run".into()),
            ConfigSource::Recipe(n) => n.to_string(),
        }
    }

    /// The config's text.
    pub fn text(&self) -> Result<String, String> {
        match self {
            ConfigSource::File(p) => {
                std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))
            }
            ConfigSource::Recipe(n) => Ok(get(n).unwrap_or_default().to_string()),
        }
    }

    /// The parsed config with `--set` overrides, errors prefixed with the file or recipe.
    pub fn load(&self, sets: &[String]) -> Result<RunConfig, String> {
        RunConfig::parse(&self.text()?, sets).map_err(|e| format!("{self}: {e}"))
    }
}

impl std::fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigSource::File(p) => write!(f, "{}", p.display()),
            ConfigSource::Recipe(n) => write!(f, "recipe {n}"),
        }
    }
}

/// Resolve a `--config` value: an existing file, else a recipe name; otherwise an error that
/// names the closest recipe when one is close.
pub fn resolve(arg: &Path) -> Result<ConfigSource, String> {
    if arg.is_file() {
        return Ok(ConfigSource::File(arg.to_path_buf()));
    }
    let s = arg.to_string_lossy();
    let name = s.strip_prefix("configs/").unwrap_or(&s);
    let name = name.strip_suffix(".toml").unwrap_or(name);
    if let Some((n, _)) = RECIPES.iter().find(|(n, _)| *n == name) {
        return Ok(ConfigSource::Recipe(n));
    }
    let hint = statten_data::config::closest(name, RECIPES.iter().map(|(n, _)| *n))
        .map(|c| format!(" (did you mean `{c}`?)"))
        .unwrap_or_default();
    Err(format!(
        "`{s}`: no such file and no recipe of that name{hint}; `statten configs` lists \
         the recipes"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_recipe_is_compiled_in_and_parses() {
        let on_disk = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/configs"))
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .count();
        assert_eq!(RECIPES.len(), on_disk);
        assert!(on_disk > 20);
        for (name, text) in RECIPES {
            RunConfig::parse(text, &[]).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!describe(text).is_empty(), "{name} has no description line");
        }
    }

    #[test]
    fn names_resolve_and_a_path_wins() {
        let r = resolve(Path::new("cifar10-2-512")).unwrap();
        assert_eq!(r, ConfigSource::Recipe("cifar10-2-512"));
        assert_eq!(r.stem(), "cifar10-2-512");
        for alias in ["cifar10-2-512.toml", "configs/cifar10-2-512.toml"] {
            // Relative to the crate root a path exists; elsewhere the name resolves.
            let r = resolve(Path::new(alias)).unwrap();
            assert_eq!(r.stem(), "cifar10-2-512");
        }
        let dir = std::env::temp_dir().join(format!("statten-recipes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("quickstart");
        std::fs::write(&f, "[model]\n[data]\ndataset = \"cifar10\"\n").unwrap();
        assert_eq!(resolve(&f).unwrap(), ConfigSource::File(f.clone()));
        let e = resolve(Path::new("cifar10-2-521")).unwrap_err();
        assert!(e.contains("did you mean `cifar10-2-512`"), "{e}");
        let e = resolve(Path::new("zzzzzzzzzzzzzzzzzzzzzzzz")).unwrap_err();
        assert!(!e.contains("did you mean"), "{e}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
