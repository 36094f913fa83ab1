//! A guide as a test: the runnable blocks of a Markdown page, run in
//! order against a real serve, with the output the page shows checked.
//! The conventions (which fences run, how output is matched) are the ones
//! CONTRIBUTING.md describes under "Guides are tested".

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use regex::Regex;

use crate::support::{Env, SWITCHYARD};

/// How long one command of a guide may take (a rollout followed to its
/// end takes tens of seconds on a loaded machine).
const COMMAND_LIMIT: Duration = Duration::from_secs(240);
/// How long a `console retry` block waits for its output to show.
const RETRY_LIMIT: Duration = Duration::from_secs(30);

/// One runnable piece of a guide, with the line of the page it starts on.
#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    /// ```sh: a script run with `bash -e`; only its exit status counts.
    Script { line: usize, text: String },
    /// ```console: commands after `$ `, each with the output shown under it.
    Console {
        line: usize,
        retry: bool,
        commands: Vec<Command>,
    },
    /// ```LANG file=NAME: the block's text written to NAME.
    File {
        line: usize,
        name: String,
        text: String,
    },
}

/// A `$ ` line of a console block and the output shown under it.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub line: usize,
    pub text: String,
    pub expected: Vec<String>,
}

/// The runnable blocks of a Markdown page, in order.
pub fn blocks(markdown: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut lines = markdown.lines().enumerate();
    while let Some((index, line)) = lines.next() {
        let Some(info) = line.strip_prefix("```") else {
            continue;
        };
        let start = index + 1;
        let mut body = Vec::new();
        for (_, inner) in lines.by_ref() {
            if inner.starts_with("```") {
                break;
            }
            body.push(inner);
        }
        let words: Vec<&str> = info.split_whitespace().collect();
        if let Some(name) = words.iter().find_map(|w| w.strip_prefix("file=")) {
            blocks.push(Block::File {
                line: start,
                name: name.to_owned(),
                text: body.join("\n") + "\n",
            });
            continue;
        }
        if words.contains(&"norun") {
            continue;
        }
        match words.first() {
            Some(&"sh") => blocks.push(Block::Script {
                line: start,
                text: body.join("\n") + "\n",
            }),
            Some(&"console") => blocks.push(Block::Console {
                line: start,
                retry: words.contains(&"retry"),
                commands: console_commands(start, &body),
            }),
            _ => {}
        }
    }
    blocks
}

fn console_commands(start: usize, body: &[&str]) -> Vec<Command> {
    let mut commands: Vec<Command> = Vec::new();
    for (offset, line) in body.iter().enumerate() {
        if let Some(text) = line.strip_prefix("$ ") {
            commands.push(Command {
                line: start + offset + 1,
                text: text.to_owned(),
                expected: Vec::new(),
            });
        } else if let Some(command) = commands.last_mut() {
            command.expected.push((*line).to_owned());
        } else {
            panic!(
                "line {}: a console block must begin with a `$ ` command, not {line:?}",
                start + offset + 1
            );
        }
    }
    commands
}

/// Whether `output` shows every line of `expected` in order (see the
/// module's conventions); on a mismatch, the first shown line not found.
pub fn shows(output: &str, expected: &[String]) -> Result<(), String> {
    let actual: Vec<&str> = output.lines().map(str::trim).collect();
    let mut from = 0;
    for shown in expected {
        let shown = shown.trim();
        if shown.is_empty() || shown == "..." {
            continue;
        }
        let pattern = line_pattern(shown);
        match actual[from..]
            .iter()
            .position(|line| pattern.is_match(line))
        {
            Some(found) => from += found + 1,
            None => return Err(shown.to_owned()),
        }
    }
    Ok(())
}

/// A shown line as a pattern: `...` matches any text, a run of spaces any
/// run of spaces, everything else itself.
fn line_pattern(shown: &str) -> Regex {
    let parts: Vec<String> = shown
        .split("...")
        .map(|part| {
            part.split_whitespace()
                .map(regex::escape)
                .collect::<Vec<_>>()
                .join(r"\s+")
        })
        .collect();
    let mut pattern = String::from("^");
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            pattern.push_str(".*");
        }
        if !part.is_empty() {
            // A part that began or ended with spaces next to `...` keeps
            // them optional: `... cli` and `...cli` read the same.
            pattern.push_str(r"\s*");
            pattern.push_str(part);
            pattern.push_str(r"\s*");
        }
    }
    pattern.push('$');
    Regex::new(&pattern).expect("a shown line makes a valid pattern")
}

/// A guide run against `env`'s serve, in `env`'s folder.
pub struct GuideRun<'a> {
    env: &'a Env,
    name: String,
    /// Process groups of the shells this run started (each command or
    /// script is the leader of its own): killed when the run ends, so a
    /// guide's background job never outlives it.
    groups: Vec<i32>,
    transcript: String,
}

impl<'a> GuideRun<'a> {
    pub fn new(env: &'a Env, name: &str) -> Self {
        GuideRun {
            env,
            name: name.to_owned(),
            groups: Vec::new(),
            transcript: String::new(),
        }
    }

