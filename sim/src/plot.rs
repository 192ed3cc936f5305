//! `--plot FILE.svg`: the run's timeline drawn for a person, who prints it to see the tail.
//! Top panel: hosts done over time with the lower bound, 1.25 × and 1.35 × of it and the
//! p50/p99/last host times as vertical markers, and from 100 hosts on the hosts not done on
//! a log axis at the right, where the last few stragglers show. Bottom panel: throughput per
//! link class, in Gbit/s.
//!
//! SVG only, and no font feature in `plotters`: the SVG backend writes `<text>` elements and
//! the viewer chooses the font, so no font library or font file is needed to build or run.
//! Text widths for the layout are `plotters`' estimate from the character count.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::report::{Report, Sample};

/// Why a plot was not written.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("cannot write the plot to {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot draw the plot: {0}")]
    Draw(String),
}

const WIDTH: u32 = 1400;
const HEIGHT: u32 = 1000;
const TITLE_HEIGHT: u32 = 92;
const LEGEND_WIDTH: u32 = 270;
const FONT: &str = "sans-serif";

/// The marker tags' rows, and a generous width of one of their characters, in pixels.
const TAG_ROW_PX: i32 = 15;
const TAG_CHAR_PX: i32 = 8;

/// Room for the top panel's right axis; the bottom panel keeps the same, so that the two
/// time axes line up.
const RIGHT_AXIS_PX: u32 = 84;
/// The bottom of the hosts-not-done log axis, where 0 is drawn.
const NOT_DONE_FLOOR: f64 = 0.5;
/// Under this many hosts each host is a visible step of the hosts-done curve, and the
/// hosts-not-done axis is left out.
const NOT_DONE_MIN_HOSTS: u64 = 100;

/// When the largest class peak is this many times the smallest positive one, the lines of
/// the small classes would lie flat on the axis: the throughput panel goes logarithmic.
const LOG_SCALE_PEAK_RATIO: f64 = 30.0;
const LOG_SCALE_DECADES: i32 = 6;

/// Draws `report`'s timeline to `path` as an SVG file (overwritten if it exists).
pub fn draw_svg(report: &Report, path: &Path) -> Result<(), PlotError> {
    let svg = render_svg(report)?;
    std::fs::write(path, svg).map_err(|source| PlotError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// The SVG document for `report`.
pub fn render_svg(report: &Report) -> Result<String, PlotError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let (title_area, panels) = root.split_vertically(TITLE_HEIGHT);
        draw_title(&title_area, report)?;
        let (hosts_area, rates_area) = panels.split_vertically((HEIGHT - TITLE_HEIGHT) * 52 / 100);
        let figure = Figure::of(report);
        draw_hosts_panel(&hosts_area, report, &figure)?;
        draw_rates_panel(&rates_area, &figure)?;
        root.present().map_err(draw_err)?;
    }
    Ok(svg)
}

fn draw_err<E: std::fmt::Display>(e: E) -> PlotError {
    PlotError::Draw(e.to_string())
}

/// What both panels share: the time axis and the marker lines.
struct Figure {
    x_max: f64,
    /// The timeline in time order, at most [`MAX_STEPS`] samples.
    samples: Vec<Sample>,
    /// Where the first sample's interval starts.
    first_start_s: f64,
    markers: Vec<Marker>,
}

/// More samples than this are merged in runs before drawing: a printed page has no more
/// columns than this, and the file stays small.
const MAX_STEPS: usize = 1500;

struct Marker {
    t_s: f64,
    /// Short, written at the top of the line.
    tag: &'static str,
    /// Long, in the legend.
    legend: String,
    style: ShapeStyle,
    /// (dash, gap) in pixels; None: a solid line.
    dash: Option<(u32, u32)>,
}

impl Figure {
    fn of(report: &Report) -> Figure {
        let mut samples: Vec<Sample> = report
            .timeline
            .samples
            .iter()
            .filter(|s| s.t_s.is_finite() && s.t_s >= 0.0)
            .cloned()
            .collect();
        samples.sort_by(|a, b| a.t_s.total_cmp(&b.t_s));
        let interval = report.timeline.interval_s;
        let interval = if interval.is_finite() {
            interval.max(0.0)
        } else {
            0.0
        };
        let first_start_s = samples.first().map_or(0.0, |s| (s.t_s - interval).max(0.0));
        let samples = coarsen(&samples, first_start_s, MAX_STEPS);
        let markers = markers(report);
        let last_sample = samples.last().map_or(0.0, |s| s.t_s);
        let last_marker = markers.iter().map(|m| m.t_s).fold(0.0, f64::max);
        let mut x_max = last_sample.max(last_marker * 1.04);
        if !(x_max.is_finite() && x_max > 0.0) {
            x_max = 1.0;
        }
        Figure {
            x_max,
            samples,
            first_start_s,
            markers,
        }
    }
}

