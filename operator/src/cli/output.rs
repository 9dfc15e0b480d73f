//! How read commands print: a table for people (the default) or the same report as JSON or
//! YAML for scripts (`-o json|yaml`).

use clap::{Args, ValueEnum};
use serde::Serialize;

/// Output format of a read command.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns.
    #[default]
    Table,
    /// The report as one JSON document.
    Json,
    /// The report as one YAML document.
    Yaml,
}

/// The `-o/--output` flag of the read commands.
#[derive(Debug, Clone, Copy, Default, Args)]
pub struct OutputArgs {
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t)]
    pub output: OutputFormat,
}

impl OutputArgs {
    /// Renders `report`: `table(report)` for a table, else the serialized report.
    pub fn render<T: Serialize>(
        &self,
        report: &T,
        table: impl FnOnce(&T) -> String,
    ) -> anyhow::Result<String> {
        Ok(match self.output {
            OutputFormat::Table => table(report),
            OutputFormat::Json => {
                let mut text = serde_json::to_string_pretty(report)?;
                text.push('\n');
                text
            }
            OutputFormat::Yaml => serde_yaml::to_string(report)?,
        })
    }

    /// Prints `report` (see [`OutputArgs::render`]) on stdout.
    pub fn print<T: Serialize>(
        &self,
        report: &T,
        table: impl FnOnce(&T) -> String,
    ) -> anyhow::Result<()> {
        print!("{}", self.render(report, table)?);
        Ok(())
    }
}

/// Builds a table: one header line, then one line per row, columns padded to their widest
/// cell (the last column is not padded).
#[derive(Debug, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(headers: &[&str]) -> Self {
        Self {
            rows: vec![headers.iter().map(|h| h.to_string()).collect()],
        }
    }

    /// Adds a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The aligned text, each line ending with a newline.
    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|s| s.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let last = row.len().saturating_sub(1);
            for (c, cell) in row.iter().enumerate() {
                if c == last {
                    out.push_str(cell);
                } else {
                    out.push_str(&format!("{cell:<w$}  ", w = widths[c]));
                }
            }
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Report {
        name: String,
        lag: u64,
    }

    #[test]
    fn one_report_three_formats() {
        let report = Report {
            name: "billing".into(),
            lag: 3,
        };
        let table = |r: &Report| {
            let mut t = Table::new(&["GROUP", "LAG"]);
            t.row(vec![r.name.clone(), r.lag.to_string()]);
            t.render()
        };
        let as_table = OutputArgs::default().render(&report, table).unwrap();
        assert_eq!(as_table, "GROUP    LAG\nbilling  3\n");
        let json = OutputArgs {
            output: OutputFormat::Json,
        }
        .render(&report, table)
        .unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed, serde_json::json!({"name": "billing", "lag": 3}));
        let yaml = OutputArgs {
            output: OutputFormat::Yaml,
        }
        .render(&report, table)
        .unwrap();
        let parsed: serde_json::Value = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(parsed, serde_json::json!({"name": "billing", "lag": 3}));
    }
}
