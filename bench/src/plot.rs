//! SVG plots of a suite's results (`--plot DIR`, `sigmabench report`).
//!
//! [`render_svg`] draws one picture per suite with `plotters` (SVG backend, no system fonts
//! needed: the text is left to the SVG viewer):
//!
//! - a title (suite, start time, quick or full, rounds, cores, kernel) and a legend;
//! - one horizontal band per case, in the order the cases first appear in the rows, with one
//!   line per system in row order;
//! - on the left of a band, each system's latency: p50 (●), p99 (▲) and p99.9 (✕) in µs on a
//!   logarithmic axis, joined by a p50–p99.9 bar, with the three figures printed beside the
//!   panel. Throughput cases print the system's ops/s before its name. A dashed vertical line
//!   marks the floor system's p50, labelled `floor (<system>) p50`: the floor system is the row
//!   whose `waits` is `floor`, else `sigma-pingpong` in the `rpc` suite, else there is none;
//! - on the right of a band, CPU µs per operation as horizontal bars on a linear axis, client
//!   and server stacked where both are known; rows without CPU figures have no bar.
//!
//! Colours say how a system waits (spin, park, floor, not stated); σ's own systems (names
//! starting with `sigma`) have bold labels and darker colours. Rows with an error are labelled
//! `(error)`, show their message and have no marks. The output is deterministic: the same
//! [`Doc`] gives byte-identical SVG.

use std::path::Path;

use anyhow::{Context, Result};
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::report::{Doc, Row};

/// Picture width, px.
const WIDTH: u32 = 1400;
/// Title strip height.
const TITLE_H: u32 = 40;
/// Legend strip height (two lines).
const LEGEND_H: u32 = 58;
/// Space above each band.
const BAND_GAP: u32 = 14;
/// Band header: case name and column headings (line 1), ops/s heading and floor label (line 2).
const HEAD_H: u32 = 40;
/// One system's line.
const ROW_H: u32 = 22;
/// x axis tick labels under each panel.
const AXIS_H: u32 = 26;
/// Space under the last band.
const BOTTOM_H: u32 = 14;
/// System labels left of the latency plot (ops/s column, name, colour swatch).
const LABEL_W: u32 = 280;
/// Right edge of the ops/s column.
const OPS_X: i32 = 90;
/// The p50 / p99 / p99.9 figures right of the latency plot.
const NUM_W: u32 = 150;
/// Latency panel: labels, plot, figures. The CPU panel takes the rest.
const LAT_W: u32 = 990;

const FONT: &str = "sans-serif";
const INK: RGBColor = RGBColor(30, 30, 30);
const TEXT: RGBColor = RGBColor(60, 60, 60);
const MUTED: RGBColor = RGBColor(110, 110, 110);
const AXIS: RGBColor = RGBColor(150, 150, 150);
const GRID_BOLD: RGBColor = RGBColor(215, 215, 215);
const GRID_LIGHT: RGBColor = RGBColor(238, 238, 238);
const STRIPE: RGBColor = RGBColor(246, 247, 249);
const RULE: RGBColor = RGBColor(190, 190, 190);
const ERROR: RGBColor = RGBColor(185, 30, 30);

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// Writes the suite's plot to `path` (an SVG file).
pub fn write_svg(doc: &Doc, path: &Path) -> Result<()> {
    let svg = render_svg(doc)?;
    std::fs::write(path, svg).with_context(|| format!("writing {}", path.display()))
}