/// Merges runs of consecutive samples so at most `max` remain: each merged sample has the
/// run's last time and hosts done, and its rates are the time-weighted means over the run,
/// so the bytes under each line stay the same.
fn coarsen(samples: &[Sample], first_start_s: f64, max: usize) -> Vec<Sample> {
    if samples.len() <= max || max == 0 {
        return samples.to_vec();
    }
    let run = samples.len().div_ceil(max);
    let mut merged = Vec::with_capacity(max);
    let mut start = first_start_s;
    for chunk in samples.chunks(run) {
        let mut sums = [0.0; 4];
        let mut span = 0.0;
        let mut from = start;
        for sample in chunk {
            let dt = (sample.t_s - from).max(0.0);
            for (sum, class) in sums.iter_mut().zip(&LINK_CLASSES) {
                *sum += (class.rate)(sample) * dt;
            }
            span += dt;
            from = sample.t_s;
        }
        let Some(last) = chunk.last() else {
            continue;
        };
        let mean = |sum: f64| {
            if span > 0.0 {
                sum / span
            } else {
                0.0
            }
        };
        merged.push(Sample {
            t_s: last.t_s,
            hosts_done: last.hosts_done,
            host_in_bps: mean(sums[0]),
            rack_in_bps: mean(sums[1]),
            wan_in_bps: mean(sums[2]),
            origin_out_bps: mean(sums[3]),
        });
        start = last.t_s;
    }
    merged
}

fn markers(report: &Report) -> Vec<Marker> {
    let bound = report.lower_bound_s;
    let mut markers = Vec::new();
    let solid = |color: RGBColor, width: u32| ShapeStyle {
        color: color.to_rgba(),
        filled: false,
        stroke_width: width,
    };
    if bound.is_finite() && bound > 0.0 {
        markers.push(Marker {
            t_s: bound,
            tag: "bound",
            legend: format!("lower bound {}", seconds(bound)),
            style: solid(BLACK, 2),
            dash: None,
        });
        for (factor, tag, color) in [
            (1.25, "1.25×", RGBColor(230, 120, 0)),
            (1.35, "1.35×", RGBColor(200, 0, 0)),
        ] {
            markers.push(Marker {
                t_s: bound * factor,
                tag,
                legend: format!("{factor} × bound {}", seconds(bound * factor)),
                style: solid(color, 2),
                dash: Some((8, 5)),
            });
        }
    }
    let ratio = |t: f64| {
        if bound.is_finite() && bound > 0.0 {
            format!(" ({:.3} ×)", t / bound)
        } else {
            String::new()
        }
    };
    for (time, tag, name, color, dash) in [
        (
            report.p50_host_s,
            "p50",
            "p50 host",
            RGBColor(60, 60, 60),
            Some((2, 4)),
        ),
        (
            report.p99_host_s,
            "p99",
            "p99 host",
            RGBColor(128, 0, 128),
            Some((2, 4)),
        ),
        (
            report.last_host_s,
            "last",
            "last host",
            RGBColor(140, 86, 75),
            None,
        ),
    ] {
        if let Some(t) = time.filter(|t| t.is_finite() && *t >= 0.0) {
            markers.push(Marker {
                t_s: t,
                tag,
                legend: format!("{name} {}{}", seconds(t), ratio(t)),
                style: solid(color, 2),
                dash,
            });
        }
    }
    markers
}

fn draw_title<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    report: &Report,
) -> Result<(), PlotError> {
    let blob = report.blob_bytes.max(1) as f64;
    let first = format!(
        "ringswarm sim · {} hosts in {} · blob {} in {} pieces of {} · seed {}",
        eng(report.hosts as f64),
        plural(report.dc_in_bytes.len(), "dc", "dcs"),
        binary_size(report.blob_bytes),
        eng(report.pieces as f64),
        binary_size(report.piece_bytes),
        report.seed
    );
    let last = match report.last_host_s {
        Some(t) if report.lower_bound_s > 0.0 => format!(
            "last host {:.3} × bound ({} against {})",
            t / report.lower_bound_s,
            seconds(t),
            seconds(report.lower_bound_s)
        ),
        Some(t) => format!("last host {}", seconds(t)),
        None => format!("last host: never (bound {})", seconds(report.lower_bound_s)),
    };
    let rack = if report.rack_in_max.is_empty() {
        String::new()
    } else {
        format!(" ({})", report.rack_in_max)
    };
    let second = format!(
        "{last} · most into a dc {:.3} blob · most into a rack {:.3} blob{rack} · origin sent {:.3} blob",
        report.dc_in_blobs_max(),
        report.rack_in_bytes_max as f64 / blob,
        report.origin_sent_bytes as f64 / blob,
    );
    let third = format!(
        "{} of {} hosts done · dead {}, slow {}, late {} · simulated {} in {:.1} s wall",
        grouped(report.completed),
        grouped(report.hosts),
        grouped(report.dead),
        grouped(report.slow),
        grouped(report.late),
        seconds(report.simulated_s),
        report.wall_s
    );
    let lines = [
        (first, (FONT, 24).into_font().style(FontStyle::Bold)),
        (second, (FONT, 19).into_font()),
        (third, (FONT, 17).into_font()),
    ];
    let mut y = 10;
    for (text, font) in lines {
        let size = font.get_size() as i32;
        area.draw(&Text::new(text, (20, y), font.color(&BLACK)))
            .map_err(draw_err)?;
        y += size + 6;
    }
    Ok(())
}

