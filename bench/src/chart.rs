//! A small SVG line-chart writer for the scenario results.
//!
//! Design: a [`Chart`] is data only — title, axis labels, series of (x, y) points, vertical
//! event markers — and [`Chart::to_svg`] is a pure function from it to an SVG document. Axes
//! start at zero and end at a "nice" round value above the largest point, with five ticks.
//! Series are drawn as polylines, dashed when marked as a reference (e.g. the ideal N × cap
//! line); events are labelled vertical lines (e.g. "gateway killed").

use std::fmt::Write as _;

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 420.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 170.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
const PALETTE: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// One line on the chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    /// Drawn dashed: a reference, not a measurement.
    pub dashed: bool,
    /// Index into the palette; series sharing a colour share a meaning.
    pub colour: usize,
    /// Shown in the legend (several series of one kind need one entry).
    pub in_legend: bool,
}

/// A labelled vertical line at `x`.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub x: f64,
    pub label: String,
}

/// A line chart.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    pub events: Vec<Event>,
}

/// The smallest of 1, 2, 2.5, 5 × 10^k that is ≥ `v` (and 1 for nothing to show).
pub fn nice_ceiling(v: f64) -> f64 {
    if v.is_nan() || v <= 0.0 || v.is_infinite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|c| *c >= v * (1.0 - 1e-12))
        .unwrap_or(10.0 * magnitude)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn label(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

impl Chart {
    /// The largest x and y over every series and event.
    fn extent(&self) -> (f64, f64) {
        let points = self.series.iter().flat_map(|s| s.points.iter());
        let x = points.clone().map(|p| p.0).chain(self.events.iter().map(|e| e.x));
        let max_x = x.fold(0.0, f64::max);
        let max_y = points.map(|p| p.1).fold(0.0, f64::max);
        (nice_ceiling(max_x), nice_ceiling(max_y))
    }

    /// The chart as a standalone SVG document.
    pub fn to_svg(&self) -> String {
        let (max_x, max_y) = self.extent();
        let plot_w = WIDTH - LEFT - RIGHT;
        let plot_h = HEIGHT - TOP - BOTTOM;
        let px = |x: f64| LEFT + x / max_x * plot_w;
        let py = |y: f64| TOP + plot_h - y / max_y * plot_h;
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
            WIDTH / 2.0,
            escape(&self.title)
        );
        for i in 0..=5 {
            let (xv, yv) = (max_x * f64::from(i) / 5.0, max_y * f64::from(i) / 5.0);
            let _ = writeln!(
                s,
                r##"<line x1="{LEFT}" x2="{}" y1="{y}" y2="{y}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{}</text>"##,
                LEFT + plot_w,
                LEFT - 6.0,
                py(yv) + 4.0,
                label(yv),
                y = py(yv)
            );
            let _ = writeln!(
                s,
                r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
                px(xv),
                TOP + plot_h + 18.0,
                label(xv)
            );
        }
        let _ = writeln!(
            s,
            r##"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#333"/>"##
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            LEFT + plot_w / 2.0,
            HEIGHT - 12.0,
            escape(&self.x_label)
        );
        let _ = writeln!(
            s,
            r#"<text x="16" y="{}" text-anchor="middle" transform="rotate(-90 16 {})">{}</text>"#,
            TOP + plot_h / 2.0,
            TOP + plot_h / 2.0,
            escape(&self.y_label)
        );
        for event in &self.events {
            let x = px(event.x);
            let _ = writeln!(
                s,
                r##"<line x1="{x}" x2="{x}" y1="{TOP}" y2="{}" stroke="#555" stroke-dasharray="2 3"/><text x="{}" y="{}" font-size="11">{}</text>"##,
                TOP + plot_h,
                x + 3.0,
                TOP + 12.0,
                escape(&event.label)
            );
        }
        let mut legend_row = 0.0;
        for series in &self.series {
            let colour = PALETTE[series.colour % PALETTE.len()];
            let dash = if series.dashed {
                r#" stroke-dasharray="6 4""#
            } else {
                ""
            };
            let points: Vec<String> = series
                .points
                .iter()
                .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="1.8"{dash}/>"#,
                points.join(" ")
            );
            if series.points.len() <= 12 && !series.dashed {
                for &(x, y) in &series.points {
                    let _ = writeln!(
                        s,
                        r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{colour}"/>"#,
                        px(x),
                        py(y)
                    );
                }
            }
            if series.in_legend {
                let y = TOP + 10.0 + legend_row * 18.0;
                let x = LEFT + plot_w + 12.0;
                let _ = writeln!(
                    s,
                    r#"<line x1="{x}" x2="{}" y1="{y}" y2="{y}" stroke="{colour}" stroke-width="2"{dash}/><text x="{}" y="{}">{}</text>"#,
                    x + 24.0,
                    x + 30.0,
                    y + 4.0,
                    escape(&series.name)
                );
                legend_row += 1.0;
            }
        }
        s.push_str("</svg>\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_ceilings() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(7.0), 10.0);
        assert_eq!(nice_ceiling(4.0), 5.0);
        assert_eq!(nice_ceiling(1800.0), 2000.0);
        assert_eq!(nice_ceiling(2100.0), 2500.0);
        assert_eq!(nice_ceiling(f64::NAN), 1.0);
    }

    #[test]
    fn svg_holds_every_series_event_and_escaped_text() {
        let chart = Chart {
            title: "a < b & c".into(),
            x_label: "gateways".into(),
            y_label: "Mbit/s".into(),
            series: vec![
                Series {
                    name: "measured".into(),
                    points: vec![(1.0, 100.0), (2.0, 190.0)],
                    dashed: false,
                    colour: 0,
                    in_legend: true,
                },
                Series {
                    name: "ideal".into(),
                    points: vec![(1.0, 100.0), (2.0, 200.0)],
                    dashed: true,
                    colour: 1,
                    in_legend: true,
                },
            ],
            events: vec![Event {
                x: 1.5,
                label: "kill".into(),
            }],
        };
        let svg = chart.to_svg();
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(
            svg.matches("stroke-dasharray=\"6 4\"").count(),
            2,
            "ideal line and its legend"
        );
        assert!(svg.contains("a &lt; b &amp; c"));
        assert!(svg.contains(">kill<"));
        // x axis ends at 2, y at 200: the point (2, 200) is the plot's top-right corner.
        assert!(svg.contains(&format!("{:.1},{:.1}", WIDTH - RIGHT, TOP)));
    }
}
