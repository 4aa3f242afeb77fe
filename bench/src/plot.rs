//! SVG plots of a report: throughput by mode, latency by mode, and
//! connection rate against the number of published ports.

use std::path::Path;

use anyhow::anyhow;
use plotters::prelude::*;
use serde_json::Value;

use crate::report::EXTERNAL;

const SIZE: (u32, u32) = (860, 480);
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

/// Grouped bars: one group per mode, one bar per metric (medians, with a
/// min–max whisker).
fn bars(r: &Value, file: &Path, title: &str, unit: &str, metrics: &[(&str, &str)]) -> anyhow::Result<()> {
    let modes: Vec<&str> = EXTERNAL.iter().copied().filter(|m| !r["modes"][*m].is_null()).collect();
    let get = |m: &str, k: &str, f: &str| r["modes"][m][k][f].as_f64().unwrap_or(0.0);
    let top =
        modes.iter().flat_map(|m| metrics.iter().map(move |(k, _)| get(m, k, "max"))).fold(0.0, f64::max);
    let root = SVGBackend::new(file, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..modes.len().max(1) as f64, 0f64..(top * 1.15).max(1e-9))
        .map_err(err)?;
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
    for (j, (k, label)) in metrics.iter().enumerate() {
        let color = COLORS[j % COLORS.len()];
        let rects = modes.iter().enumerate().map(|(i, m)| {
            let x0 = i as f64 + 0.1 + j as f64 * w;
            Rectangle::new([(x0, 0.0), (x0 + w * 0.9, get(m, k, "median"))], color.filled())
        });
        chart
            .draw_series(rects)
            .map_err(err)?
            .label(*label)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
        let whiskers = modes.iter().enumerate().map(|(i, m)| {
            let x = i as f64 + 0.1 + j as f64 * w + w * 0.45;
            PathElement::new(vec![(x, get(m, k, "min")), (x, get(m, k, "max"))], BLACK)
        });
        chart.draw_series(whiskers).map_err(err)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
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
    let xmax = series.iter().flat_map(|(_, p)| p.iter().map(|(x, _)| *x)).fold(1.0, f64::max);
    let ymax = series.iter().flat_map(|(_, p)| p.iter().map(|(_, y)| *y)).fold(1.0, f64::max);
    let root = SVGBackend::new(file, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("New connections/s vs published ports", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..xmax * 1.05, 0f64..ymax * 1.15)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("published ports")
        .y_desc("conn/s")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()
        .map_err(err)?;
    for (j, (mode, pts)) in series.iter().enumerate() {
        let color = COLORS[j % COLORS.len()];
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            .map_err(err)?
            .label(mode.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 14, y)], color.stroke_width(2)));
        chart.draw_series(pts.iter().map(|p| Circle::new(*p, 4, color.filled()))).map_err(err)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// Draws every plot into `out`; returns the files written.
pub fn all(r: &Value, out: &Path) -> anyhow::Result<Vec<String>> {
    let files = [out.join("throughput.svg"), out.join("latency.svg"), out.join("scaling.svg")];
    bars(
        r,
        &files[0],
        "TCP throughput through a published port",
        "Gbit/s",
        &[("tcp_1_stream", "1 stream"), ("tcp_4_streams", "4 streams")],
    )?;
    bars(r, &files[1], "Request/response latency (1 byte)", "µs", &[("rr_p50", "p50"), ("rr_p99", "p99")])?;
    scaling(r, &files[2])?;
    Ok(files.iter().map(|f| f.display().to_string()).collect())
}