fn draw_hosts_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    report: &Report,
    figure: &Figure,
) -> Result<(), PlotError> {
    let (chart_area, legend_area) = area.split_horizontally(WIDTH - LEGEND_WIDTH);
    let y_max = report.hosts.max(1) as f64;
    // Hosts not done, on a log axis at the right: the tail's last few hosts, invisible
    // at the scale of thousands, stand out there.
    let not_done_top = (y_max * 1.5).max(10.0);
    let mut chart = ChartBuilder::on(&chart_area)
        .margin_left(10)
        .margin_right(20)
        .margin_top(12)
        .margin_bottom(6)
        .x_label_area_size(44)
        .y_label_area_size(76)
        .right_y_label_area_size(RIGHT_AXIS_PX)
        .build_cartesian_2d(0.0..figure.x_max, 0.0..y_max)
        .map_err(draw_err)?
        .set_secondary_coord(
            0.0..figure.x_max,
            (NOT_DONE_FLOOR..not_done_top).log_scale(),
        );
    chart
        .configure_mesh()
        .x_desc("virtual time (s)")
        .y_desc("hosts done")
        .x_label_formatter(&|v| eng(*v))
        .y_label_formatter(&|v| eng(*v))
        .x_labels(12)
        .y_labels(8)
        .label_style((FONT, 16))
        .axis_desc_style((FONT, 17))
        .light_line_style(RGBColor(235, 235, 235))
        .bold_line_style(RGBColor(205, 205, 205))
        .draw()
        .map_err(draw_err)?;

    let hosts_style = ShapeStyle {
        color: RGBColor(31, 119, 180).to_rgba(),
        filled: false,
        stroke_width: 3,
    };
    for marker in &figure.markers {
        draw_marker_line(&mut chart, marker, y_max, 0.0)?;
    }
    let not_done_style = ShapeStyle {
        color: RGBColor(110, 110, 110).to_rgba(),
        filled: false,
        stroke_width: 2,
    };
    let show_not_done = report.hosts >= NOT_DONE_MIN_HOSTS && !figure.samples.is_empty();
    if show_not_done {
        chart
            .configure_secondary_axes()
            .y_desc("hosts not done (log; 0 at the bottom)")
            .y_label_formatter(&|v| eng(*v))
            .label_style((FONT, 16))
            .axis_desc_style((FONT, 17))
            .draw()
            .map_err(draw_err)?;
        let at_start = (figure.samples[0].t_s > 0.0).then_some((0.0, 0));
        let not_done = at_start
            .into_iter()
            .chain(figure.samples.iter().map(|s| (s.t_s, s.hosts_done)))
            .map(|(t, done)| {
                let left = report.hosts.saturating_sub(done) as f64;
                (t, left.max(NOT_DONE_FLOOR))
            });
        chart
            .draw_secondary_series(DashedLineSeries::new(not_done, 6, 3, not_done_style))
            .map_err(draw_err)?;
    }
    // The curve over the marker lines.
    let mut done: Vec<(f64, f64)> = Vec::with_capacity(figure.samples.len() + 1);
    if figure.samples.first().is_none_or(|s| s.t_s > 0.0) {
        done.push((0.0, 0.0));
    }
    done.extend(
        figure
            .samples
            .iter()
            .map(|s| (s.t_s, (s.hosts_done as f64).min(y_max))),
    );
    if done.len() > 1 {
        chart
            .draw_series(LineSeries::new(done, hosts_style))
            .map_err(draw_err)?;
    }
    // Each marker's tag on its own row, in time order, so close markers (p50 at the bound)
    // stay legible; on a light backing, over the curve.
    let mut order: Vec<&Marker> = figure.markers.iter().collect();
    order.sort_by(|a, b| a.t_s.total_cmp(&b.t_s));
    for (row, marker) in order.into_iter().enumerate() {
        let width = TAG_CHAR_PX * marker.tag.chars().count() as i32 + 4;
        let top = 4 + TAG_ROW_PX * row as i32;
        // Right of the line, unless that runs off the chart.
        let (left, h_pos, text_x) = if marker.t_s > figure.x_max * 0.88 {
            (-3 - width, HPos::Right, -5)
        } else {
            (3, HPos::Left, 5)
        };
        let style = TextStyle::from((FONT, 15).into_font())
            .color(&marker.style.color)
            .pos(Pos::new(h_pos, VPos::Top));
        chart
            .draw_series(std::iter::once(
                EmptyElement::at((marker.t_s, y_max))
                    + Rectangle::new(
                        [(left, top - 1), (left + width, top + TAG_ROW_PX - 2)],
                        WHITE.mix(0.85).filled(),
                    )
                    + Text::new(marker.tag, (text_x, top), style),
            ))
            .map_err(draw_err)?;
    }

    let mut entries = vec![LegendEntry {
        label: format!("hosts done (of {})", eng(report.hosts as f64)),
        style: Some((hosts_style, None)),
    }];
    if show_not_done {
        entries.push(LegendEntry {
            label: "hosts not done (right axis)".to_string(),
            style: Some((not_done_style, Some((6, 3)))),
        });
    }
    entries.extend(figure.markers.iter().map(|m| LegendEntry {
        label: m.legend.clone(),
        style: Some((m.style, m.dash)),
    }));
    if report.last_host_s.is_none() {
        entries.push(LegendEntry {
            label: format!(
                "last host: never ({} of {} done)",
                grouped(report.completed),
                grouped(report.hosts)
            ),
            style: None,
        });
    }
    draw_legend(&legend_area, &entries)
}

