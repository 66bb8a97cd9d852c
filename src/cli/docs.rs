//! Shell completions and man pages, generated from the same clap definitions as the parser, so
//! they cannot drift from what tapnet accepts.

use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;

use super::Cli;
use crate::error::{Context, Error, Result};

/// The completion script for `shell`.
pub fn completion(shell: Shell) -> Result<String> {
    let mut cmd = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "tapnet", &mut script);
    String::from_utf8(script)
        .map_err(|_| Error::invalid(format!("the {shell} completion script is not UTF-8")))
}

/// The command tree as the pages describe it: global flags propagated to every subcommand, and
/// no `help` subcommand (each page documents `--help` already).
fn built_command() -> clap::Command {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    cmd
}

/// tapnet(1), in roff.
pub fn man_page() -> Result<Vec<u8>> {
    let mut page = Vec::new();
    clap_mangen::Man::new(built_command())
        .render(&mut page)
        .context(|| "render the man page".into())?;
    Ok(page)
}

/// Writes tapnet.1 and a page per subcommand (tapnet-network-create.1, ...) into `dir`, which
/// is created if needed; returns the paths written, tapnet.1 first.
pub fn write_man_pages(dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).context(|| format!("create man page dir {}", dir.display()))?;
    let mut written = Vec::new();
    write_pages(built_command(), dir, &mut written)?;
    Ok(written)
}

fn write_pages(cmd: clap::Command, dir: &Path, written: &mut Vec<PathBuf>) -> Result<()> {
    let man = clap_mangen::Man::new(cmd.clone());
    let path = dir.join(man.get_filename());
    man.generate_to(dir)
        .context(|| format!("write man page {}", path.display()))?;
    written.push(path);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub.clone(), dir, written)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn unique_dir(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!("tapnet-unit-{tag}-{}", std::process::id()))
    }

    #[test]
    fn bash_completion_parses_and_knows_every_subcommand() {
        let script = completion(Shell::Bash).expect("bash completion");
        let dir = unique_dir("bash-completion");
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("tapnet.bash");
        std::fs::write(&file, &script).expect("write script");
        let checked = Command::new("bash").arg("-n").arg(&file).output();
        let _ = std::fs::remove_dir_all(&dir);
        let checked = checked.expect("run bash -n");
        assert!(
            checked.status.success(),
            "bash -n: {}",
            String::from_utf8_lossy(&checked.stderr)
        );
        for word in ["network", "sandbox", "completion", "--state-dir", "--opt"] {
            assert!(script.contains(word), "{word} missing");
        }
    }

    /// zsh and fish are checked where they are installed (`zsh -n`, `fish --no-execute`);
    /// elsewhere only that the script names tapnet's commands.
    #[test]
    fn zsh_and_fish_completions_parse_where_the_shell_exists() {
        for (shell, program, flag) in [
            (Shell::Zsh, "zsh", "-n"),
            (Shell::Fish, "fish", "--no-execute"),
        ] {
            let script = completion(shell).expect("completion");
            assert!(script.contains("network") && script.contains("state-dir"));
            let dir = unique_dir(program);
            std::fs::create_dir_all(&dir).expect("temp dir");
            let file = dir.join("tapnet");
            std::fs::write(&file, &script).expect("write script");
            let checked = Command::new(program).arg(flag).arg(&file).output();
            let _ = std::fs::remove_dir_all(&dir);
            match checked {
                Ok(out) => assert!(
                    out.status.success(),
                    "{program} {flag}: {}",
                    String::from_utf8_lossy(&out.stderr)
                ),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    eprintln!("{program} is not installed: its completion is not parsed");
                }
                Err(e) => panic!("run {program}: {e}"),
            }
        }
    }

    #[test]
    fn man_page_documents_commands_and_global_options() {
        let page = String::from_utf8(man_page().expect("man page")).expect("UTF-8");
        assert!(page.starts_with(".ie"), "{}", &page[..page.len().min(200)]);
        assert!(page.contains(".TH tapnet 1"), "title");
        for word in [
            "network",
            "sandbox",
            "completion",
            "state\\-dir",
            "Exit status",
            "TAPNET_NAT_ALLOW",
        ] {
            assert!(page.contains(word), "{word} missing");
        }
    }

    #[test]
    fn man_pages_cover_every_subcommand() {
        let dir = unique_dir("man");
        let written = write_man_pages(&dir);
        let names: Vec<String> = std::fs::read_dir(&dir)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let create = std::fs::read_to_string(dir.join("tapnet-network-create.1"));
        let _ = std::fs::remove_dir_all(&dir);
        let written = written.expect("write pages");
        assert_eq!(written.len(), names.len());
        for page in [
            "tapnet.1",
            "tapnet-network-create.1",
            "tapnet-system-reset.1",
        ] {
            assert!(names.iter().any(|n| n == page), "{page} missing: {names:?}");
        }
        assert!(!names.iter().any(|n| n.contains("help")), "{names:?}");
        let create = create.expect("network create page");
        // Global options reach the subcommand pages, option keys too.
        assert!(create.contains("state\\-dir"), "{create}");
        assert!(create.contains("nat_udp_timeout"), "{create}");
    }
}
