//! SVG charts of a run: throughput and p99 latency per workload, one
//! horizontal bar per engine and case. plotters' SVG backend only, with
//! its built-in text measurement, so nothing depends on system fonts.

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::results::{Chart, Measurement, Run};

/// One colour per engine, kv-engine's first.
const COLOURS: [RGBColor; 6] = [
    RGBColor(214, 39, 40),
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Draws every chart of `run` into `out` and lists them.
pub fn draw(run: &Run, out: &Path) -> Result<Vec<Chart>> {
    let engines: Vec<&str> = run.engines.iter().map(|e| e.name.as_str()).collect();
    let mut charts = Vec::new();
    for w in &run.workloads {
        let rows: Vec<&Measurement> = run
            .results
            .iter()
            .filter(|m| m.workload == w.id && m.unit == "ops/s" && m.value.is_some())
            .collect();
        if rows.is_empty() {
            continue;
        }
        let cases = cases(&rows);
        let file = format!("{}-throughput.svg", w.id);
        let title = format!("{}: throughput (ops/s, higher is better)", w.title);
        bars(
            &out.join(&file),
            &title,
            &cases,
            &engines,
            |case, engine| find(&rows, case, engine).and_then(|m| m.value),
        )?;
        charts.push(Chart { file, title });

        if rows.iter().any(|m| m.latency_ns.is_some()) {
            let file = format!("{}-p99.svg", w.id);
            let title = format!("{}: p99 latency (µs, lower is better)", w.title);
            bars(
                &out.join(&file),
                &title,
                &cases,
                &engines,
                |case, engine| {
                    find(&rows, case, engine)
                        .and_then(|m| m.latency_ns)
                        .map(|l| l.p99 as f64 / 1000.0)
                },
            )?;
            charts.push(Chart { file, title });
        }
    }
    Ok(charts)
}

/// The row label of a measurement: its case, and its durability if any.
fn label(m: &Measurement) -> String {
    match &m.durability {
        Some(d) => format!("{} ({d})", m.case),
        None => m.case.clone(),
    }
}

fn cases(rows: &[&Measurement]) -> Vec<String> {
    let mut cases: Vec<String> = Vec::new();
    for m in rows {
        let l = label(m);
        if !cases.contains(&l) {
            cases.push(l);
        }
    }
    cases
}

fn find<'a>(rows: &[&'a Measurement], case: &str, engine: &str) -> Option<&'a Measurement> {
    rows.iter()
        .find(|m| m.engine == engine && label(m) == case)
        .copied()
}

/// Horizontal grouped bars: a group per case (top to bottom), a bar per
/// engine, each labelled with its figure.
fn bars(
    path: &Path,
    title: &str,
    cases: &[String],
    engines: &[&str],
    value: impl Fn(&str, &str) -> Option<f64>,
) -> Result<()> {
    let n = cases.len();
    let k = engines.len().max(1);
    let max = cases
        .iter()
        .flat_map(|c| engines.iter().filter_map(|e| value(c, e)))
        .fold(0.0f64, f64::max)
        .max(1e-9);
    let height = 80 + n as u32 * (14 * k as u32 + 16);
    let root = SVGBackend::new(path, (1000, height.max(240))).into_drawing_area();
    let err = |e: DrawingAreaErrorKind<_>| anyhow!("drawing {}: {e:?}", path.display());
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(330)
        .build_cartesian_2d(0f64..max * 1.25, 0f64..n as f64)
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        .x_label_formatter(&|x| si(*x))
        .draw()
        .map_err(err)?;
    // Case i is centred at n - i - 0.5, so the first case is on top; its
    // label goes left of the axis.
    let label_style =
        TextStyle::from(("sans-serif", 12).into_font()).pos(Pos::new(HPos::Right, VPos::Center));
    for (i, case) in cases.iter().enumerate() {
        let (x, y) = chart.backend_coord(&(0.0, n as f64 - i as f64 - 0.5));
        root.draw(&Text::new(case.as_str(), (x - 8, y), &label_style))
            .map_err(err)?;
    }
    let band = 0.8 / k as f64;
    for (j, engine) in engines.iter().enumerate() {
        let colour = COLOURS[j % COLOURS.len()];
        let bars: Vec<(f64, f64, f64)> = cases
            .iter()
            .enumerate()
            .filter_map(|(i, case)| {
                let top = n as f64 - i as f64 - 0.1 - j as f64 * band;
                value(case, engine).map(|v| (v, top - band, top))
            })
            .collect();
        chart
            .draw_series(
                bars.iter()
                    .map(|&(v, y0, y1)| Rectangle::new([(0.0, y0), (v, y1)], colour.filled())),
            )
            .map_err(err)?
            .label(*engine)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], colour.filled()));
        chart
            .draw_series(bars.iter().map(|&(v, y0, y1)| {
                Text::new(
                    format!(" {}", si(v)),
                    (v, (y0 + y1) / 2.0),
                    TextStyle::from(("sans-serif", 11).into_font())
                        .pos(Pos::new(HPos::Left, VPos::Center)),
                )
            }))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// 3 significant digits with an SI suffix: 1.23M, 456K, 7.89.
pub fn si(v: f64) -> String {
    let (scaled, suffix) = if v >= 1e9 {
        (v / 1e9, "G")
    } else if v >= 1e6 {
        (v / 1e6, "M")
    } else if v >= 1e3 {
        (v / 1e3, "K")
    } else {
        (v, "")
    };
    let digits = if scaled >= 100.0 {
        0
    } else if scaled >= 10.0 {
        1
    } else {
        2
    };
    format!("{scaled:.digits$}{suffix}")
}