    /// Runs every block of `markdown` in order; the error says which line
    /// of the guide failed, how, and what ran before it.
    pub async fn run(&mut self, markdown: &str) -> Result<(), String> {
        for block in blocks(markdown) {
            self.block(&block).await.map_err(|e| {
                format!(
                    "guide {}: {e}\n--- what ran before:\n{}",
                    self.name, self.transcript
                )
            })?;
        }
        Ok(())
    }

    async fn block(&mut self, block: &Block) -> Result<(), String> {
        match block {
            Block::File { line, name, text } => {
                std::fs::write(self.env.dir.path().join(name), text)
                    .map_err(|e| format!("line {line}: cannot write {name}: {e}"))
            }
            Block::Script { line, text } => {
                let (ok, output) = self.shell(&["-e", "-c"], text).await?;
                self.transcript
                    .push_str(&format!("(line {line}) sh:\n{text}{output}\n"));
                if ok {
                    Ok(())
                } else {
                    Err(format!(
                        "line {line}: the sh block failed:\n{text}--- its output:\n{output}"
                    ))
                }
            }
            Block::Console {
                retry, commands, ..
            } => {
                for command in commands {
                    self.command(command, *retry).await?;
                }
                Ok(())
            }
        }
    }

    async fn command(&mut self, command: &Command, retry: bool) -> Result<(), String> {
        let expect_failure = command
            .expected
            .iter()
            .any(|l| l.trim_start().starts_with("error:"));
        let expected: Vec<String> = command.expected.iter().map(|l| self.addresses(l)).collect();
        let deadline = Instant::now() + RETRY_LIMIT;
        loop {
            let (ok, output) = self.shell(&["-c"], &command.text).await?;
            let status = match (ok, expect_failure) {
                (true, false) | (false, true) => Ok(()),
                (false, false) => Err("it failed".to_owned()),
                (true, true) => Err("it succeeded, and the guide shows an error".to_owned()),
            };
            let verdict = status.and_then(|()| {
                shows(&output, &expected)
                    .map_err(|missing| format!("its output lacks the line {missing:?}"))
            });
            match verdict {
                Ok(()) => {
                    self.transcript.push_str(&format!(
                        "(line {}) $ {}\n{output}",
                        command.line, command.text
                    ));
                    return Ok(());
                }
                Err(_) if retry && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(why) => {
                    return Err(format!(
                        "line {}: `{}`: {why}\n--- the guide shows:\n{}\n--- it printed:\n{output}",
                        command.line,
                        command.text,
                        command.expected.join("\n")
                    ));
                }
            }
        }
    }

    /// The guide's addresses replaced by those of the serve under test.
    fn addresses(&self, text: &str) -> String {
        let serve = self.env.serve();
        let text = match &serve.tls_addr {
            Some(tls) => text
                .replace("localhost:8443", tls)
                .replace("127.0.0.1:8443", tls),
            None => text.to_owned(),
        };
        text.replace("localhost:8080", &serve.proxy_addr)
            .replace("127.0.0.1:8080", &serve.proxy_addr)
            .replace("localhost:8081", &serve.admin_addr)
            .replace("127.0.0.1:8081", &serve.admin_addr)
    }

    /// Runs `bash ARGS TEXT` in the guide's folder; stdout and stderr go
    /// to one file (so that a background job holding them open does not
    /// keep the command from ending), read back when bash exits.
    async fn shell(&mut self, args: &[&str], text: &str) -> Result<(bool, String), String> {
        let script = self.addresses(text);
        let out_path = self.env.dir.path().join(".guide-output");
        let out = std::fs::File::create(&out_path).map_err(|e| format!("output file: {e}"))?;
        let err = out.try_clone().map_err(|e| format!("output file: {e}"))?;
        let mut child = tokio::process::Command::new("bash")
            .args(args)
            .arg(&script)
            .current_dir(self.env.dir.path())
            .env("PATH", path_with_binaries())
            .env("SWITCHYARD_ADMIN", self.env.admin())
            .env_remove("SWITCHYARD_TOKEN")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start bash: {e}"))?;
        if let Some(pid) = child.id() {
            self.groups.push(pid as i32);
        }
        let status = tokio::time::timeout(COMMAND_LIMIT, child.wait())
            .await
            .map_err(|_| format!("`{script}` did not end within {COMMAND_LIMIT:?}"))?
            .map_err(|e| format!("waiting for bash: {e}"))?;
        let output = std::fs::read_to_string(&out_path).unwrap_or_default();
        Ok((status.success(), output))
    }
}

impl Drop for GuideRun<'_> {
    fn drop(&mut self) {
        for group in &self.groups {
            let _ = killpg(Pid::from_raw(*group), Signal::SIGKILL);
        }
    }
}

/// `PATH` with the folder of this build's `switchyard` and `hello-server`
/// first, as a reader who built them has it.
pub fn path_with_binaries() -> String {
    let bin = Path::new(SWITCHYARD)
        .parent()
        .expect("the binary has a folder");
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}