/// The SVG text (deterministic: the same Doc gives byte-identical output; no timestamps or
/// random ids).
pub fn render_svg(doc: &Doc) -> Result<String> {
    let cases = cases(&doc.rows);
    let floor = floor_system(doc);
    let bands_h: u32 = cases.iter().map(|(_, rows)| band_height(rows.len())).sum();
    let height = TITLE_H + LEGEND_H + bands_h.max(40) + BOTTOM_H;

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE)?;
        text(
            &root,
            &title(doc),
            (14, TITLE_H as i32 / 2 + 2),
            &style(18.0, INK, true, HPos::Left),
        )?;
        draw_legend(&root, doc, floor.is_some())?;
        let mut top = (TITLE_H + LEGEND_H) as i32;
        for (case, rows) in &cases {
            let floor_row = floor.and_then(|f| rows.iter().copied().find(|r| r.system == f));
            draw_band(
                &root,
                &Band {
                    case,
                    rows,
                    floor: floor_row,
                    top,
                },
            )?;
            top += band_height(rows.len()) as i32;
        }
        if cases.is_empty() {
            text(
                &root,
                "no results",
                (14, top + 20),
                &style(14.0, MUTED, false, HPos::Left),
            )?;
        }
        root.present()?;
    }
    Ok(svg)
}

/// The title line.
fn title(doc: &Doc) -> String {
    format!(
        "sigmabench {} — {}, {}, {} round{}, {} cores, kernel {}",
        doc.suite,
        doc.started_at,
        if doc.quick { "quick" } else { "full" },
        doc.rounds,
        if doc.rounds == 1 { "" } else { "s" },
        doc.host.cores,
        doc.host.kernel
    )
}

/// Cases in order of first appearance, each with its rows in row order.
fn cases(rows: &[Row]) -> Vec<(&str, Vec<&Row>)> {
    let mut out: Vec<(&str, Vec<&Row>)> = Vec::new();
    for r in rows {
        match out.iter_mut().find(|(c, _)| *c == r.case) {
            Some((_, v)) => v.push(r),
            None => out.push((&r.case, vec![r])),
        }
    }
    out
}

/// The system whose p50 is the floor line: the one that waits `floor`, else `vfork-exec` in the
/// `spawn` suites, else `sigma-pingpong` in the `rpc` suite.
fn floor_system(doc: &Doc) -> Option<&str> {
    if let Some(r) = doc.rows.iter().find(|r| r.waits.as_deref() == Some("floor")) {
        return Some(&r.system);
    }
    if doc.suite == "spawn" || doc.suite == "spawn-rate" {
        return doc
            .rows
            .iter()
            .find(|r| r.system == crate::suites::spawn::FLOOR)
            .map(|r| r.system.as_str());
    }
    if doc.suite == "rpc" {
        return doc
            .rows
            .iter()
            .find(|r| r.system == "sigma-pingpong")
            .map(|r| r.system.as_str());
    }
    None
}

fn band_height(systems: usize) -> u32 {
    BAND_GAP + HEAD_H + systems.max(1) as u32 * ROW_H + AXIS_H
}

fn is_sigma(r: &Row) -> bool {
    r.system.starts_with("sigma")
}

/// The colour of a system's marks: by how it waits, darker for σ's own systems.
fn colour(waits: Option<&str>, sigma: bool) -> RGBColor {
    match (waits, sigma) {
        (Some("spin"), false) => RGBColor(240, 145, 40),
        (Some("spin"), true) => RGBColor(170, 80, 0),
        (Some("park"), false) => RGBColor(95, 150, 225),
        (Some("park"), true) => RGBColor(20, 60, 150),
        (Some("floor"), false) => RGBColor(70, 170, 90),
        (Some("floor"), true) => RGBColor(15, 100, 40),
        (_, false) => RGBColor(150, 150, 150),
        (_, true) => RGBColor(45, 45, 45),
    }
}

fn row_colour(r: &Row) -> RGBColor {
    colour(r.waits.as_deref(), is_sigma(r))
}

/// `c` mixed half-way to white (the server share of a CPU bar).
fn lighter(c: RGBColor) -> RGBColor {
    let mix = |v: u8| ((u16::from(v) + 255) / 2) as u8;
    RGBColor(mix(c.0), mix(c.1), mix(c.2))
}

/// A text style of `px` pixels (plotters writes `size / 1.24` into the SVG).
fn style(px: f64, colour: RGBColor, bold: bool, h: HPos) -> TextStyle<'static> {
    let font = (FONT, px * 1.24).into_font();
    let font = if bold { font.style(FontStyle::Bold) } else { font };
    font.color(&colour).pos(Pos::new(h, VPos::Center))
}

