//! `ringswarm man`: manual pages from the same definitions as `--help`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::CommandFactory;

/// Print the ringswarm(1) manual page on stdout, or write one page per command into DIR.
///
///   ringswarm man | man -l -
///   ringswarm man --dir /usr/local/share/man/man1
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Write ringswarm.1 and ringswarm-COMMAND.1 for each command into DIR (created).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    let command = crate::Cli::command();
    match args.dir {
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(command).render(&mut page)?;
            crate::output::write_stdout(&page).context("writing the manual page")
        }
        Some(dir) => write_pages(command, &dir),
    }
}

/// The top-level page and one per subcommand (named `ringswarm-get.1`, ...).
fn write_pages(command: clap::Command, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating `{}`", dir.display()))?;
    clap_mangen::generate_to(command, dir)
        .with_context(|| format!("writing manual pages into `{}`", dir.display()))
}
