//! SVG plots of a report: throughput by mode, latency by mode (p50 and p99
//! on axes of their own), and connection rate against the number of
//! published ports (log scale, steps not measured marked). dataplane's
//! group is shaded; legends sit outside the bars; each plot says what its
//! bars and whiskers are.

use std::path::Path;

use anyhow::anyhow;
use plotters::prelude::*;
use serde_json::Value;

use crate::report::EXTERNAL;

const SIZE: (u32, u32) = (960, 500);
/// Width kept right of each chart for its legend.
const LEGEND_W: u32 = 150;
/// The shade behind dataplane's group.
const HIGHLIGHT: RGBColor = RGBColor(255, 244, 204);
const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing a plot: {e:?}")
}

/// A legend drawn right of a chart, outside its bars: (label, color).
fn legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    items: &[(String, RGBColor)],
) -> anyhow::Result<()> {
    let (w, _) = area.dim_in_pixel();
    let x = i32::try_from(w.saturating_sub(LEGEND_W) + 10).unwrap_or(0);
    for (i, (label, color)) in items.iter().enumerate() {
        let y = 60 + 24 * i32::try_from(i).unwrap_or(0);
        area.draw(&Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled())).map_err(err)?;
        area.draw(&Text::new(label.clone(), (x + 20, y - 7), ("sans-serif", 14))).map_err(err)?;
    }
    Ok(())
}

/// Height of the caption strip under a plot.
const NOTE_H: u32 = 26;

/// Splits off the caption strip at the bottom of `area`, writes `text`
/// there (what the bars and whiskers are), and returns the rest.
fn with_note<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    text: &str,
) -> anyhow::Result<DrawingArea<DB, plotters::coord::Shift>> {
    let (_, h) = area.dim_in_pixel();
    let (main, strip) = area.split_vertically(h.saturating_sub(NOTE_H));
    strip.draw(&Text::new(text.to_string(), (12, 6), ("sans-serif", 13))).map_err(err)?;
    Ok(main)
}

/// Grouped bars: one group per mode, one bar per metric (medians, with a
/// min–max whisker); dataplane's group shaded.
fn bars<DB: DrawingBackend>(
    r: &Value,
    root: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    unit: &str,
    metrics: &[(&str, &str)],
) -> anyhow::Result<()> {
    let modes: Vec<&str> = EXTERNAL.iter().copied().filter(|m| !r["modes"][*m].is_null()).collect();
    let get = |m: &str, k: &str, f: &str| r["modes"][m][k][f].as_f64().unwrap_or(0.0);
    let top =
        modes.iter().flat_map(|m| metrics.iter().map(move |(k, _)| get(m, k, "max"))).fold(0.0, f64::max);
    let (w, _) = root.dim_in_pixel();
    let (plot, side) = root.split_horizontally(w.saturating_sub(LEGEND_W));
    let mut chart = ChartBuilder::on(&plot)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(56)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..modes.len().max(1) as f64, 0f64..(top * 1.15).max(1e-9))
        .map_err(err)?;
    if let Some(i) = modes.iter().position(|m| *m == "dataplane") {
        let band = Rectangle::new([(i as f64, 0.0), (i as f64 + 1.0, top * 1.15)], HIGHLIGHT.filled());
        chart.draw_series(std::iter::once(band)).map_err(err)?;
    }
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(modes.len() * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x - i as f64 - 0.5).abs() < 0.01 {
                modes.get(i).map(|m| m.to_string()).unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc(unit)
        .draw()
        .map_err(err)?;
    let w = 0.8 / metrics.len() as f64;
    let mut items = Vec::new();
    for (j, (k, label)) in metrics.iter().enumerate() {
        let color = COLORS[j % COLORS.len()];
        let rects = modes.iter().enumerate().map(|(i, m)| {
            let x0 = i as f64 + 0.1 + j as f64 * w;
            Rectangle::new([(x0, 0.0), (x0 + w * 0.9, get(m, k, "median"))], color.filled())
        });
        chart.draw_series(rects).map_err(err)?;
        items.push((label.to_string(), color));
        let whiskers = modes.iter().enumerate().map(|(i, m)| {
            let x = i as f64 + 0.1 + j as f64 * w + w * 0.45;
            PathElement::new(vec![(x, get(m, k, "min")), (x, get(m, k, "max"))], BLACK)
        });
        chart.draw_series(whiskers).map_err(err)?;
    }
    legend(&side, &items)
}