fn text(root: &Area, s: &str, at: (i32, i32), st: &TextStyle) -> Result<()> {
    root.draw(&Text::new(s.to_string(), at, st.clone()))?;
    Ok(())
}

/// A generous width of `s` at `px` pixels in a common sans-serif face (for placing items one
/// after another; the SVG leaves the real font to the viewer).
fn text_width(s: &str, px: f64, bold: bool) -> i32 {
    let em = if bold { 0.68 } else { 0.6 };
    (s.chars().count() as f64 * px * em).ceil() as i32
}

/// Three significant figures (two decimals at most).
fn sig3(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or("—".to_string(), sig3)
}

fn fmt_rate(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2} M/s", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1} k/s", x / 1e3)
    } else {
        format!("{x:.0} /s")
    }
}

/// An axis tick: at most three decimals, trailing zeros dropped.
fn fmt_tick(v: &f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The drawn latency figures of a row (positive, finite), in order p50, p99, p99.9.
fn latencies(r: &Row) -> [Option<f64>; 3] {
    let ok = |v: Option<f64>| v.filter(|x| x.is_finite() && *x > 0.0);
    if r.error.is_some() {
        return [None; 3];
    }
    [ok(r.p50_us), ok(r.p99_us), ok(r.p999_us)]
}

/// The CPU figures of a row: the total and, when both are known, (client, server).
fn cpu(r: &Row) -> Option<(f64, Option<(f64, f64)>)> {
    if r.error.is_some() {
        return None;
    }
    let split = match (r.client_cpu_us_per_op, r.server_cpu_us_per_op) {
        (Some(c), Some(s)) if c >= 0.0 && s >= 0.0 => Some((c, s)),
        _ => None,
    };
    let total = r.cpu_us_per_op.or(split.map(|(c, s)| c + s))?;
    (total.is_finite() && total >= 0.0).then_some((total, split))
}

/// The 1-2-5 steps `m·10^e` from the decade below `lo` to the decade above `hi`.
fn steps(lo: f64, hi: f64, mantissas: &[f64]) -> Vec<f64> {
    let (e0, e1) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    (e0..=e1)
        .flat_map(|e| mantissas.iter().map(move |m| m * 10f64.powi(e)))
        .collect()
}

/// The latency axis: from a 1-2-5 step below the smallest figure to one above the largest.
fn lat_range(rows: &[&Row], floor: Option<f64>) -> (f64, f64) {
    let vals = rows.iter().flat_map(|r| latencies(r)).flatten().chain(floor);
    let (lo, hi) = vals.fold((f64::INFINITY, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if !lo.is_finite() {
        return (1.0, 1000.0);
    }
    let (lo, hi) = (lo / 1.2, hi * 1.2);
    let all = steps(lo, hi, &[1.0, 2.0, 5.0]);
    let lo = all.iter().copied().rfind(|s| *s <= lo).unwrap_or(lo);
    let hi = all.iter().copied().find(|s| *s >= hi).unwrap_or(hi);
    (lo, hi.max(lo * 10.0))
}

/// One case's band.
struct Band<'a> {
    case: &'a str,
    rows: &'a [&'a Row],
    floor: Option<&'a Row>,
    top: i32,
}

fn draw_band(root: &Area, b: &Band) -> Result<()> {
    let n = b.rows.len();
    let head = b.top + BAND_GAP as i32;
    let line1 = head + 12;
    let line2 = head + HEAD_H as i32 - 10;
    let body_top = head + HEAD_H as i32;
    let body_h = n.max(1) as u32 * ROW_H + AXIS_H;
    let plot_left = LABEL_W as i32;
    let plot_right = (LAT_W - NUM_W) as i32;
    let row_y = |i: usize| body_top + i as i32 * ROW_H as i32 + ROW_H as i32 / 2;
    let throughput = b.rows.iter().any(|r| r.ops_per_s.is_some());
    let has_cpu = b.rows.iter().any(|r| cpu(r).is_some());
    let split = b.rows.iter().any(|r| cpu(r).is_some_and(|(_, s)| s.is_some()));

    // Rule between bands, header.
    root.draw(&PathElement::new(
        vec![(8, b.top + 4), (WIDTH as i32 - 8, b.top + 4)],
        RULE,
    ))?;
    text(root, b.case, (14, line1), &style(15.0, INK, true, HPos::Left))?;
    let head_style = style(12.0, MUTED, false, HPos::Left);
    text(root, "latency, µs (log scale)", (plot_left, line1), &head_style)?;
    text(root, "p50 / p99 / p99.9 µs", (plot_right + 12, line1), &head_style)?;
    let cpu_head = if split {
        "CPU µs per op (client + server)"
    } else {
        "CPU µs per op"
    };
    text(root, cpu_head, (LAT_W as i32 + 10, line1), &head_style)?;
    if throughput {
        text(root, "ops/s", (OPS_X, line2), &style(12.0, MUTED, false, HPos::Right))?;
    }

    // Zebra stripes across the whole band so a line can be followed from label to CPU bar.
    for i in (1..n).step_by(2) {
        let y0 = body_top + i as i32 * ROW_H as i32;
        root.draw(&Rectangle::new(
            [(8, y0), (WIDTH as i32 - 8, y0 + ROW_H as i32)],
            STRIPE.filled(),
        ))?;
    }

    // System labels, ops/s, colour swatches, figures.
    for (i, r) in b.rows.iter().enumerate() {
        let y = row_y(i);
        let (label, colour, bold) = if r.error.is_some() {
            (format!("{} (error)", r.system), ERROR, is_sigma(r))
        } else {
            (r.system.clone(), if is_sigma(r) { INK } else { TEXT }, is_sigma(r))
        };
        text(
            root,
            &label,
            (plot_left - 22, y),
            &style(13.0, colour, bold, HPos::Right),
        )?;
        let swatch = [(plot_left - 16, y - 5), (plot_left - 6, y + 5)];
        if r.error.is_some() {
            root.draw(&Rectangle::new(swatch, ERROR.stroke_width(1)))?;
        } else {
            root.draw(&Rectangle::new(swatch, row_colour(r).filled()))?;
        }
        if let Some(ops) = r.ops_per_s.filter(|_| r.error.is_none()) {
            text(root, &fmt_rate(ops), (OPS_X, y), &style(12.0, TEXT, bold, HPos::Right))?;
        }
        if r.error.is_none() {
            let figures = format!("{} / {} / {}", fmt_opt(r.p50_us), fmt_opt(r.p99_us), fmt_opt(r.p999_us));
            text(
                root,
                &figures,
                (plot_right + 12, y),
                &style(12.0, TEXT, false, HPos::Left),
            )?;
        }
    }

    draw_latency(root, b, body_top, body_h, line2)?;
    if has_cpu {
        draw_cpu(root, b, body_top, body_h)?;
    } else {
        let y = body_top + (n.max(1) as u32 * ROW_H) as i32 / 2;
        text(
            root,
            "no CPU figures",
            (LAT_W as i32 + 10, y),
            &style(12.0, MUTED, false, HPos::Left),
        )?;
    }
    Ok(())
}

/// The latency panel of a band: markers on a log axis and the floor line.
fn draw_latency(root: &Area, b: &Band, body_top: i32, body_h: u32, label_y: i32) -> Result<()> {
    let n = b.rows.len().max(1) as f64;
    let floor_p50 = b.floor.and_then(|r| latencies(r)[0]);
    let (lo, hi) = lat_range(b.rows, floor_p50);
    let decades = (hi / lo).log10();
    let bold: &[f64] = if decades > 4.5 { &[1.0] } else { &[1.0, 2.0, 5.0] };
    let within = |v: &f64| *v >= lo * 0.999 && *v <= hi * 1.001;
    let bold_points: Vec<f64> = steps(lo, hi, bold).into_iter().filter(within).collect();
    let light_points: Vec<f64> = steps(lo, hi, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0])
        .into_iter()
        .filter(within)
        .collect();

    let area = root.clone().shrink((0, body_top), (LAT_W, body_h));
    let x_axis = (lo..hi)
        .log_scale()
        .with_key_points(bold_points)
        .with_light_points(light_points);
    let mut chart = ChartBuilder::on(&area)
        .margin_right(NUM_W)
        .y_label_area_size(LABEL_W)
        .x_label_area_size(AXIS_H)
        .build_cartesian_2d(x_axis, 0.0..n)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        .x_label_formatter(&fmt_tick)
        .label_style(style(11.0, MUTED, false, HPos::Center))
        .bold_line_style(GRID_BOLD)
        .light_line_style(GRID_LIGHT)
        .axis_style(AXIS)
        .draw()?;

    let plot = chart.plotting_area();
    for (i, r) in b.rows.iter().enumerate() {
        let y = n - i as f64 - 0.5;
        if let Some(e) = &r.error {
            let msg: String = e.replace('\n', " ").chars().take(90).collect();
            plot.draw(&Text::new(
                format!("error: {msg}"),
                (lo, y),
                style(11.5, ERROR, false, HPos::Left),
            ))?;
            continue;
        }
        let c = row_colour(r);
        let [p50, p99, p999] = latencies(r);
        let drawn: Vec<f64> = [p50, p99, p999].into_iter().flatten().collect();
        if let (Some(a), Some(z)) = (drawn.first(), drawn.last()) {
            plot.draw(&PathElement::new(vec![(*a, y), (*z, y)], c.stroke_width(2)))?;
        }
        if let Some(v) = p50 {
            plot.draw(&Circle::new((v, y), 5, c.filled()))?;
        }
        if let Some(v) = p99 {
            plot.draw(&TriangleMarker::new((v, y), 6, c.filled()))?;
        }
        if let Some(v) = p999 {
            plot.draw(&Cross::new((v, y), 5, c.stroke_width(2)))?;
        }
    }

    if let (Some(f), Some(row)) = (floor_p50, b.floor) {
        let c = row_colour(row);
        plot.draw(&DashedPathElement::new(vec![(f, 0.0), (f, n)], 6, 4, c.stroke_width(2)))?;
        let (px, top) = chart.backend_coord(&(f, n));
        root.draw(&DashedPathElement::new(
            vec![(px, label_y - 6), (px, top)],
            4,
            3,
            c.stroke_width(2),
        ))?;
        let label = format!("floor ({}) p50 {} µs", row.system, sig3(f));
        let right_room = (LAT_W - NUM_W) as i32 - px;
        let st = if right_room > text_width(&label, 12.0, true) + 8 {
            (px + 6, style(12.0, c, true, HPos::Left))
        } else {
            (px - 6, style(12.0, c, true, HPos::Right))
        };
        text(root, &label, (st.0, label_y), &st.1)?;
    }
    Ok(())
}

