//! `ringswarm completions SHELL`: the shell's completion script on stdout.

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;

/// Print a completion script for SHELL on stdout.
///
///   bash: ringswarm completions bash > /etc/bash_completion.d/ringswarm
///   zsh:  ringswarm completions zsh > "${fpath[1]}/_ringswarm"
///   fish: ringswarm completions fish > ~/.config/fish/completions/ringswarm.fish
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// bash, zsh, fish, elvish or powershell.
    #[arg(value_name = "SHELL")]
    pub shell: Shell,
}

pub fn run(args: Args) -> Result<()> {
    let mut command = crate::Cli::command();
    // Into memory first: the generators panic on a write error (a closed pipe).
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "ringswarm", &mut script);
    crate::output::write_stdout(&script).context("writing the completion script")
}
