//! Pictures of a run (`--plot FILE.svg` or `FILE.png`), drawn with plotters.
//!
//! A single run: throughput over time (replies/s by type, requests sent, loss on the right
//! axis, the warm-up shaded), then latency percentiles over time on a log scale. A capacity
//! search: the capacity curve (answered against offered rate), latency against offered rate
//! with the p99 limit, and the whole search as a time line.
//!
//! SVG leaves text to the viewer's sans-serif font; PNG is rasterised by plotters itself with
//! the embedded DejaVu Sans (so no system font library is needed). Both lay text out with
//! DejaVu's metrics.

use std::path::Path;
use std::sync::Once;

use plotters::chart::DualCoordChartContext;
use plotters::coord::Shift;
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;

use crate::capacity::SearchReport;
use crate::report::Report;

const FONT: &str = "sans-serif";
const WIDTH: u32 = 1100;

/// The image formats `--plot` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Scalable vector graphics.
    Svg,
    /// Portable network graphics.
    Png,
}

impl Format {
    /// The format a file name asks for, by its extension.
    pub fn of(path: &Path) -> anyhow::Result<Self> {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("svg") => Ok(Self::Svg),
            Some("png") => Ok(Self::Png),
            _ => anyhow::bail!(
                "--plot {}: the file name must end in .svg or .png",
                path.display()
            ),
        }
    }
}

fn register_font() {
    static FONT_ONCE: Once = Once::new();
    FONT_ONCE.call_once(|| {
        // The embedded font is valid TrueType; registration cannot fail on it.
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
    });
}

/// A line of a panel.
struct Line {
    label: String,
    color: RGBColor,
    points: Vec<(f64, f64)>,
    width: u32,
    dashed: bool,
    markers: bool,
}

impl Line {
    fn new(label: impl Into<String>, color: RGBColor, points: Vec<(f64, f64)>) -> Self {
        Self {
            label: label.into(),
            color,
            points,
            width: 2,
            dashed: false,
            markers: false,
        }
    }

    fn dashed(mut self) -> Self {
        self.dashed = true;
        self.width = 1;
        self
    }

    fn with_markers(mut self) -> Self {
        self.markers = true;
        self
    }
}

/// The y axis of a panel.
enum YAxis {
    /// 0 to the largest value.
    Linear,
    /// Log scale around the values (for latency).
    Log,
}

/// One chart.
struct Panel {
    title: String,
    x_desc: &'static str,
    y_desc: &'static str,
    x_max: f64,
    y_axis: YAxis,
    lines: Vec<Line>,
    /// Lines against a linear right-hand axis (e.g. loss %), with its label.
    secondary: Option<(&'static str, Vec<Line>)>,
    /// A shaded x interval with its label (the warm-up).
    shade: Option<(f64, f64, String)>,
    /// Vertical markers: x, label, colour.
    vlines: Vec<(f64, String, RGBColor)>,
    /// Horizontal markers: y, label, colour.
    hlines: Vec<(f64, String, RGBColor)>,
    /// Format y values as thousands ("40k").
    y_thousands: bool,
    /// Format x values as thousands.
    x_thousands: bool,
}

impl Panel {
    fn new(title: String, x_desc: &'static str, y_desc: &'static str, x_max: f64) -> Self {
        Self {
            title,
            x_desc,
            y_desc,
            x_max,
            y_axis: YAxis::Linear,
            lines: Vec::new(),
            secondary: None,
            shade: None,
            vlines: Vec::new(),
            hlines: Vec::new(),
            y_thousands: false,
            x_thousands: false,
        }
    }

    fn values(&self) -> impl Iterator<Item = f64> + '_ {
        self.lines
            .iter()
            .flat_map(|l| l.points.iter().map(|p| p.1))
            .chain(self.hlines.iter().map(|h| h.0))
            .filter(|v| v.is_finite())
    }
}

fn thousands(v: f64) -> String {
    let short = |x: f64, unit: &str| {
        let text = if x.abs() >= 10.0 {
            format!("{x:.0}")
        } else {
            format!("{x:.1}")
        };
        format!("{}{unit}", text.trim_end_matches(".0"))
    };
    if v.abs() >= 1e6 {
        short(v / 1e6, "M")
    } else if v.abs() >= 1e3 {
        short(v / 1e3, "k")
    } else {
        format!("{v:.0}")
    }
}

