//! Charts as SVG drawn on the server: clicks per day, counted and not
//! counted (flagged or blocked), as stacked bars. Only numbers, dates and
//! an escaped title go into the SVG, so pages embed it as it is.

use std::fmt::Write;

/// One day's bar.
pub struct Day {
    pub date: chrono::NaiveDate,
    pub counted: u64,
    /// Flagged or blocked.
    pub not_counted: u64,
}

const W: u32 = 720;
const H: u32 = 180;
const LEFT: u32 = 44;
const BOTTOM: u32 = 22;

/// Stacked bars of counted (blue) and not counted (red) clicks per day, with
/// a y axis and the first and last dates; an accessible title says the
/// totals.
pub fn daily(days: &[Day], title: &str) -> String {
    let max = nice(
        days.iter()
            .map(|d| d.counted + d.not_counted)
            .max()
            .unwrap_or(0),
    );
    let (counted, not_counted): (u64, u64) = days
        .iter()
        .fold((0, 0), |(c, f), d| (c + d.counted, f + d.not_counted));
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg class=\"chart\" viewBox=\"0 0 {W} {H}\" role=\"img\" xmlns=\"http://www.w3.org/2000/svg\">\
         <title>{}: {counted} counted, {not_counted} not counted</title>",
        escape(title)
    );
    let plot_w = W - LEFT - 4;
    let plot_h = H - BOTTOM - 8;
    // Axis and three gridlines.
    for i in 0..=2u64 {
        let v = max * i / 2;
        let y = 8 + plot_h - (plot_h as u64 * i / 2) as u32;
        let _ = write!(
            s,
            "<line x1=\"{LEFT}\" x2=\"{W}\" y1=\"{y}\" y2=\"{y}\" stroke=\"#e4e7ec\"/>\
             <text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"end\" fill=\"#667085\">{v}</text>",
            LEFT - 6,
            y + 4
        );
    }
    let n = days.len().max(1) as u32;
    let slot = plot_w / n;
    let bar = (slot * 4 / 5).max(1);
    for (i, d) in days.iter().enumerate() {
        let x = LEFT + 2 + slot * i as u32;
        let h_c = (plot_h as u64 * d.counted / max) as u32;
        let h_f = (plot_h as u64 * d.not_counted / max) as u32;
        let base = 8 + plot_h;
        let _ = write!(
            s,
            "<rect x=\"{x}\" y=\"{}\" width=\"{bar}\" height=\"{h_c}\" fill=\"#2f5bea\"><title>{}: {} counted</title></rect>\
             <rect x=\"{x}\" y=\"{}\" width=\"{bar}\" height=\"{h_f}\" fill=\"#c0362c\"><title>{}: {} not counted</title></rect>",
            base - h_c,
            d.date,
            d.counted,
            base - h_c - h_f,
            d.date,
            d.not_counted
        );
    }
    if let (Some(first), Some(last)) = (days.first(), days.last()) {
        let _ = write!(
            s,
            "<text x=\"{LEFT}\" y=\"{}\" font-size=\"11\" fill=\"#667085\">{}</text>\
             <text x=\"{W}\" y=\"{}\" font-size=\"11\" text-anchor=\"end\" fill=\"#667085\">{}</text>",
            H - 6,
            first.date,
            H - 6,
            last.date
        );
    }
    s.push_str("</svg>");
    s
}

/// The axis' top: the smallest of 2, 5 or 10 times a power of ten (at
/// least 2, so the middle gridline is a whole number) not below `n`.
fn nice(n: u64) -> u64 {
    let mut p = 1;
    loop {
        for m in [2, 5, 10] {
            if m * p >= n {
                return m * p;
            }
        }
        p *= 10;
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Every day from `from` to `to` (inclusive), with the counts `get` gives
/// (days without clicks are bars of zero, not gaps).
pub fn fill(
    from: chrono::NaiveDate,
    to: chrono::NaiveDate,
    get: impl Fn(chrono::NaiveDate) -> (u64, u64),
) -> Vec<Day> {
    from.iter_days()
        .take_while(|d| *d <= to)
        .map(|date| {
            let (counted, not_counted) = get(date);
            Day {
                date,
                counted,
                not_counted,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_busiest_day_and_the_title_totals() {
        let d = |s: &str| s.parse::<chrono::NaiveDate>().unwrap();
        let days = fill(d("2026-03-01"), d("2026-03-03"), |day| {
            if day == d("2026-03-02") {
                (8, 2)
            } else {
                (1, 0)
            }
        });
        assert_eq!(days.len(), 3);
        let svg = daily(&days, "Clicks <all>");
        assert!(svg.contains("<title>Clicks &lt;all&gt;: 10 counted, 2 not counted</title>"));
        // The axis runs to 10: the busiest day's two bars fill the plot.
        let plot_h = H - BOTTOM - 8;
        assert!(svg.contains(&format!("height=\"{}\"", plot_h * 8 / 10)));
        assert!(svg.contains(">10</text>") && svg.contains(">5</text>"));
        assert_eq!(
            (nice(0), nice(1), nice(3), nice(10), nice(11), nice(4500)),
            (2, 2, 5, 10, 20, 5000)
        );
        assert!(svg.contains("2026-03-01") && svg.contains("2026-03-03"));
    }
}
