//! The latency-distribution plot, as a hand-written SVG: latency against percentile on the
//! usual "number of nines" axis (p0, p50, p90, p99, p99.9), one curve per target.

use std::fmt::Write;

use super::stats::Samples;

const W: f64 = 760.0;
const H: f64 = 420.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;
/// The x axis runs from p0 (0 nines) to p99.9 (3 nines).
const NINES: f64 = 3.0;

/// One curve.
pub(crate) struct Curve<'a> {
    pub(crate) label: &'a str,
    pub(crate) color: &'a str,
    pub(crate) samples: &'a Samples,
}

fn percentile_at(nines: f64) -> f64 {
    100.0 * (1.0 - 10f64.powf(-nines))
}

/// "Nice" tick step for a range.
fn step_for(range: f64) -> f64 {
    let raw = range / 6.0;
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag)
}

/// The plot of `curves`, titled `title`.
pub(crate) fn latency_plot(title: &str, subtitle: &str, curves: &[Curve<'_>]) -> String {
    let points = 300;
    let series: Vec<Vec<(f64, f64)>> = curves
        .iter()
        .map(|c| {
            (0..=points)
                .map(|i| {
                    let x = NINES * i as f64 / points as f64;
                    (x, c.samples.pct(percentile_at(x)))
                })
                .filter(|(_, y)| y.is_finite())
                .collect()
        })
        .collect();
    let all_y = series.iter().flatten().map(|(_, y)| *y);
    let (mut lo, mut hi) = all_y.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), y| {
        (lo.min(y), hi.max(y))
    });
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    let step = step_for((hi - lo).max(0.01));
    let lo = (lo / step).floor() * step;
    let hi = ((hi / step).ceil() * step).max(lo + step);
    let px = |x: f64| LEFT + (W - LEFT - RIGHT) * x / NINES;
    let py = |y: f64| TOP + (H - TOP - BOTTOM) * (1.0 - (y - lo) / (hi - lo));

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="20" text-anchor="middle" font-size="15" font-weight="bold">{}</text>"#,
        W / 2.0,
        escape(title)
    );
    let _ = writeln!(
        s,
        r##"<text x="{}" y="37" text-anchor="middle" fill="#555">{}</text>"##,
        W / 2.0,
        escape(subtitle)
    );
    // Horizontal grid and y labels.
    let mut y = lo;
    while y <= hi + step / 2.0 {
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" x2="{}" y1="{py:.1}" y2="{py:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            W - RIGHT,
            LEFT - 6.0,
            py(y) + 4.0,
            trim_float(y),
            py = py(y)
        );
        y += step;
    }
    // Vertical grid at p0, p50, p90, p99, p99.9.
    for (x, label) in [
        (0.0, "p0"),
        (2f64.log10(), "p50"),
        (1.0, "p90"),
        (2.0, "p99"),
        (3.0, "p99.9"),
    ] {
        let _ = writeln!(
            s,
            r##"<line x1="{px:.1}" x2="{px:.1}" y1="{TOP}" y2="{}" stroke="#ddd"/><text x="{px:.1}" y="{}" text-anchor="middle">{label}</text>"##,
            H - BOTTOM,
            H - BOTTOM + 16.0,
            px = px(x)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">percentile</text>"#,
        LEFT + (W - LEFT - RIGHT) / 2.0,
        H - 18.0
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(18 {}) rotate(-90)" text-anchor="middle">latency (ms)</text>"#,
        TOP + (H - TOP - BOTTOM) / 2.0
    );
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{TOP}" width="{}" height="{}" fill="none" stroke="#888"/>"##,
        W - LEFT - RIGHT,
        H - TOP - BOTTOM
    );
    for (curve, points) in curves.iter().zip(&series) {
        let path: Vec<String> = points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>"#,
            curve.color,
            path.join(" ")
        );
    }
    // Legend, top left inside the frame.
    for (i, curve) in curves.iter().enumerate() {
        let y = TOP + 16.0 + 18.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{}" x2="{}" y1="{y}" y2="{y}" stroke="{}" stroke-width="3"/><text x="{}" y="{}">{} (p50 {:.2} ms, p99 {:.2} ms, n={})</text>"#,
            LEFT + 10.0,
            LEFT + 34.0,
            curve.color,
            LEFT + 40.0,
            y + 4.0,
            escape(curve.label),
            curve.samples.pct(50.0),
            curve.samples.pct(99.0),
            curve.samples.len()
        );
    }
    s.push_str("</svg>\n");
    s
}

fn trim_float(v: f64) -> String {
    let text = format!("{v:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
