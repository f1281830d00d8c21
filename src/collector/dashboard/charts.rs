//! The dashboard's charts, drawn by plotters into SVG strings. Each takes
//! series already shaped for it (see `super::series`) and returns the
//! document plotters wrote; the page makes it responsive and accessible.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// The drawing size; the page scales it to the column width (viewBox).
pub const WIDTH: u32 = 640;
pub const HEIGHT: u32 = 360;
const LEGEND_WIDTH: u32 = 150;

/// Tableau 10: distinguishable, and the grey is kept for "other".
pub const PALETTE: [RGBColor; 9] = [
    RGBColor(0x4e, 0x79, 0xa7),
    RGBColor(0xf2, 0x8e, 0x2b),
    RGBColor(0x59, 0xa1, 0x4f),
    RGBColor(0xe1, 0x57, 0x59),
    RGBColor(0x76, 0xb7, 0xb2),
    RGBColor(0xed, 0xc9, 0x48),
    RGBColor(0xb0, 0x7a, 0xa1),
    RGBColor(0xff, 0x9d, 0xa7),
    RGBColor(0x9c, 0x75, 0x5f),
];
pub const OTHER_COLOR: RGBColor = RGBColor(0xba, 0xb0, 0xac);
const INK: RGBColor = RGBColor(0x33, 0x33, 0x33);
const GRID: RGBColor = RGBColor(0xe4, 0xe4, 0xe4);
const MARK: RGBColor = RGBColor(0xd6, 0x27, 0x28);

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type DrawResult<T> = Result<T, DrawingAreaErrorKind<std::io::Error>>;

#[derive(Debug, thiserror::Error)]
#[error("drawing a chart failed: {0}")]
pub struct ChartError(String);

impl<E: std::error::Error + Send + Sync> From<DrawingAreaErrorKind<E>> for ChartError {
    fn from(e: DrawingAreaErrorKind<E>) -> Self {
        ChartError(e.to_string())
    }
}

fn font(size: u32) -> TextStyle<'static> {
    ("sans-serif", size).into_font().color(&INK)
}

fn svg(draw: impl FnOnce(&Area) -> DrawResult<()>) -> Result<String, ChartError> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE)?;
        draw(&root)?;
        root.present()?;
    }
    Ok(out)
}

/// The chart's area and, right of it, the legend's with `entries` drawn.
fn with_legend<'a>(root: &Area<'a>, entries: &[(&str, RGBColor)]) -> DrawResult<Area<'a>> {
    let (plot, legend) = root.split_horizontally(WIDTH - LEGEND_WIDTH);
    for (i, (name, color)) in entries.iter().enumerate() {
        let y = 18 + 20 * i as i32;
        legend.draw(&Rectangle::new([(6, y - 6), (18, y + 6)], color.filled()))?;
        legend.draw(&Text::new(
            name.to_string(),
            (24, y),
            font(13).pos(Pos::new(HPos::Left, VPos::Center)),
        ))?;
    }
    Ok(plot)
}

/// A named series and its colour.
pub struct Series<'a> {
    pub name: &'a str,
    pub color: RGBColor,
    pub values: Vec<u64>,
}

fn nice_top(max: u64) -> u64 {
    // Headroom so the top of the tallest mark does not touch the frame.
    (max + max / 10).max(1)
}

