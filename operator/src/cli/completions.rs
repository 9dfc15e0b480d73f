//! `sluice completions <shell>`: the shell completion script, to be sourced or installed.

use std::io::Write as _;

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use super::Cli;

/// Arguments of `sluice completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    pub shell: Shell,
}

/// The completion script of `shell`.
pub fn script(shell: Shell) -> Vec<u8> {
    let mut command = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut command, "sluice", &mut out);
    out
}

/// Writes the completion script of `shell` to stdout (a closed pipe is not an error).
pub fn run(args: &CompletionsArgs) -> anyhow::Result<()> {
    match std::io::stdout().write_all(&script(args.shell)) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_complete_the_subcommands() {
        let bash = String::from_utf8(script(Shell::Bash)).unwrap();
        for sub in ["status", "lag", "dlq", "topics", "completions"] {
            assert!(bash.contains(sub), "bash script lacks {sub}");
        }
        let zsh = String::from_utf8(script(Shell::Zsh)).unwrap();
        assert!(zsh.contains("#compdef sluice"), "{zsh}");
    }
}
