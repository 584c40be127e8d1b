//! `statten plot`: the learning curves of runs in one PNG.

use std::path::PathBuf;

// `statten plot`'s arguments (its help text is the doc comment of `Command::Plot`).
#[derive(clap::Args)]
pub struct PlotArgs {
    /// Run directories (each with a summary.csv).
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// The PNG to write.
    #[arg(long, default_value = "curves.png")]
    pub out: PathBuf,
    /// The plot's title (default: the run names).
    #[arg(long)]
    pub title: Option<String>,
}

/// Draws the runs' curves into `--out`.
pub fn run(a: PlotArgs) -> Result<(), String> {
    statten_train::plot::plot_runs(&a.runs, &a.out, a.title.as_deref())
        .map_err(|e| e.to_string())?;
    println!("wrote {}", a.out.display());
    Ok(())
}