/// One line of the bottom panel.
struct LinkClass {
    label: &'static str,
    color: RGBColor,
    /// The sample's rate for this class, bytes per second.
    rate: fn(&Sample) -> f64,
}

const LINK_CLASSES: [LinkClass; 4] = [
    LinkClass {
        label: "into hosts (down links)",
        color: RGBColor(31, 119, 180),
        rate: |s| s.host_in_bps,
    },
    LinkClass {
        label: "into racks (uplinks)",
        color: RGBColor(44, 160, 44),
        rate: |s| s.rack_in_bps,
    },
    LinkClass {
        label: "into dcs (WAN links)",
        color: RGBColor(255, 127, 14),
        rate: |s| s.wan_in_bps,
    },
    LinkClass {
        label: "origin out",
        color: RGBColor(214, 39, 40),
        rate: |s| s.origin_out_bps,
    },
];

fn gbit_per_s(bytes_per_s: f64) -> f64 {
    if bytes_per_s.is_finite() && bytes_per_s > 0.0 {
        bytes_per_s * 8.0 / 1e9
    } else {
        0.0
    }
}

/// The y axis of the throughput panel: linear from 0, or logarithmic from `floor` (rates
/// below it, zero among them, are drawn on the floor).
#[derive(Debug, PartialEq)]
enum RateAxis {
    Linear { max: f64 },
    Log { floor: f64, max: f64 },
}

fn rate_axis(samples: &[Sample]) -> RateAxis {
    let peaks: Vec<f64> = LINK_CLASSES
        .iter()
        .map(|class| {
            samples
                .iter()
                .map(|s| gbit_per_s((class.rate)(s)))
                .fold(0.0, f64::max)
        })
        .collect();
    let top = peaks.iter().copied().fold(0.0, f64::max);
    let smallest = peaks
        .iter()
        .copied()
        .filter(|p| *p > 0.0)
        .fold(f64::INFINITY, f64::min);
    if top <= 0.0 {
        return RateAxis::Linear { max: 1.0 };
    }
    if top / smallest < LOG_SCALE_PEAK_RATIO {
        return RateAxis::Linear { max: top * 1.08 };
    }
    // A decade under the smallest peak shows that class's ramp; whole decades read best;
    // past LOG_SCALE_DECADES a class is too small to matter and lies on the floor.
    let max = 10f64.powf((top * 1.5).log10().ceil());
    let floor = 10f64
        .powf((smallest / 10.0).log10().floor())
        .max(max / 10f64.powi(LOG_SCALE_DECADES));
    RateAxis::Log { floor, max }
}

fn draw_rates_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    figure: &Figure,
) -> Result<(), PlotError> {
    let (chart_area, legend_area) = area.split_horizontally(WIDTH - LEGEND_WIDTH);
    let axis = rate_axis(&figure.samples);
    let mut builder = ChartBuilder::on(&chart_area);
    builder
        .margin_left(10)
        .margin_right(20 + RIGHT_AXIS_PX)
        .margin_top(12)
        .margin_bottom(10)
        .x_label_area_size(44)
        .y_label_area_size(76);
    match axis {
        RateAxis::Linear { max } => {
            let mut chart = builder
                .build_cartesian_2d(0.0..figure.x_max, 0.0..max)
                .map_err(draw_err)?;
            configure_rates_mesh(&mut chart, "throughput (Gbit/s)")?;
            draw_rate_lines(&mut chart, figure, 0.0, max)?;
        }
        RateAxis::Log { floor, max } => {
            let mut chart = builder
                .build_cartesian_2d(0.0..figure.x_max, (floor..max).log_scale())
                .map_err(draw_err)?;
            configure_rates_mesh(&mut chart, "throughput (Gbit/s, log; 0 on the floor)")?;
            draw_rate_lines(&mut chart, figure, floor, max)?;
        }
    }
    let entries: Vec<LegendEntry> = LINK_CLASSES
        .iter()
        .map(|class| LegendEntry {
            label: class.label.to_string(),
            style: Some((
                ShapeStyle {
                    color: class.color.to_rgba(),
                    filled: false,
                    stroke_width: 2,
                },
                None,
            )),
        })
        .collect();
    draw_legend(&legend_area, &entries)
}

