//! What every scenario hands back: readable tables for the terminal and the report file, and the
//! figures as one JSON object; plus the small statistics helpers scenarios share.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// A scenario's result.
pub struct Report {
    /// The scenario's subcommand name, used in the report's file name.
    pub scenario: &'static str,
    pub title: String,
    /// How the run was set up (seed, sizes, limits), one line each.
    pub setup: Vec<String>,
    pub sections: Vec<Section>,
    /// The figures; printed as one line with `--json`.
    pub json: serde_json::Value,
}

/// One table with a heading and notes under it.
pub struct Section {
    pub heading: String,
    pub table: Table,
    pub notes: Vec<String>,
}

/// A table of strings, rendered as an aligned Markdown table.
pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table { header: header.iter().map(|h| (*h).to_owned()).collect(), rows: Vec::new() }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let cols = self.header.len();
        let mut width: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate().take(cols) {
                width[i] = width[i].max(c.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let mut s = String::from("|");
            for (i, w) in width.iter().enumerate() {
                let c = cells.get(i).map_or("", String::as_str);
                let _ = write!(s, " {c:>w$} |");
            }
            s.push('\n');
            s
        };
        let mut out = line(&self.header);
        out.push('|');
        for w in &width {
            // Right-aligned columns: the cell is `w + 2` wide, the colon marks the alignment.
            out.push_str(&"-".repeat(w + 1));
            out.push_str(":|");
        }
        out.push('\n');
        for r in &self.rows {
            out.push_str(&line(r));
        }
        out
    }
}

impl Report {
    /// The whole report as Markdown (what the terminal shows and the file holds).
    pub fn render(&self) -> String {
        let mut s = format!("# {}\n\n", self.title);
        for l in &self.setup {
            let _ = writeln!(s, "- {l}");
        }
        for sec in &self.sections {
            let _ = write!(s, "\n## {}\n\n{}", sec.heading, sec.table.render());
            if !sec.notes.is_empty() {
                s.push('\n');
                for n in &sec.notes {
                    let _ = writeln!(s, "{n}");
                }
            }
        }
        s
    }

    /// Writes the report to `dir/<scenario>-<UTC timestamp>.md` and returns the path.
    pub fn write(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let now = time::OffsetDateTime::now_utc();
        let stamp = format!(
            "{:04}{:02}{:02}-{:02}{:02}{:02}",
            now.year(),
            u8::from(now.month()),
            now.day(),
            now.hour(),
            now.minute(),
            now.second()
        );
        let path = dir.join(format!("{}-{stamp}.md", self.scenario));
        let mut body = self.render();
        let _ = write!(body, "\n## JSON\n\n```json\n{}\n```\n", self.json);
        std::fs::write(&path, body)?;
        Ok(path)
    }
}

/// The `p`-th percentile (0–100) of `sorted` by nearest rank; 0 for no data.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Sorts a sample for [`percentile`].
pub fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

pub fn mean(v: &[f64]) -> f64 {
    if v.is_empty() { 0.0 } else { v.iter().sum::<f64>() / v.len() as f64 }
}

/// Rounds for JSON: figures carry no false precision.
pub fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_nearest_rank() {
        let v = sorted((1..=100).map(f64::from).collect());
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }

    #[test]
    fn table_aligns_columns() {
        let mut t = Table::new(&["a", "bbb"]);
        t.row(vec!["1000".into(), "2".into()]);
        assert_eq!(t.render(), "|    a | bbb |\n|-----:|----:|\n| 1000 |   2 |\n");
    }
}
