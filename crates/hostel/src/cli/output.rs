//! Rendering answers: aligned tables for people, the API's own JSON for scripts.
//!
//! JSON output is exactly the API's response body (pretty-printed), so scripts can rely on
//! the documented types in `hostel-api` rather than on anything the CLI invents.

use clap::ValueEnum;
use serde::Serialize;
use std::io::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns.
    Table,
    /// The API's JSON.
    Json,
}

/// Prints `value` as pretty JSON on stdout.
pub fn json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

/// A table of left-aligned columns separated by two spaces, headers in capitals.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Table {
            header: header.iter().map(|h| h.to_uppercase()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, one line per row, no trailing spaces.
    pub fn render(&self) -> String {
        let cols = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(cols) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut text = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate().take(cols) {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(&format!("{cell:<width$}", width = widths[i]));
            }
            text.push_str(line.trim_end());
            text.push('\n');
        }
        text
    }

    pub fn print(&self) {
        print!("{}", self.render());
    }
}

/// `KEY  value` lines for one object (`vm show`, `host show`).
pub fn print_fields<K: AsRef<str>>(fields: &[(K, String)]) {
    let width = fields
        .iter()
        .map(|(k, _)| k.as_ref().len())
        .max()
        .unwrap_or(0);
    for (k, v) in fields {
        println!("{:<width$}  {v}", k.as_ref());
    }
}

/// An optional value, or `-`.
pub fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

/// MiB the way people read them: `512M`, `2G`, `1.5G`.
pub fn mib(n: u64) -> String {
    match (n / 1024, n % 1024) {
        (0, _) => format!("{n}M"),
        (g, 0) => format!("{g}G"),
        _ => format!("{:.1}G", n as f64 / 1024.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_lines_have_no_trailing_space() {
        let mut t = Table::new(&["name", "state"]);
        t.row(vec!["web-1".into(), "running".into()]);
        t.row(vec!["a".into(), "-".into()]);
        assert_eq!(t.render(), "NAME   STATE\nweb-1  running\na      -\n");
    }

    #[test]
    fn sizes_read_naturally() {
        assert_eq!(mib(128), "128M");
        assert_eq!(mib(2048), "2G");
        assert_eq!(mib(1536), "1.5G");
    }
}