/// Stacked areas over days: `layers[0]` at the bottom. `days` are the x
/// positions, `label_x` names one.
pub fn stacked_days(
    days: &[i64],
    layers: &[Series],
    label_x: &dyn Fn(&i64) -> String,
    y_desc: &str,
) -> Result<String, ChartError> {
    let mut tops = vec![0u64; days.len()];
    let mut stacked = Vec::with_capacity(layers.len());
    for layer in layers {
        for (top, v) in tops.iter_mut().zip(&layer.values) {
            *top += v;
        }
        stacked.push(tops.clone());
    }
    let y_top = nice_top(tops.iter().copied().max().unwrap_or(0));
    let (first, last) = (days.first().copied(), days.last().copied());
    let x = first.unwrap_or(0)..last.unwrap_or(0).max(first.unwrap_or(0) + 1);
    svg(|root| {
        // Listed top to bottom as they are stacked.
        let entries: Vec<(&str, RGBColor)> =
            layers.iter().rev().map(|l| (l.name, l.color)).collect();
        let plot = with_legend(root, &entries)?;
        let mut chart = ChartBuilder::on(&plot)
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(56)
            .build_cartesian_2d(x, 0..y_top)?;
        chart
            .configure_mesh()
            .light_line_style(TRANSPARENT)
            .bold_line_style(GRID)
            .x_labels(6)
            .y_labels(6)
            .x_label_formatter(label_x)
            .y_desc(y_desc)
            .label_style(font(13))
            .axis_desc_style(font(13))
            .draw()?;
        // Top of the stack first, each from zero, so every lower layer
        // paints over the part of the one above it that it covers.
        for (layer, tops) in layers.iter().zip(&stacked).rev() {
            let color = layer.color;
            chart.draw_series(AreaSeries::new(
                days.iter().copied().zip(tops.iter().copied()),
                0,
                color.filled(),
            ))?;
        }
        Ok(())
    })
}

/// Pairs of bars per period, side by side: `periods` name the x positions.
pub fn paired_bars(
    periods: &[String],
    first: &Series,
    second: &Series,
    y_desc: &str,
) -> Result<String, ChartError> {
    let y_top = nice_top(
        first
            .values
            .iter()
            .chain(&second.values)
            .copied()
            .max()
            .unwrap_or(0),
    );
    let n = periods.len().max(1);
    svg(|root| {
        let plot = with_legend(
            root,
            &[(first.name, first.color), (second.name, second.color)],
        )?;
        let mut chart = ChartBuilder::on(&plot)
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(56)
            .build_cartesian_2d((0..n - 1).into_segmented(), 0..y_top)?;
        chart
            .configure_mesh()
            .light_line_style(TRANSPARENT)
            .bold_line_style(GRID)
            .disable_x_mesh()
            .x_labels(n)
            .y_labels(6)
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => periods.get(*i).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .y_desc(y_desc)
            .label_style(font(13))
            .axis_desc_style(font(13))
            .draw()?;
        // Each period's slot: a tenth free on either side, the first
        // series in the left half of the rest, the second in the right.
        let slot = chart.plotting_area().dim_in_pixel().0 / n as u32;
        let (edge, middle) = (slot / 10, slot / 2);
        for (series, left, right) in [(first, edge, middle), (second, middle, edge)] {
            chart.draw_series(series.values.iter().enumerate().map(|(i, &v)| {
                let mut bar = Rectangle::new(
                    [(SegmentValue::Exact(i), 0), (SegmentValue::Exact(i + 1), v)],
                    series.color.filled(),
                );
                bar.set_margin(0, 0, left, right);
                bar
            }))?;
        }
        Ok(())
    })
}

/// Horizontal bars of shares in percent, largest first, each labelled
/// with its percentage.
pub fn share_bars(items: &[(String, f64, RGBColor)], x_desc: &str) -> Result<String, ChartError> {
    let n = items.len().max(1);
    let longest = items.iter().map(|(name, ..)| name.len()).max().unwrap_or(0);
    // The naive text metrics plotters uses without fonts: about 0.5 em
    // per character at 13 px.
    let label_width = (longest as u32 * 7 + 12).clamp(60, 260);
    svg(|root| {
        let mut chart = ChartBuilder::on(root)
            .margin(10)
            .margin_right(40)
            .x_label_area_size(30)
            .y_label_area_size(label_width)
            .build_cartesian_2d(0f64..100f64, (0..n - 1).into_segmented())?;
        chart
            .configure_mesh()
            .light_line_style(TRANSPARENT)
            .bold_line_style(GRID)
            .disable_y_mesh()
            .x_labels(6)
            .y_labels(n)
            .x_label_formatter(&|p| format!("{p:.0} %"))
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(slot) => items
                    .get(n - 1 - slot)
                    .map(|(name, ..)| name.clone())
                    .unwrap_or_default(),
                _ => String::new(),
            })
            .x_desc(x_desc)
            .label_style(font(13))
            .axis_desc_style(font(13))
            .draw()?;
        // The first item in the top slot.
        let slot = |i: usize| n - 1 - i;
        chart.draw_series(items.iter().enumerate().map(|(i, (_, share, color))| {
            let mut bar = Rectangle::new(
                [
                    (0.0, SegmentValue::Exact(slot(i))),
                    (*share, SegmentValue::Exact(slot(i) + 1)),
                ],
                color.filled(),
            );
            bar.set_margin(4, 4, 0, 0);
            bar
        }))?;
        chart.draw_series(items.iter().enumerate().map(|(i, (_, share, _))| {
            Text::new(
                format!("{share:.1} %"),
                (*share + 1.0, SegmentValue::CenterOf(slot(i))),
                font(12).pos(Pos::new(HPos::Left, VPos::Center)),
            )
        }))?;
        Ok(())
    })
}