fn configure_rates_mesh<DB, X, Y>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<X, Y>>,
    y_desc: &str,
) -> Result<(), PlotError>
where
    DB: DrawingBackend,
    X: Ranged<ValueType = f64> + plotters::coord::ranged1d::ValueFormatter<f64>,
    Y: Ranged<ValueType = f64> + plotters::coord::ranged1d::ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .x_desc("virtual time (s)")
        .y_desc(y_desc)
        .x_label_formatter(&|v| eng(*v))
        .y_label_formatter(&|v| eng(*v))
        .x_labels(12)
        .y_labels(8)
        .label_style((FONT, 16))
        .axis_desc_style((FONT, 17))
        .light_line_style(RGBColor(235, 235, 235))
        .bold_line_style(RGBColor(205, 205, 205))
        .draw()
        .map_err(draw_err)
}

fn draw_rate_lines<DB, X, Y>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<X, Y>>,
    figure: &Figure,
    floor: f64,
    top: f64,
) -> Result<(), PlotError>
where
    DB: DrawingBackend,
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    // Faint copies of the top panel's markers, to line the rates up with the hosts.
    for marker in &figure.markers {
        let mut faint = Marker {
            t_s: marker.t_s,
            tag: marker.tag,
            legend: String::new(),
            style: marker.style,
            dash: marker.dash,
        };
        faint.style.color = faint.style.color.mix(0.35);
        faint.style.stroke_width = 1;
        draw_marker_line(chart, &faint, top, floor)?;
    }
    if figure.samples.is_empty() {
        let middle = (
            (figure.x_max / 2.0),
            if floor > 0.0 { floor } else { top / 2.0 },
        );
        let style = TextStyle::from((FONT, 20).into_font())
            .color(&RGBColor(90, 90, 90))
            .pos(Pos::new(HPos::Center, VPos::Bottom));
        chart
            .draw_series(std::iter::once(Text::new(
                "no timeline samples in this report",
                middle,
                style,
            )))
            .map_err(draw_err)?;
        return Ok(());
    }
    for class in &LINK_CLASSES {
        // Each sample is the mean over the interval before it: a step over that interval.
        let mut steps = Vec::with_capacity(figure.samples.len() * 2);
        let mut start = figure.first_start_s;
        for sample in &figure.samples {
            let value = gbit_per_s((class.rate)(sample)).clamp(floor, top);
            steps.push((start, value));
            steps.push((sample.t_s, value));
            start = sample.t_s;
        }
        chart
            .draw_series(LineSeries::new(
                steps,
                ShapeStyle {
                    color: class.color.to_rgba(),
                    filled: false,
                    stroke_width: 2,
                },
            ))
            .map_err(draw_err)?;
    }
    Ok(())
}

fn draw_marker_line<DB, X, Y>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<X, Y>>,
    marker: &Marker,
    top: f64,
    bottom: f64,
) -> Result<(), PlotError>
where
    DB: DrawingBackend,
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    let line = [(marker.t_s, bottom), (marker.t_s, top)];
    match marker.dash {
        None => chart
            .draw_series(LineSeries::new(line, marker.style))
            .map(|_| ()),
        Some((dash, gap)) => chart
            .draw_series(DashedLineSeries::new(line, dash, gap, marker.style))
            .map(|_| ()),
    }
    .map_err(draw_err)
}

struct LegendEntry {
    label: String,
    /// The line's style and dash (None: a line of text alone).
    style: Option<(ShapeStyle, Option<(u32, u32)>)>,
}

