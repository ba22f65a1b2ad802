//! Cells of the markdown tables the benchmarks print, and the hostel-against-plain-QEMU table
//! that `bench-boot` and `bench-images` share: every section shows a median with its range,
//! a ratio and a goal the same way, so the numbers of one read like those of another.

use crate::stats::{ratio, Summary};

/// `median (min–max)` with `digits` decimals, `—` when nothing was measured.
pub fn median_range(s: Option<Summary>, digits: usize) -> String {
    match s {
        Some(s) => format!("{:.d$} ({:.d$}–{:.d$})", s.median, s.min, s.max, d = digits),
        None => "—".into(),
    }
}

/// A ratio to two decimals, `—` when there is none.
pub fn ratio_cell(r: Option<f64>) -> String {
    r.map_or("—".into(), |r| format!("{r:.2}"))
}

/// One metric of a hostel-against-plain table, read off each side's samples.
pub struct Row<S> {
    pub label: &'static str,
    /// The metric of one sample; `None` where that sample does not have it.
    pub get: fn(&S) -> Option<f64>,
    /// Decimals of the medians and ranges.
    pub digits: usize,
    /// The most hostel / plain may be, if the issue sets a goal.
    pub goal: Option<f64>,
    /// Whether the plain-QEMU column has this metric at all.
    pub plain_has: bool,
}

fn summary<S>(samples: &[S], get: fn(&S) -> Option<f64>) -> Option<Summary> {
    let v: Vec<f64> = samples.iter().filter_map(get).collect();
    Summary::of(&v)
}

/// Whether hostel / plain is within the goal, judged on the ratio itself.
fn goal_cell(goal: Option<f64>, q: Option<f64>) -> String {
    match (goal, q) {
        (Some(g), Some(q)) if q <= g => format!("≤ {g:.2}: **met**"),
        (Some(g), Some(_)) => format!("≤ {g:.2}: **missed**"),
        (Some(g), None) => format!("≤ {g:.2}"),
        (None, _) => String::new(),
    }
}

/// The markdown table: one row per metric, hostel (its column headed `hostel_column`) and
/// plain QEMU side by side, with the ratio of the medians and the goal.
pub fn hostel_vs_plain<S>(
    hostel_column: &str,
    rows: &[Row<S>],
    hostel: &[S],
    plain: &[S],
) -> String {
    let mut out = format!(
        "| metric (median, min–max) | {hostel_column} | plain QEMU | hostel / plain | goal |\n\
         |---|---|---|---|---|\n"
    );
    for row in rows {
        let h = summary(hostel, row.get);
        let p = if row.plain_has {
            summary(plain, row.get)
        } else {
            None
        };
        let q = ratio(h, p);
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            row.label,
            median_range(h, row.digits),
            median_range(p, row.digits),
            ratio_cell(q),
            goal_cell(row.goal, q)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_show_dashes_for_nothing_measured() {
        assert_eq!(median_range(Summary::of(&[1.0, 3.0]), 1), "2.0 (1.0–3.0)");
        assert_eq!(median_range(None, 2), "—");
        assert_eq!(ratio_cell(Some(0.456)), "0.46");
        assert_eq!(ratio_cell(None), "—");
    }

    #[test]
    fn goal_is_met_at_or_under_the_ratio() {
        assert_eq!(goal_cell(Some(0.7), Some(0.7)), "≤ 0.70: **met**");
        assert_eq!(goal_cell(Some(0.7), Some(0.71)), "≤ 0.70: **missed**");
        assert_eq!(goal_cell(Some(0.7), None), "≤ 0.70");
        assert_eq!(goal_cell(None, Some(0.1)), "");
    }

    #[test]
    fn plain_column_left_empty_where_plain_has_no_such_metric() {
        let rows = [Row {
            label: "x",
            get: |s: &f64| Some(*s),
            digits: 1,
            goal: None,
            plain_has: false,
        }];
        let t = hostel_vs_plain("h", &rows, &[2.0], &[1.0]);
        assert!(
            t.starts_with("| metric (median, min–max) | h | plain QEMU |"),
            "{t}"
        );
        assert!(t.contains("| x | 2.0 (2.0–2.0) | — | — |  |"), "{t}");
    }
}
