//! `switchyard reference --out DIR` (hidden): the command-line reference,
//! generated from the same clap definitions the CLI parses with, as one
//! Markdown page (`DIR/cli.md`) and a man page per command
//! (`DIR/man/switchyard-VERB.1`). `tests/reference.rs` fails when the
//! committed pages differ from what this writes.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, CommandFactory};

#[derive(Debug, Args)]
pub struct ReferenceArgs {
    /// Folder to write `cli.md` and `man/*.1` into (the repository's `docs`).
    #[arg(long, default_value = "docs")]
    pub out: PathBuf,
}

/// Width the help text is laid out at, whatever the terminal.
const WIDTH: usize = 100;

pub fn run(args: ReferenceArgs) -> anyhow::Result<()> {
    let man = args.out.join("man");
    std::fs::create_dir_all(&man).with_context(|| format!("cannot create {}", man.display()))?;
    // Pages of commands that no longer exist must not linger.
    for entry in
        std::fs::read_dir(&man).with_context(|| format!("cannot read {}", man.display()))?
    {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "1") {
            std::fs::remove_file(&path)
                .with_context(|| format!("cannot remove {}", path.display()))?;
        }
    }
    let markdown = args.out.join("cli.md");
    write(&markdown, markdown_page().as_bytes())?;
    let pages = man_pages()?;
    for (name, text) in &pages {
        write(&man.join(name), text)?;
    }
    println!(
        "wrote {} and {} man pages in {}",
        markdown.display(),
        pages.len(),
        man.display()
    );
    Ok(())
}

fn write(path: &Path, text: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// The CLI as documented: environment variables named but their values
/// in this process never shown, help laid out at a fixed width, the
/// hidden commands (this one) left out.
fn documented() -> clap::Command {
    fn settle(command: clap::Command) -> clap::Command {
        command
            .mut_args(|arg| arg.hide_env_values(true))
            .mut_subcommands(settle)
            .term_width(WIDTH)
            .disable_help_subcommand(true)
    }
    let mut command = settle(super::Cli::command());
    command.build();
    command
}

/// Every visible command, depth first, with its full name
/// (`switchyard rollout status`).
fn commands(command: &clap::Command, prefix: &str, out: &mut Vec<(String, clap::Command)>) {
    let name = if prefix.is_empty() {
        command.get_name().to_owned()
    } else {
        format!("{prefix} {}", command.get_name())
    };
    out.push((name.clone(), command.clone()));
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        commands(sub, &name, out);
    }
}

/// The Markdown page: a table of every command, then each command's full
/// help as the CLI prints it.
pub fn markdown_page() -> String {
    let mut all = Vec::new();
    commands(&documented(), "", &mut all);
    let mut page = String::from(
        "# Command-line reference\n\n\
         Generated from the CLI's own definitions by `switchyard reference --out docs` \
         (`tests/reference.rs` fails when this page differs from what the code \
         generates); man pages of the same text are in [man/](man/). \
         The guides show the commands at work: start from the [README](../README.md); \
         [commands at a glance](commands.md) has one line per verb.\n\n\
         | command | what it does |\n|---|---|\n",
    );
    for (name, command) in &all {
        let about = command
            .get_about()
            .map(|a| a.to_string())
            .unwrap_or_default();
        page.push_str(&format!(
            "| [`{name}`](#{}) | {} |\n",
            anchor(name),
            about.replace('|', "\\|")
        ));
    }
    for (name, command) in &all {
        let mut command = command.clone().bin_name(name.clone());
        let help = command.render_long_help().to_string();
        let help: Vec<&str> = help.lines().map(str::trim_end).collect();
        page.push_str(&format!(
            "\n## {name}\n\n```text\n{}\n```\n",
            help.join("\n").trim_end()
        ));
    }
    page
}

/// The anchor a Markdown heading `## switchyard rollout status` gets.
fn anchor(name: &str) -> String {
    name.replace(' ', "-")
}

/// One man page per command: `switchyard.1`, `switchyard-deploy.1`,
/// `switchyard-rollout-status.1`, …
pub fn man_pages() -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut all = Vec::new();
    commands(&documented(), "", &mut all);
    let mut pages = Vec::new();
    for (name, command) in all {
        let file_name = name.replace(' ', "-");
        let command = command
            .clone()
            .display_name(file_name.clone())
            .bin_name(name);
        let man = clap_mangen::Man::new(command)
            .source(format!("switchyard {}", env!("CARGO_PKG_VERSION")))
            .manual("Switchyard");
        let mut text = Vec::new();
        man.render(&mut text)
            .with_context(|| format!("cannot render the man page of {file_name}"))?;
        pages.push((format!("{file_name}.1"), text));
    }
    Ok(pages)
}