/// A legend in its own column beside the chart, so it never hides a line.
fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    entries: &[LegendEntry],
) -> Result<(), PlotError> {
    let text = TextStyle::from((FONT, 15).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    for (row, entry) in entries.iter().enumerate() {
        let y = 24 + 24 * row as i32;
        if let Some((style, dash)) = entry.style {
            let sample = vec![(4, y), (34, y)];
            match dash {
                None => area.draw(&PathElement::new(sample, style)),
                Some((dash, gap)) => area.draw(&DashedPathElement::new(sample, dash, gap, style)),
            }
            .map_err(draw_err)?;
        }
        area.draw(&Text::new(entry.label.clone(), (42, y), text.clone()))
            .map_err(draw_err)?;
    }
    Ok(())
}

/// An engineering format for axis labels: 3 significant digits at most and k, M, G, T
/// for thousands up, so 10 000 hosts read "10k" and 2 500 "2.5k".
pub fn eng(value: f64) -> String {
    if !value.is_finite() {
        return value.to_string();
    }
    if value == 0.0 {
        return "0".to_string();
    }
    let magnitude = value.abs();
    let (scale, suffix) = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")]
        .into_iter()
        .find(|(scale, _)| magnitude >= *scale * 0.9995)
        .unwrap_or((1.0, ""));
    let scaled = value / scale;
    let digits_before_point = scaled.abs().log10().floor() as i32 + 1;
    let decimals = (3 - digits_before_point).clamp(0, 6) as usize;
    let mut text = format!("{scaled:.decimals$}");
    if text.contains('.') {
        text = text.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    format!("{text}{suffix}")
}

fn seconds(s: f64) -> String {
    if s.is_finite() && s.abs() >= 1000.0 {
        format!("{s:.0} s")
    } else {
        format!("{s:.2} s")
    }
}

fn binary_size(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    let mut text = format!("{value:.2}");
    text = text.trim_end_matches('0').trim_end_matches('.').to_string();
    format!("{text} {}", units[unit])
}

/// 10000 as "10 000": exact counts, readable.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut text = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            text.push(' ');
        }
        text.push(digit);
    }
    text
}

