//! Bar charts drawn by the server as SVG: counts and bytes need no chart library, load nothing,
//! and read the same with colour or without (each bar carries its value as text and a title).

use std::fmt::Write;

/// One bar: its label, the value that sets its length, and the value as people read it.
#[derive(Debug, Clone)]
pub struct Bar {
    /// What it counts.
    pub label: String,
    /// Its length.
    pub value: i64,
    /// Its value as shown.
    pub shown: String,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A horizontal bar chart with `title` as its accessible name. The palette (Okabe-Ito blue on
/// a light ground, values as text) stays legible to every common colour-vision deficiency.
pub fn bars(title: &str, bars: &[Bar]) -> String {
    const ROW: usize = 28;
    const LABEL: usize = 90;
    const WIDTH: usize = 240;
    const VALUE: usize = 70;
    let height = (bars.len().max(1) * ROW) + 8;
    let max = bars.iter().map(|b| b.value).max().unwrap_or(0).max(1);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="chart" role="img" viewBox="0 0 {w} {height}" width="{w}" height="{height}"><title>{t}</title>"#,
        w = LABEL + WIDTH + VALUE,
        t = esc(title),
    );
    if bars.is_empty() {
        let _ = write!(
            svg,
            r#"<text x="0" y="20" class="chart-empty">Nothing yet</text>"#
        );
    }
    for (i, b) in bars.iter().enumerate() {
        let y = i * ROW + 4;
        let len = ((b.value.max(0) as f64 / max as f64) * WIDTH as f64).round() as usize;
        let len = if b.value > 0 { len.max(2) } else { 0 };
        let _ = write!(
            svg,
            r#"<g><title>{label}: {shown}</title><text x="{lx}" y="{ty}" class="chart-label" text-anchor="end">{label}</text><rect x="{bx}" y="{y}" width="{len}" height="{h}" rx="3" class="chart-bar"/><text x="{vx}" y="{ty}" class="chart-value">{shown}</text></g>"#,
            label = esc(&b.label),
            shown = esc(&b.shown),
            lx = LABEL - 8,
            ty = y + 15,
            bx = LABEL,
            h = ROW - 8,
            vx = LABEL + len + 6,
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_are_as_long_as_their_values_and_escape_labels() {
        let svg = bars(
            "Datasets <per> layer",
            &[
                Bar {
                    label: "raw".into(),
                    value: 10,
                    shown: "10".into(),
                },
                Bar {
                    label: "a<b".into(),
                    value: 5,
                    shown: "5".into(),
                },
                Bar {
                    label: "none".into(),
                    value: 0,
                    shown: "0".into(),
                },
            ],
        );
        assert!(svg.contains(r#"width="240" height="20""#), "{svg}");
        assert!(svg.contains(r#"width="120" height="20""#), "{svg}");
        assert!(svg.contains(r#"width="0" height="20""#), "{svg}");
        assert!(svg.contains("a&lt;b") && !svg.contains("a<b"));
        assert!(svg.contains("Datasets &lt;per&gt; layer"));
    }
}
