//! The one printer for the markdown tables the commands print (`bench`, `eval`, `models`).
//!
//! Hand-written rather than `tabled` or `comfy-table`: the tables are GitHub markdown pasted as is
//! into `docs/` and read by scripts and tests, so the compact form (`| a | b |`, `|---|`) is the
//! format, not a style; both crates pad columns to a common width (their markdown presets
//! included) and bring dependencies for what is thirty lines here. Cells are formatted by the
//! caller, so each table keeps its own number formats.

/// A markdown table: a header row and data rows, each cell already formatted.
#[derive(Clone, Debug, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new<S: Into<String>>(header: impl IntoIterator<Item = S>) -> Self {
        Table {
            header: header.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    /// Appends a row; missing cells are left empty, extra cells dropped, so the table always has
    /// the header's width.
    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        let mut cells: Vec<String> = cells.into_iter().map(Into::into).collect();
        cells.resize(self.header.len(), String::new());
        self.rows.push(cells);
    }

    /// The table as markdown, one line per row, each line ending in a newline.
    pub fn render(&self) -> String {
        let line = |cells: &[String]| {
            let escaped: Vec<String> = cells.iter().map(|c| escape(c)).collect();
            format!("| {} |\n", escaped.join(" | "))
        };
        let mut s = line(&self.header);
        s.push_str(&format!("|{}\n", "---|".repeat(self.header.len())));
        for r in &self.rows {
            s.push_str(&line(r));
        }
        s
    }
}

/// A cell's text made safe inside a row: `|` would end the cell, a line break the row.
fn escape(cell: &str) -> String {
    cell.replace('|', "\\|").replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_rows() {
        let mut t = Table::new(["setting", "tokens/s"]);
        t.row(["ar".to_string(), format!("{:.1}", 12.345)]);
        t.row(["a|b\nc"]);
        assert_eq!(
            t.render(),
            "| setting | tokens/s |\n|---|---|\n| ar | 12.3 |\n| a\\|b c |  |\n"
        );
    }
}