fn latency_label(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{:.0} s", ms / 1000.0)
    } else if ms >= 1.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{:.0} µs", ms * 1000.0)
    }
}

type DrawResult = Result<(), String>;

fn draw_panel<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, panel: &Panel) -> DrawResult {
    let y_max = panel.values().fold(0.0f64, f64::max);
    match panel.y_axis {
        YAxis::Linear => draw_panel_in(area, panel, 0.0..(y_max * 1.1).max(1.0)),
        YAxis::Log => {
            let y_min = panel
                .values()
                .filter(|v| *v > 0.0)
                .fold(f64::INFINITY, f64::min);
            let y_min = if y_min.is_finite() { y_min / 2.0 } else { 0.01 };
            draw_panel_in(
                area,
                panel,
                (y_min..(y_max * 2.0).max(y_min * 10.0)).log_scale(),
            )
        }
    }
}

fn draw_panel_in<DB, Y>(area: &DrawingArea<DB, Shift>, panel: &Panel, y: Y) -> DrawResult
where
    DB: DrawingBackend,
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let x_range = 0.0..panel.x_max.max(1e-9);
    let secondary_max = panel
        .secondary
        .as_ref()
        .map(|(_, lines)| {
            lines
                .iter()
                .flat_map(|l| l.points.iter().map(|p| p.1))
                .fold(0.0f64, f64::max)
        })
        .unwrap_or(0.0);
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, (FONT, 17))
        .margin(8)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .right_y_label_area_size(if panel.secondary.is_some() { 56 } else { 8 })
        .build_cartesian_2d(x_range.clone(), y)
        .map_err(e)?
        .set_secondary_coord(x_range, 0.0..(secondary_max * 1.2).max(1.0));
    let is_log = matches!(panel.y_axis, YAxis::Log);
    let y_fmt = |v: &f64| {
        if is_log {
            latency_label(*v)
        } else if panel.y_thousands {
            thousands(*v)
        } else {
            format!("{v:.0}")
        }
    };
    let x_fmt = |v: &f64| {
        if panel.x_thousands {
            thousands(*v)
        } else if panel.x_max < 5.0 {
            format!("{v:.1}")
        } else {
            format!("{v:.0}")
        }
    };
    chart
        .configure_mesh()
        .x_desc(panel.x_desc)
        .y_desc(panel.y_desc)
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 14))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(e)?;
    if let Some((desc, _)) = &panel.secondary {
        chart
            .configure_secondary_axes()
            .y_desc(*desc)
            .label_style((FONT, 13))
            .axis_desc_style((FONT, 14))
            .draw()
            .map_err(e)?;
    }
    if let Some((x0, x1, label)) = &panel.shade {
        let (lo, hi) = (chart.y_range().start, chart.y_range().end);
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(*x0, lo), (*x1, hi)],
                RGBColor(200, 200, 200).mix(0.35).filled(),
            )))
            .map_err(e)?
            .label(label.as_str())
            .legend(|(x, y)| {
                Rectangle::new(
                    [(x, y - 5), (x + 20, y + 5)],
                    RGBColor(200, 200, 200).filled(),
                )
            });
    }
    for (x, label, color) in &panel.vlines {
        let (lo, hi) = (chart.y_range().start, chart.y_range().end);
        let c = *color;
        chart
            .draw_series(DashedLineSeries::new(
                [(*x, lo), (*x, hi)],
                6,
                4,
                c.stroke_width(2),
            ))
            .map_err(e)?
            .label(label.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    for (y, label, color) in &panel.hlines {
        let c = *color;
        chart
            .draw_series(DashedLineSeries::new(
                [(0.0, *y), (panel.x_max, *y)],
                6,
                4,
                c.stroke_width(2),
            ))
            .map_err(e)?
            .label(label.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    for line in &panel.lines {
        draw_line(&mut chart, line, false).map_err(e)?;
    }
    if let Some((_, lines)) = &panel.secondary {
        for line in lines {
            draw_line(&mut chart, line, true).map_err(e)?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font((FONT, 13))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(160, 160, 160))
        .draw()
        .map_err(e)?;
    Ok(())
}

fn draw_line<DB, X, Y, SX, SY>(
    chart: &mut DualCoordChartContext<'_, DB, Cartesian2d<X, Y>, Cartesian2d<SX, SY>>,
    line: &Line,
    secondary: bool,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>>
where
    DB: DrawingBackend,
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
    SX: Ranged<ValueType = f64>,
    SY: Ranged<ValueType = f64>,
{
    let c = line.color;
    let style = c.stroke_width(line.width);
    let points = line.points.iter().copied().filter(|p| p.1.is_finite());
    let anno = match (line.dashed, secondary) {
        (true, false) => chart.draw_series(DashedLineSeries::new(points, 8, 5, style))?,
        (true, true) => chart.draw_secondary_series(DashedLineSeries::new(points, 8, 5, style))?,
        (false, false) => chart.draw_series(LineSeries::new(points, style))?,
        (false, true) => chart.draw_secondary_series(LineSeries::new(points, style))?,
    };
    anno.label(line.label.as_str())
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], c.stroke_width(2)));
    if line.markers {
        let points = line.points.iter().copied().filter(|p| p.1.is_finite());
        let marker = |p: (f64, f64)| Circle::new(p, 3, c.filled());
        if secondary {
            chart.draw_secondary_series(points.map(marker))?;
        } else {
            chart.draw_series(points.map(marker))?;
        }
    }
    Ok(())
}

const BLUE_: RGBColor = RGBColor(31, 119, 180);
const ORANGE_: RGBColor = RGBColor(255, 127, 14);
const GREEN_: RGBColor = RGBColor(44, 160, 44);
const RED_: RGBColor = RGBColor(214, 39, 40);
const PURPLE_: RGBColor = RGBColor(148, 103, 189);
const GREY_: RGBColor = RGBColor(127, 127, 127);
const BLACK_: RGBColor = RGBColor(30, 30, 30);

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Throughput and loss over time of one run's series.
fn throughput_panel(report: &Report, title: String) -> Panel {
    let end = report
        .series
        .last()
        .map_or(1.0, |r| f64::from(r.second) + r.seconds);
    let mid = |r: &crate::report::SeriesRow| f64::from(r.second) + r.seconds / 2.0;
    let pts = |f: &dyn Fn(&crate::report::SeriesRow) -> f64| {
        report
            .series
            .iter()
            .map(|r| (mid(r), f(r)))
            .collect::<Vec<_>>()
    };
    let mut p = Panel::new(title, "seconds since the start", "per second", end);
    p.y_thousands = true;
    p.lines = vec![
        Line::new("requests sent", GREY_, pts(&|r| r.sent_per_second)).dashed(),
        Line::new(
            "replies (all)",
            BLACK_,
            pts(&|r| r.replies_per_second_total),
        )
        .with_markers(),
        Line::new("announce", GREEN_, pts(&|r| r.replies_per_second.announce)),
        Line::new("scrape", ORANGE_, pts(&|r| r.replies_per_second.scrape)),
        Line::new("connect", PURPLE_, pts(&|r| r.replies_per_second.connect)),
    ];
    if report.series.iter().any(|r| r.loss > 0.0) {
        p.secondary = Some((
            "loss %",
            vec![Line::new(
                "loss % (right axis)",
                RED_,
                pts(&|r| r.loss * 100.0),
            )],
        ));
    }
    if report.warmup_seconds > 0.0 {
        p.shade = Some((
            0.0,
            report.warmup_seconds,
            format!(
                "warm-up ({:.1} s, not in the summary)",
                report.warmup_seconds
            ),
        ));
    }
    p
}

/// Latency percentiles over time of one run's series.
fn latency_panel(report: &Report) -> Panel {
    let end = report
        .series
        .last()
        .map_or(1.0, |r| f64::from(r.second) + r.seconds);
    let answered: Vec<&crate::report::SeriesRow> = report
        .series
        .iter()
        .filter(|r| r.latency.count > 0)
        .collect();
    let pts = |f: &dyn Fn(&crate::report::Latency) -> u64| {
        answered
            .iter()
            .map(|r| (f64::from(r.second) + r.seconds / 2.0, ms(f(&r.latency))))
            .collect::<Vec<_>>()
    };
    let mut p = Panel::new(
        "Latency of the requests sent in each second".into(),
        "seconds since the start",
        "latency (log scale)",
        end,
    );
    p.y_axis = YAxis::Log;
    p.lines = vec![
        Line::new("max", GREY_, pts(&|l| l.max_us)).dashed(),
        Line::new("p99", RED_, pts(&|l| l.p99_us)).with_markers(),
        Line::new("p90", ORANGE_, pts(&|l| l.p90_us)),
        Line::new("p50", BLUE_, pts(&|l| l.p50_us)).with_markers(),
    ];
    if report.warmup_seconds > 0.0 {
        p.shade = Some((0.0, report.warmup_seconds, "warm-up".into()));
    }
    p
}

fn run_title(report: &Report) -> String {
    let mode = match report.target_rate {
        Some(r) => format!("open loop at {r:.0} requests/s"),
        None => "closed loop".into(),
    };
    format!(
        "fjord-bench {} against {} — {mode}, threads {}, sockets per thread {}, {:.0} replies/s measured",
        report.tool.version,
        report.target,
        report.threads,
        report.sockets / report.threads.max(1),
        report.responses_per_second_total
    )
}

fn draw_panels<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    title: &str,
    panels: &[Panel],
) -> DrawResult {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let root = root.titled(title, (FONT, 19)).map_err(e)?;
    for (area, panel) in root.split_evenly((panels.len(), 1)).iter().zip(panels) {
        draw_panel(area, panel)?;
    }
    root.present().map_err(e)?;
    Ok(())
}

fn write(path: &Path, title: &str, panels: &[Panel], height_per_panel: u32) -> anyhow::Result<()> {
    register_font();
    let size = (WIDTH, 40 + height_per_panel * panels.len() as u32);
    let result = match Format::of(path)? {
        Format::Svg => draw_panels(
            SVGBackend::new(path, size).into_drawing_area(),
            title,
            panels,
        ),
        Format::Png => draw_panels(
            BitMapBackend::new(path, size).into_drawing_area(),
            title,
            panels,
        ),
    };
    result.map_err(|e| anyhow::anyhow!("drawing {}: {e}", path.display()))
}

/// Draws one run: throughput and latency over time.
pub fn plot_run(report: &Report, path: &Path) -> anyhow::Result<()> {
    let panels = [
        throughput_panel(report, "Throughput per second".into()),
        latency_panel(report),
    ];
    write(path, &run_title(report), &panels, 380)
}

/// Draws a capacity search: the capacity curve, latency against offered rate, and the
/// search as a time line.
pub fn plot_search(report: &SearchReport, path: &Path) -> anyhow::Result<()> {
    let curve = report.curve();
    let x_max = curve
        .iter()
        .map(|s| s.rate.max(s.offered_per_second))
        .fold(1.0, f64::max)
        * 1.05;
    let mut capacity_panel = Panel::new(
        "Capacity curve: replies per second against the offered rate".into(),
        "offered rate (requests/s)",
        "replies/s",
        x_max,
    );
    capacity_panel.x_thousands = true;
    capacity_panel.y_thousands = true;
    capacity_panel.lines = vec![
        Line::new(
            "answered = offered",
            GREY_,
            vec![(0.0, 0.0), (x_max, x_max)],
        )
        .dashed(),
        Line::new(
            "replies/s",
            BLUE_,
            curve
                .iter()
                .map(|s| (s.rate, s.replies_per_second))
                .collect(),
        )
        .with_markers(),
    ];
    let failed: Vec<(f64, f64)> = curve
        .iter()
        .filter(|s| !s.passed)
        .map(|s| (s.rate, s.replies_per_second))
        .collect();
    if !failed.is_empty() {
        let mut l = Line::new("step broke the limits", RED_, failed).with_markers();
        l.width = 0;
        capacity_panel.lines.push(l);
    }
    capacity_panel.secondary = Some((
        "loss %",
        vec![
            Line::new(
                "loss % (right axis)",
                RED_,
                curve.iter().map(|s| (s.rate, s.loss * 100.0)).collect(),
            )
            .dashed(),
        ],
    ));
    if let Some(c) = &report.capacity {
        capacity_panel.vlines.push((
            c.rate,
            format!(
                "capacity {}{:.0} requests/s",
                if c.lower_bound { "≥ " } else { "" },
                c.rate
            ),
            GREEN_,
        ));
    }
    let answered: Vec<&&crate::capacity::Step> =
        curve.iter().filter(|s| s.p99_us.is_some()).collect();
    let lat = |f: &dyn Fn(&crate::capacity::Step) -> Option<u64>| {
        answered
            .iter()
            .filter_map(|s| f(s).map(|v| (s.rate, ms(v))))
            .collect::<Vec<_>>()
    };
    let mut latency = Panel::new(
        "Latency against the offered rate".into(),
        "offered rate (requests/s)",
        "latency (log scale)",
        x_max,
    );
    latency.x_thousands = true;
    latency.y_axis = YAxis::Log;
    latency.lines = vec![
        Line::new("p99.9", GREY_, lat(&|s| s.p999_us)).dashed(),
        Line::new("p99", RED_, lat(&|s| s.p99_us)).with_markers(),
        Line::new("p50", BLUE_, lat(&|s| s.p50_us)).with_markers(),
    ];
    if let Some(limit) = report.search.limits.max_p99_us {
        latency.hlines.push((
            ms(limit),
            format!("p99 limit {}", latency_label(ms(limit))),
            ORANGE_,
        ));
    }
    if let Some(c) = &report.capacity {
        latency.vlines.push((c.rate, "capacity".into(), GREEN_));
    }
    // The whole search on one time axis: each step's seconds at its start time.
    let mut offered = Vec::new();
    let mut replies = Vec::new();
    let mut end = 1.0f64;
    for s in &report.steps {
        for r in &s.report.series {
            let t = s.started_at_seconds + f64::from(r.second) + r.seconds / 2.0;
            offered.push((t, r.offered_per_second));
            replies.push((t, r.replies_per_second_total));
            end = end.max(s.started_at_seconds + f64::from(r.second) + r.seconds);
        }
        // Break the lines between steps.
        offered.push((s.started_at_seconds, f64::NAN));
        replies.push((s.started_at_seconds, f64::NAN));
    }
    let mut timeline = Panel::new(
        "The search over time (one point per second of each step)".into(),
        "seconds since the search started",
        "per second",
        end,
    );
    timeline.y_thousands = true;
    timeline.lines = vec![
        Line::new("offered", GREY_, offered).with_markers(),
        Line::new("replies", BLUE_, replies).with_markers(),
    ];
    for line in &mut timeline.lines {
        line.width = 0;
    }
    let title = format!(
        "fjord-bench {} capacity search against {} — {}",
        report.tool.version,
        report.target,
        report.conclusion.split(':').next().unwrap_or("")
    );
    let title = match &report.capacity {
        Some(c) => format!(
            "fjord-bench {}: capacity of {} {}{:.0} requests/s ({})",
            report.tool.version,
            report.target,
            if c.lower_bound { "≥ " } else { "" },
            c.rate,
            crate::capacity::limits_text(&report.search.limits)
        ),
        None => title,
    };
    write(path, &title, &[capacity_panel, latency, timeline], 360)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_follow_the_extension() {
        assert_eq!(Format::of(Path::new("a/b.svg")).unwrap(), Format::Svg);
        assert_eq!(Format::of(Path::new("b.PNG")).unwrap(), Format::Png);
        let err = Format::of(Path::new("b.jpg")).unwrap_err().to_string();
        assert!(err.contains(".svg or .png"), "{err}");
    }

    #[test]
    fn axis_labels_are_short() {
        assert_eq!(thousands(45_000.0), "45k");
        assert_eq!(thousands(1_500.0), "1.5k");
        assert_eq!(thousands(2_000.0), "2k");
        assert_eq!(thousands(1_250_000.0), "1.2M");
        assert_eq!(thousands(12.0), "12");
        assert_eq!(latency_label(0.25), "250 µs");
        assert_eq!(latency_label(12.0), "12 ms");
        assert_eq!(latency_label(2000.0), "2 s");
    }
}