/// New connections/s against published ports, one line per mode.
fn scaling(r: &Value, file: &Path) -> anyhow::Result<()> {
    let Some(sc) = r["scaling"].as_object() else { return Ok(()) };
    let series: Vec<(&String, Vec<(f64, f64)>)> = sc
        .iter()
        .map(|(mode, steps)| {
            let pts = steps
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| {
                    (
                        s["published_ports"].as_f64().unwrap_or(0.0),
                        s["new_connections"]["median"].as_f64().unwrap_or(0.0),
                    )
                })
                .collect();
            (mode, pts)
        })
        .collect();
    // Log scale: 0 published ports drawn at 1 (0 has no logarithm), labelled 0.
    let xmax = series.iter().flat_map(|(_, p)| p.iter().map(|(x, _)| *x)).fold(1.0, f64::max);
    let ymax = series.iter().flat_map(|(_, p)| p.iter().map(|(_, y)| *y)).fold(1.0, f64::max);
    let root = SVGBackend::new(file, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let main = with_note(
        &root,
        "Points: medians of the rounds. A cross on the axis: that mode was not measured at that step (see the report).",
    )?;
    let (plot, side) = main.split_horizontally(SIZE.0 - LEGEND_W);
    let mut chart = ChartBuilder::on(&plot)
        .caption("New connections/s vs published ports", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(56)
        .y_label_area_size(64)
        .build_cartesian_2d((1f64..xmax * 2.0).log_scale(), 0f64..ymax * 1.15)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("published ports before the measured one (log scale)")
        .y_desc("conn/s")
        .x_label_formatter(&|x| if *x < 1.5 { "0".into() } else { format!("{x:.0}") })
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()
        .map_err(err)?;
    let mut items = Vec::new();
    for (j, (mode, pts)) in series.iter().enumerate() {
        let color = if mode.as_str() == "dataplane" { BLACK } else { COLORS[j % COLORS.len()] };
        let width = if mode.as_str() == "dataplane" { 4 } else { 2 };
        let pts: Vec<(f64, f64)> = pts.iter().map(|(x, y)| (x.max(1.0), *y)).collect();
        chart.draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(width))).map_err(err)?;
        chart.draw_series(pts.iter().map(|p| Circle::new(*p, 4, color.filled()))).map_err(err)?;
        items.push((mode.to_string(), color));
    }
    // Steps a mode was not measured at: a cross on the axis, named.
    let missing: Vec<(usize, f64)> = r["unavailable"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, _)| {
            let (mode, rest) = k.split_once(" with ")?;
            let n: f64 = rest.strip_suffix(" ports")?.parse().ok()?;
            Some((items.iter().position(|(m, _)| m == mode)?, n))
        })
        .collect();
    for (i, n) in &missing {
        let color = items[*i].1;
        chart
            .draw_series(std::iter::once(Cross::new((n.max(1.0), 0.0), 6, color.stroke_width(2))))
            .map_err(err)?;
    }
    if !missing.is_empty() {
        items.push(("× not measured".into(), RGBColor(120, 120, 120)));
    }
    legend(&side, &items)?;
    root.present().map_err(err)?;
    Ok(())
}

/// Draws every plot into `out`; returns the files written.
pub fn all(r: &Value, out: &Path) -> anyhow::Result<Vec<String>> {
    let files = [out.join("throughput.svg"), out.join("latency.svg"), out.join("scaling.svg")];
    let whiskers = "Bars: medians of the rounds; whiskers: min–max over the rounds. dataplane shaded.";
    let root = SVGBackend::new(&files[0], SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    bars(
        r,
        &with_note(&root, whiskers)?,
        "TCP throughput through a published port (↑)",
        "Gbit/s",
        &[("tcp_1_stream", "1 stream"), ("tcp_4_streams", "4 streams")],
    )?;
    root.present().map_err(err)?;
    // p50 and p99 on axes of their own (p99 is several times p50).
    let root = SVGBackend::new(&files[1], (SIZE.0, SIZE.1 * 2)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (upper, lower) = with_note(&root, whiskers)?.split_vertically(SIZE.1);
    bars(r, &upper, "Request/response latency, p50 (1 byte, ↓)", "µs", &[("rr_p50", "p50")])?;
    bars(r, &lower, "Request/response latency, p99 (1 byte, ↓)", "µs", &[("rr_p99", "p99")])?;
    root.present().map_err(err)?;
    scaling(r, &files[2])?;
    Ok(files.iter().map(|f| f.display().to_string()).collect())
}