/// Installations per bucket of active users (`buckets`: axis label,
/// installations), with the buckets holding the median and the 95th
/// percentile marked and named in the legend by `mark_labels`.
pub fn user_histogram(
    buckets: &[(String, u64)],
    p50: Option<usize>,
    p95: Option<usize>,
    mark_labels: (&str, &str),
) -> Result<String, ChartError> {
    let n = buckets.len().max(1);
    let y_top = nice_top(buckets.iter().map(|b| b.1).max().unwrap_or(0));
    let color_of = |i: usize| {
        if Some(i) == p95 {
            MARK
        } else if Some(i) == p50 {
            PALETTE[1]
        } else {
            PALETTE[0]
        }
    };
    svg(|root| {
        let mut entries = vec![("installations", PALETTE[0])];
        if p50.is_some() {
            entries.push((mark_labels.0, PALETTE[1]));
        }
        if p95.is_some() {
            entries.push((mark_labels.1, MARK));
        }
        let plot = with_legend(root, &entries)?;
        let mut chart = ChartBuilder::on(&plot)
            .margin(10)
            .x_label_area_size(44)
            .y_label_area_size(56)
            .build_cartesian_2d((0..n - 1).into_segmented(), 0..y_top)?;
        chart
            .configure_mesh()
            .light_line_style(TRANSPARENT)
            .bold_line_style(GRID)
            .disable_x_mesh()
            .x_labels(n)
            .y_labels(6)
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => {
                    buckets.get(*i).map(|b| b.0.clone()).unwrap_or_default()
                }
                _ => String::new(),
            })
            .label_style(font(13))
            .x_desc("active users per installation (bucket from)")
            .y_desc("installations")
            .axis_desc_style(font(13))
            .draw()?;
        chart.draw_series(buckets.iter().enumerate().map(|(i, b)| {
            let mut r = Rectangle::new(
                [
                    (SegmentValue::Exact(i), 0),
                    (SegmentValue::Exact(i + 1), b.1),
                ],
                color_of(i).filled(),
            );
            r.set_margin(0, 0, 2, 2);
            r
        }))?;
        Ok(())
    })
}

/// One line over hours; `label_x` names an hour.
pub fn hourly_line(
    hours: &[(i64, f64)],
    label_x: &dyn Fn(&i64) -> String,
    y_desc: &str,
) -> Result<String, ChartError> {
    let (first, last) = (
        hours.first().map_or(0, |h| h.0),
        hours.last().map_or(0, |h| h.0),
    );
    let y_top = hours.iter().map(|h| h.1).fold(0.0, f64::max) * 1.1;
    svg(|root| {
        let mut chart = ChartBuilder::on(root)
            .margin(10)
            .margin_right(20)
            .x_label_area_size(30)
            .y_label_area_size(56)
            .build_cartesian_2d(first..last.max(first + 1), 0f64..y_top.max(1.0))?;
        chart
            .configure_mesh()
            .light_line_style(TRANSPARENT)
            .bold_line_style(GRID)
            .x_labels(6)
            .y_labels(6)
            .x_label_formatter(label_x)
            .y_label_formatter(&|v| format!("{v:.0}"))
            .y_desc(y_desc)
            .label_style(font(13))
            .axis_desc_style(font(13))
            .draw()?;
        chart.draw_series(LineSeries::new(
            hours.iter().copied(),
            PALETTE[0].stroke_width(2),
        ))?;
        Ok(())
    })
}
