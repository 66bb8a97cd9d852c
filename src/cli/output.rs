//! Printing results: aligned tables for people, one JSON document for scripts.

use std::io::Write;

use clap::ValueEnum;
use serde::Serialize;

use crate::error::{Error, Result};

/// Write command output to stdout (what `out!` and `outln!` expand to). A reader that went
/// away is `Error::StdoutClosed`, which ends the command quietly with status 0.
pub fn emit(args: std::fmt::Arguments<'_>) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_fmt(args)
        .and_then(|()| stdout.flush())
        .map_err(|e| stdout_error(e, "write to standard output"))
}

/// An error writing to stdout: `StdoutClosed` for EPIPE, the error with `what` otherwise.
pub fn stdout_error(e: std::io::Error, what: &str) -> Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Error::StdoutClosed
    } else {
        Error::Io {
            context: what.to_string(),
            source: e,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    #[default]
    Table,
    Json,
}

/// A cell as one line: control characters (a newline in a name a plugin or runtime sent) are
/// escaped, so that every row of a table stays one line.
fn cell(text: &str) -> std::borrow::Cow<'_, str> {
    if text.chars().any(char::is_control) {
        text.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect::<String>()
            .into()
    } else {
        text.into()
    }
}

/// Columns padded to their widest cell; the last column is not padded.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| cell(c).into_owned()).collect())
        .collect();
    let rows = &rows;
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        for (i, cell) in cells.iter().enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}   ", width = widths[i]));
            }
        }
        out.push('\n');
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

pub fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| "null".into()) + "\n"
}

pub fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| "-".to_string(), T::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_columns() {
        let t = table(
            &["NAME", "DRIVER"],
            &[
                vec!["backend".into(), "bridge".into()],
                vec!["b".into(), "host".into()],
            ],
        );
        assert_eq!(t, "NAME      DRIVER\nbackend   bridge\nb         host\n");
    }

    #[test]
    fn a_cell_with_a_newline_stays_on_its_row() {
        let t = table(&["PORT", "RX"], &[vec!["cni:x\ny/eth0".into(), "1".into()]]);
        assert_eq!(t, "PORT            RX\ncni:x\\ny/eth0   1\n");
        assert_eq!(t.lines().count(), 2);
    }
}