/// The CPU panel of a band: horizontal bars, client + server stacked where both are known.
fn draw_cpu(root: &Area, b: &Band, body_top: i32, body_h: u32) -> Result<()> {
    let n = b.rows.len().max(1) as f64;
    let max = b
        .rows
        .iter()
        .filter_map(|r| cpu(r))
        .map(|(t, s)| s.map_or(t, |(c, s)| t.max(c + s)))
        .fold(0.0, f64::max);
    // Room right of the longest bar for its figures.
    let hi = if max > 0.0 { max * 1.7 } else { 1.0 };
    let area = root.clone().shrink((LAT_W, body_top), (WIDTH - LAT_W, body_h));
    let mut chart = ChartBuilder::on(&area)
        .margin_left(10)
        .margin_right(24)
        .x_label_area_size(AXIS_H)
        .build_cartesian_2d(0.0..hi, 0.0..n)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        .x_labels(6)
        .x_max_light_lines(1)
        .x_label_formatter(&fmt_tick)
        .label_style(style(11.0, MUTED, false, HPos::Center))
        .bold_line_style(GRID_BOLD)
        .light_line_style(GRID_LIGHT)
        .axis_style(AXIS)
        .draw()?;

    let plot = chart.plotting_area();
    for (i, r) in b.rows.iter().enumerate() {
        let Some((total, split)) = cpu(r) else { continue };
        let y = n - i as f64 - 0.5;
        let (y0, y1) = (y - 0.32, y + 0.32);
        let c = row_colour(r);
        let (end, label) = match split {
            Some((client, server)) => {
                plot.draw(&Rectangle::new([(0.0, y0), (client, y1)], c.filled()))?;
                plot.draw(&Rectangle::new(
                    [(client, y0), (client + server, y1)],
                    lighter(c).filled(),
                ))?;
                (
                    client + server,
                    format!("{} ({} + {})", sig3(total), sig3(client), sig3(server)),
                )
            }
            None => {
                plot.draw(&Rectangle::new([(0.0, y0), (total, y1)], c.filled()))?;
                (total, sig3(total))
            }
        };
        let (px, py) = chart.backend_coord(&(end.max(total), y));
        text(root, &label, (px + 5, py), &style(11.5, TEXT, is_sigma(r), HPos::Left))?;
    }
    Ok(())
}