fn plural(count: usize, one: &str, many: &str) -> String {
    if count == 1 {
        format!("1 {one}")
    } else {
        format!("{count} {many}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{NamedBytes, Timeline};

    /// A plausible run: `hosts` hosts in `dcs` dcs finish around the bound, with a tail.
    fn synthetic(hosts: u64, dcs: usize, samples: usize) -> Report {
        let bound = 34.4;
        let blob = 100u64 << 30;
        let interval = bound * 1.3 / samples.max(1) as f64;
        let host_rate = 25e9 / 8.0;
        let timeline = (1..=samples)
            .map(|i| {
                let t = interval * i as f64;
                let share = 1.0 / (1.0 + (-(t - bound * 1.02) / (bound * 0.02)).exp());
                let running = hosts as f64 * (1.0 - share);
                Sample {
                    t_s: t,
                    hosts_done: (hosts as f64 * share).round() as u64,
                    host_in_bps: running * host_rate * 0.95,
                    rack_in_bps: (running / 80.0).ceil() * host_rate * 1.1,
                    wan_in_bps: if dcs > 1 && running > 1.0 {
                        (dcs - 1) as f64 * 100e9 / 8.0 * 0.9
                    } else {
                        0.0
                    },
                    origin_out_bps: if running > 1.0 { host_rate } else { 0.0 },
                }
            })
            .collect();
        Report {
            seed: 7,
            hosts,
            completed: hosts,
            lower_bound_s: bound,
            last_host_s: Some(bound * 1.22),
            last_healthy_host_s: Some(bound * 1.2),
            p50_host_s: Some(bound * 1.02),
            p99_host_s: Some(bound * 1.09),
            blob_bytes: blob,
            pieces: 1600,
            piece_bytes: 64 << 20,
            block_bytes: 1 << 20,
            origin_sent_bytes: blob * 13 / 10,
            dc_in_bytes: (0..dcs)
                .map(|i| NamedBytes {
                    name: format!("dc{i}"),
                    bytes: blob + blob / 20,
                })
                .collect(),
            rack_in_bytes_max: blob * 112 / 100,
            rack_in_max: "dc0/r3".to_string(),
            rack_in_bytes: Vec::new(),
            simulated_s: bound * 1.3,
            wall_s: 12.5,
            timeline: Timeline {
                interval_s: interval,
                samples: timeline,
            },
            ..Report::default()
        }
    }

    /// Tags balance (every opened element is closed, in order) and the document is one
    /// `<svg>` element: enough to tell a truncated or garbled file.
    fn assert_well_formed_svg(svg: &str) {
        let body = svg.trim();
        assert!(
            body.starts_with("<svg"),
            "does not start with <svg: {:.80}",
            body
        );
        assert!(body.ends_with("</svg>"), "does not end with </svg>");
        let mut open: Vec<&str> = Vec::new();
        let mut rest = body;
        let mut roots = 0;
        while let Some(start) = rest.find('<') {
            let end = rest[start..].find('>').expect("a tag is not closed") + start;
            let tag = &rest[start + 1..end];
            assert!(!tag.contains('<'), "a '<' inside a tag: {tag}");
            if let Some(name) = tag.strip_prefix('/') {
                let opened = open.pop().expect("a closing tag without an opening one");
                assert_eq!(opened, name.trim(), "tags cross");
            } else if !tag.starts_with('?') && !tag.starts_with('!') {
                let name = tag.split_whitespace().next().expect("an empty tag");
                if open.is_empty() {
                    roots += 1;
                }
                if !tag.ends_with('/') {
                    open.push(name);
                }
            }
            rest = &rest[end + 1..];
        }
        assert!(open.is_empty(), "left open: {open:?}");
        assert_eq!(roots, 1, "more than one root element");
    }

    /// The text of every `<text>` element, unescaped enough for the labels used here.
    fn texts(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .map(|chunk| {
                let inner = &chunk[chunk.find('>').unwrap() + 1..chunk.find("</text>").unwrap()];
                inner.trim().replace("&amp;", "&").replace("&lt;", "<")
            })
            .collect()
    }

    fn has_text(svg: &str, wanted: &str) -> bool {
        texts(svg).iter().any(|t| t.contains(wanted))
    }

    #[test]
    fn a_run_draws_title_legends_and_markers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.svg");
        draw_svg(&synthetic(1000, 3, 200), &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert_well_formed_svg(&svg);
        for wanted in [
            "1k hosts in 3 dcs",
            "blob 100 GiB in 1.6k pieces of 64 MiB",
            "seed 7",
            "last host 1.220 × bound",
            "most into a dc 1.050 blob",
            "most into a rack 1.120 blob (dc0/r3)",
            "origin sent 1.300 blob",
            "hosts done (of 1k)",
            "into hosts (down links)",
            "into racks (uplinks)",
            "into dcs (WAN links)",
            "origin out",
            "lower bound 34.40 s",
            "1.25 × bound 43.00 s",
            "1.35 × bound 46.44 s",
            "p50 host 35.09 s (1.020 ×)",
            "p99 host 37.50 s (1.090 ×)",
            "last host 41.97 s (1.220 ×)",
            "virtual time (s)",
            "hosts not done (right axis)",
            "hosts not done (log; 0 at the bottom)",
        ] {
            assert!(
                has_text(&svg, wanted),
                "no text {wanted:?} in {:?}",
                texts(&svg)
            );
        }
        for tag in ["bound", "1.25×", "1.35×", "p50", "p99", "last"] {
            assert!(
                texts(&svg).iter().any(|t| t == tag),
                "no marker tag {tag:?}"
            );
        }
    }

    #[test]
    fn an_empty_timeline_and_no_finish_still_draw() {
        let mut report = synthetic(12, 1, 0);
        assert!(report.timeline.samples.is_empty());
        report.last_host_s = None;
        report.last_healthy_host_s = None;
        report.p50_host_s = None;
        report.p99_host_s = None;
        report.completed = 0;
        let svg = render_svg(&report).unwrap();
        assert_well_formed_svg(&svg);
        assert!(has_text(&svg, "12 hosts in 1 dc "));
        assert!(has_text(&svg, "last host: never (bound 34.40 s)"));
        assert!(has_text(&svg, "last host: never (0 of 12 done)"));
        assert!(has_text(&svg, "no timeline samples in this report"));
        assert!(!has_text(&svg, "p50 host"));
        assert!(has_text(&svg, "1.35 × bound"));
        assert!(!has_text(&svg, "hosts not done"));
    }

    #[test]
    fn few_hosts_have_no_not_done_axis() {
        let svg = render_svg(&synthetic(12, 1, 60)).unwrap();
        assert!(has_text(&svg, "hosts done (of 12)"));
        assert!(!has_text(&svg, "hosts not done"));
        let svg = render_svg(&synthetic(NOT_DONE_MIN_HOSTS, 1, 60)).unwrap();
        assert!(has_text(&svg, "hosts not done (right axis)"));
    }

    #[test]
    fn a_default_report_draws() {
        // No hosts, no bound, no samples, no dcs: nothing to divide by.
        let svg = render_svg(&Report::default()).unwrap();
        assert_well_formed_svg(&svg);
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg:.400}");
    }

    #[test]
    fn numbers_that_are_not_finite_are_left_out() {
        let mut report = synthetic(500, 2, 50);
        report.lower_bound_s = f64::NAN;
        report.p50_host_s = Some(f64::INFINITY);
        report.timeline.interval_s = f64::NAN;
        report.timeline.samples[3].t_s = f64::NAN;
        report.timeline.samples[4].host_in_bps = f64::INFINITY;
        report.timeline.samples[5].wan_in_bps = -1.0;
        let svg = render_svg(&report).unwrap();
        assert_well_formed_svg(&svg);
        assert!(!has_text(&svg, "× bound") && !has_text(&svg, "lower bound"));
        assert!(!has_text(&svg, "p50 host"));
        assert!(has_text(&svg, "p99 host"));
        assert!(!svg.contains("NaN\""), "a NaN coordinate");
    }

    #[test]
    fn one_sample_draws() {
        let mut report = synthetic(100, 2, 1);
        report.timeline.samples[0].hosts_done = 100;
        let svg = render_svg(&report).unwrap();
        assert_well_formed_svg(&svg);
        assert!(has_text(&svg, "100 hosts in 2 dcs"));
        assert!(!svg.contains("NaN"));
    }

    #[test]
    fn ten_thousand_hosts_label_in_thousands() {
        let svg = render_svg(&synthetic(10_000, 3, 400)).unwrap();
        assert_well_formed_svg(&svg);
        assert!(has_text(&svg, "10k hosts in 3 dcs"));
        let labels = texts(&svg);
        assert!(labels.iter().any(|t| t == "10k"), "no 10k tick: {labels:?}");
        assert!(
            !labels
                .iter()
                .any(|t| t.len() >= 4 && t.parse::<f64>().is_ok()),
            "a long plain number among the labels: {labels:?}"
        );
    }

    #[test]
    fn an_unwritable_path_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no-such-dir").join("run.svg");
        let err = draw_svg(&synthetic(10, 1, 10), &path).unwrap_err();
        let line = err.to_string();
        assert!(line.contains(&path.display().to_string()), "{line}");
        assert!(!line.contains('\n'), "{line}");
        assert!(matches!(err, PlotError::Write { .. }));
    }

    #[test]
    fn the_rate_axis_goes_logarithmic_when_classes_differ_by_far() {
        // 10 000 hosts at 25 Gbit/s against one origin at 25 Gbit/s.
        let wide = rate_axis(&synthetic(10_000, 3, 100).timeline.samples);
        let RateAxis::Log { floor, max } = wide else {
            panic!("{wide:?}")
        };
        assert!(floor <= 2.5 && floor > 0.0, "{floor}");
        assert!(max >= 10_000.0 * 25.0 * 0.95, "{max}");
        // Every class within a factor of a few: linear, from zero.
        let close = vec![Sample {
            t_s: 1.0,
            hosts_done: 0,
            host_in_bps: 4e9 / 8.0,
            rack_in_bps: 2e9 / 8.0,
            wan_in_bps: 0.0,
            origin_out_bps: 1e9 / 8.0,
        }];
        assert_eq!(rate_axis(&close), RateAxis::Linear { max: 4.0 * 1.08 });
        assert_eq!(rate_axis(&[]), RateAxis::Linear { max: 1.0 });
        // A class a billion times smaller than the rest lies on the floor, six decades
        // under the top.
        let tiny = vec![Sample {
            origin_out_bps: 1.0,
            ..close[0].clone()
        }];
        assert_eq!(
            rate_axis(&tiny),
            RateAxis::Log {
                floor: 1e-5,
                max: 10.0
            }
        );
    }

    #[test]
    fn engineering_format() {
        for (value, text) in [
            (0.0, "0"),
            (2500.0, "2.5k"),
            (10_000.0, "10k"),
            (250_000.0, "250k"),
            (1_500_000.0, "1.5M"),
            (999.9, "1k"),
            (42.0, "42"),
            (12.5, "12.5"),
            (0.25, "0.25"),
            (0.001, "0.001"),
            (-2000.0, "-2k"),
        ] {
            assert_eq!(eng(value), text, "{value}");
        }
        assert_eq!(binary_size(100 << 30), "100 GiB");
        assert_eq!(binary_size(1536 << 20), "1.5 GiB");
        assert_eq!(binary_size(0), "0 B");
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(9998), "9 998");
        assert_eq!(grouped(1_234_567), "1 234 567");
    }

    fn bytes_under(samples: &[Sample], first_start_s: f64, rate: fn(&Sample) -> f64) -> f64 {
        let mut from = first_start_s;
        let mut total = 0.0;
        for s in samples {
            total += rate(s) * (s.t_s - from);
            from = s.t_s;
        }
        total
    }

    #[test]
    fn long_timelines_are_merged_keeping_the_bytes() {
        let samples: Vec<Sample> = (1..=10_007u64)
            .map(|i| Sample {
                t_s: i as f64 * 0.01,
                hosts_done: i / 10,
                host_in_bps: (i % 7) as f64 * 1e9,
                rack_in_bps: (i % 13) as f64 * 1e8,
                wan_in_bps: if i % 2 == 0 { 5e8 } else { 0.0 },
                origin_out_bps: 3e9,
            })
            .collect();
        let merged = coarsen(&samples, 0.0, MAX_STEPS);
        assert!(
            merged.len() <= MAX_STEPS && merged.len() > MAX_STEPS / 2,
            "{}",
            merged.len()
        );
        assert_eq!(merged.last().unwrap().t_s, samples.last().unwrap().t_s);
        assert_eq!(merged.last().unwrap().hosts_done, 1000);
        for class in &LINK_CLASSES {
            let before = bytes_under(&samples, 0.0, class.rate);
            let after = bytes_under(&merged, 0.0, class.rate);
            assert!(
                (before - after).abs() <= before * 1e-9,
                "{}: {before} {after}",
                class.label
            );
        }
        assert_eq!(
            coarsen(&samples[..10], 0.0, MAX_STEPS),
            samples[..10].to_vec()
        );

        let mut report = synthetic(1000, 2, 1);
        report.timeline.samples = samples;
        let svg = render_svg(&report).unwrap();
        assert_well_formed_svg(&svg);
        assert!(svg.len() < 1 << 20, "{} bytes", svg.len());
    }
}
