//! `statten configs`: the shipped recipes.

use std::path::PathBuf;

use clap::Subcommand;
use statten::recipes;

#[derive(Subcommand)]
pub enum ConfigsCommand {
    /// Print a recipe's TOML.
    Show {
        /// The recipe's name (e.g. cifar10-2-512).
        name: String,
    },
}

/// Write `line` to stdout; false when the pipe is closed (`statten configs | head`).
fn out_line(line: &str) -> bool {
    use std::io::Write;
    let mut o = std::io::stdout();
    o.write_all(line.as_bytes()).is_ok() && o.write_all(b"\n").is_ok()
}

pub fn run(dir: Option<PathBuf>, command: Option<ConfigsCommand>) -> Result<(), String> {
    if let Some(ConfigsCommand::Show { name }) = command {
        let src = recipes::resolve(std::path::Path::new(&name))
            .map_err(|e| format!("configs show {e}"))?;
        print!("{}", src.text()?);
        return Ok(());
    }
    let Some(dir) = dir else {
        for (name, text) in recipes::RECIPES {
            if !out_line(&format!("{name:<36} {}", recipes::describe(text))) {
                break;
            }
        }
        return Ok(());
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(|e| format!("{}: {e}", f.display()))?;
        if !out_line(&format!("{:<44} {}", f.display(), recipes::describe(&text))) {
            break;
        }
    }
    Ok(())
}