/// The legend under the title: markers, CPU bar parts, floor line, colours.
fn draw_legend(root: &Area, doc: &Doc, has_floor: bool) -> Result<()> {
    let y1 = TITLE_H as i32 + 14;
    let y2 = y1 + 26;
    let px = 12.5;
    let label = style(px, TEXT, false, HPos::Left);
    let heading = style(px, INK, true, HPos::Left);
    let mark = RGBColor(80, 80, 80);
    // Writes `s` at `x` and returns where the next item starts.
    let put = |s: &str, x: i32, y: i32, st: &TextStyle| -> Result<i32> {
        text(root, s, (x, y), st)?;
        let bold = matches!(st.font.get_style(), FontStyle::Bold);
        Ok(x + text_width(s, px, bold) + 10)
    };

    let mut x = put("Latency:", 14, y1, &heading)?;
    root.draw(&PathElement::new(vec![(x, y1), (x + 46, y1)], mark.stroke_width(2)))?;
    x = put("p50 … p99.9", x + 52, y1, &label)?;
    root.draw(&Circle::new((x + 5, y1), 5, mark.filled()))?;
    x = put("p50", x + 14, y1, &label)?;
    root.draw(&TriangleMarker::new((x + 5, y1), 6, mark.filled()))?;
    x = put("p99", x + 14, y1, &label)?;
    root.draw(&Cross::new((x + 5, y1), 5, mark.stroke_width(2)))?;
    x = put("p99.9", x + 14, y1, &label)?;
    if has_floor {
        root.draw(&DashedPathElement::new(
            vec![(x + 8, y1 - 8), (x + 8, y1 + 8)],
            4,
            3,
            mark.stroke_width(2),
        ))?;
        x = put("the floor system's p50", x + 16, y1, &label)?;
    }
    let any_cpu = doc.rows.iter().any(|r| cpu(r).is_some());
    let split = doc.rows.iter().any(|r| cpu(r).is_some_and(|(_, s)| s.is_some()));
    if any_cpu {
        x = put("CPU:", x + 24, y1, &heading)?;
    }
    if split {
        root.draw(&Rectangle::new([(x, y1 - 6), (x + 18, y1 + 6)], mark.filled()))?;
        x = put("client", x + 24, y1, &label)?;
        root.draw(&Rectangle::new([(x, y1 - 6), (x + 18, y1 + 6)], lighter(mark).filled()))?;
        x = put("server", x + 24, y1, &label)?;
    } else if any_cpu {
        root.draw(&Rectangle::new([(x, y1 - 6), (x + 18, y1 + 6)], mark.filled()))?;
        x = put("µs per operation", x + 24, y1, &label)?;
    }
    if doc.rows.iter().any(|r| r.error.is_some()) {
        put("(error) = not measured", x + 24, y1, &label)?;
    }

    let mut x = put("Colour = how the system waits:", 14, y2, &heading)?;
    let kinds: [(Option<&str>, &str); 4] = [
        (Some("spin"), "spins, then parks"),
        (Some("park"), "parks"),
        (Some("floor"), "floor: never parks"),
        (None, "not stated"),
    ];
    let known = |w: Option<&str>| matches!(w, Some("spin" | "park" | "floor"));
    for (waits, what) in kinds {
        let present = doc.rows.iter().any(|r| match waits {
            Some(w) => r.waits.as_deref() == Some(w),
            None => !known(r.waits.as_deref()),
        });
        if !present {
            continue;
        }
        root.draw(&Rectangle::new(
            [(x, y2 - 6), (x + 12, y2 + 6)],
            colour(waits, false).filled(),
        ))?;
        root.draw(&Rectangle::new(
            [(x + 14, y2 - 6), (x + 26, y2 + 6)],
            colour(waits, true).filled(),
        ))?;
        x = put(what, x + 32, y2, &label)?;
    }
    let sigma = style(px, INK, true, HPos::Left);
    put(
        "bold label, darker colour (right swatch): σ's own systems (sigma…)",
        x + 14,
        y2,
        &sigma,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Host;

    fn doc(suite: &str, rows: Vec<Row>) -> Doc {
        Doc {
            suite: suite.into(),
            schema: 1,
            quick: true,
            host: Host {
                cores: 2,
                kernel: "6.18.0-test".into(),
                io_uring: true,
                cgroup: "v2".into(),
                loadavg_1m: Some(0.5),
            },
            started_at: "2026-11-26T16:21:09Z".into(),
            rounds: 1,
            elapsed_s: 1.0,
            rows,
        }
    }

    fn row(case: &str, system: &str, p50: f64) -> Row {
        Row {
            case: case.into(),
            system: system.into(),
            samples: Some(3000),
            mean_us: Some(p50 * 1.1),
            sd_us: None,
            p50_us: Some(p50),
            p99_us: Some(p50 * 2.0),
            p999_us: Some(p50 * 6.0),
            max_us: Some(p50 * 10.0),
            ops_per_s: None,
            cpu_us_per_op: None,
            cores_busy: None,
            client_cpu_us_per_op: None,
            server_cpu_us_per_op: None,
            waits: None,
            breakdown: None,
            note: "test".into(),
            error: None,
        }
    }

    fn with_cpu(mut r: Row, client: f64, server: f64) -> Row {
        r.cpu_us_per_op = Some(client + server);
        r.client_cpu_us_per_op = Some(client);
        r.server_cpu_us_per_op = Some(server);
        r.cores_busy = Some(1.5);
        r
    }

    fn waits(mut r: Row, w: &str) -> Row {
        r.waits = Some(w.into());
        r
    }

    /// Like the `peers` suite: waits, client/server CPU, a throughput case, a floor system.
    fn peers() -> Doc {
        let systems = [
            ("sigma", "spin", 7.6),
            ("tokio", "park", 65.0),
            ("tokio-spin", "spin", 7.8),
            ("spin-floor", "floor", 6.4),
        ];
        let mut rows = Vec::new();
        for case in ["pingpong-64B", "pipelined-64B"] {
            for (s, w, p50) in systems {
                let mut r = waits(with_cpu(row(case, s, p50), p50, p50 * 1.1), w);
                if case == "pipelined-64B" {
                    r.ops_per_s = Some(3_788_718.0);
                }
                rows.push(r);
            }
        }
        doc("peers", rows)
    }

    /// Like the `rpc` suite: no waits, `sigma-pingpong` as the floor, an error row.
    fn rpc() -> Doc {
        let mut rows = Vec::new();
        for (s, p50) in [("sigma", 9.0), ("sigma-pingpong", 7.9), ("tonic", 103.8)] {
            rows.push(with_cpu(row("rpc-seq-64B", s, p50), p50, p50));
        }
        rows.push(Row::failed(
            "rpc-paced-64B",
            "sigma",
            "client: 3000 call(s) unanswered after 5s".into(),
            "paced".into(),
        ));
        rows.push(with_cpu(row("rpc-paced-64B", "tonic", 88.0), 200.0, 33.7));
        doc("rpc", rows)
    }

    /// Like an older `ns` file: no CPU fields, ops/s everywhere, no floor.
    fn ns() -> Doc {
        let mut rows = Vec::new();
        for case in ["stat", "read-4KiB", "watch-notify"] {
            for (s, p50) in [("sigma-embedded", 16.5), ("sigma-etcd", 497.0), ("etcd-raw", 404.0)] {
                let mut r = row(case, s, p50);
                if case != "watch-notify" {
                    r.ops_per_s = Some(1e6 / p50);
                }
                rows.push(r);
            }
        }
        doc("ns", rows)
    }

    #[test]
    fn renders_every_case_and_system() {
        for d in [peers(), rpc(), ns()] {
            let svg = render_svg(&d).unwrap();
            assert!(svg.contains("<svg"), "{}", d.suite);
            assert!(svg.contains(&format!(
                "sigmabench {} — 2026-11-26T16:21:09Z, quick, 1 round, 2 cores",
                d.suite
            )));
            for r in &d.rows {
                assert!(svg.contains(&format!("\n{}\n", r.case)), "{} {}", d.suite, r.case);
                assert!(svg.contains(&r.system), "{} {}", d.suite, r.system);
            }
        }
    }

    #[test]
    fn floor_label_only_when_a_floor_exists() {
        let svg = render_svg(&peers()).unwrap();
        assert_eq!(svg.matches("floor (spin-floor) p50").count(), 2, "one per case");
        let svg = render_svg(&rpc()).unwrap();
        assert!(svg.contains("floor (sigma-pingpong) p50"));
        let svg = render_svg(&ns()).unwrap();
        assert!(!svg.contains("floor ("));
        let mut d = rpc();
        d.suite = "other".into();
        assert!(
            !render_svg(&d).unwrap().contains("floor ("),
            "sigma-pingpong is the floor only in rpc"
        );
    }

    #[test]
    fn error_rows_and_figures_are_labelled() {
        let svg = render_svg(&rpc()).unwrap();
        assert!(svg.contains("sigma (error)"));
        assert!(svg.contains("error: client: 3000 call(s) unanswered after 5s"));
        assert!(svg.contains("234 (200 + 33.7)"), "stacked CPU figures");
        let svg = render_svg(&peers()).unwrap();
        assert!(svg.contains("3.79 M/s"));
        assert!(render_svg(&ns()).unwrap().contains("no CPU figures"));
        // A suite of nothing but errors, or of nothing at all, still renders.
        let svg = render_svg(&doc("x", vec![Row::failed("c", "s", "why".into(), String::new())])).unwrap();
        assert!(svg.contains("s (error)"));
        assert!(render_svg(&doc("x", vec![])).unwrap().contains("no results"));
    }

    #[test]
    fn rendering_is_deterministic_and_grows_with_rows() {
        let height = |svg: &str| -> u32 {
            let at = svg.find("height=\"").unwrap() + 8;
            svg[at..].split('"').next().unwrap().parse().unwrap()
        };
        for d in [peers(), rpc(), ns()] {
            let (a, b) = (render_svg(&d).unwrap(), render_svg(&d).unwrap());
            assert_eq!(a, b, "{}", d.suite);
        }
        assert!(height(&render_svg(&peers()).unwrap()) > height(&render_svg(&rpc()).unwrap()));
    }

    #[test]
    fn write_svg_writes_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peers.svg");
        write_svg(&peers(), &path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), render_svg(&peers()).unwrap());
    }
}
