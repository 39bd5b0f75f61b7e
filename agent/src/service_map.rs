//! A self-contained HTML/SVG service map of a reachability matrix: pods
//! on a circle grouped by namespace, a green edge for an allowed pair and
//! a red one for a denied pair, and the matrix as a table below.

use policy_model::Cluster;
use policy_model::Verdict;
use policy_model::matrix::Reachability;
use std::f64::consts::PI;
use std::fmt::Write;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Renders the page.
pub fn render(m: &Reachability, cluster: &Cluster) -> String {
    let n = m.pods.len().max(1);
    let size = 640.0_f64;
    let (cx, cy, r) = (size / 2.0, size / 2.0, size / 2.0 - 90.0);
    let pos: Vec<(f64, f64)> = (0..m.pods.len())
        .map(|i| {
            let a = 2.0 * PI * i as f64 / n as f64 - PI / 2.0;
            (cx + r * a.cos(), cy + r * a.sin())
        })
        .collect();
    let namespaces: Vec<&str> = {
        let mut v: Vec<&str> = m
            .pods
            .iter()
            .map(|p| p.split('/').next().unwrap_or(""))
            .collect();
        v.dedup();
        v
    };
    let palette = [
        "#4e79a7", "#f28e2b", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f",
    ];
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" viewBox="0 0 {size} {size}">
<defs>
<marker id="ok" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" markerHeight="6" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#2e9d47"/></marker>
<marker id="no" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" markerHeight="6" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#d13b3b"/></marker>
</defs>
"##
    );
    // Denied edges first so allowed ones are drawn on top.
    for pass in [Verdict::Denied, Verdict::Allowed] {
        for (i, row) in m.cells.iter().enumerate() {
            for (j, v) in row.iter().enumerate() {
                if i == j || *v != pass {
                    continue;
                }
                let (x1, y1) = pos[i];
                let (x2, y2) = pos[j];
                // Curve each direction to its own side so A->B and B->A differ.
                let (mx, my) = ((x1 + x2) / 2.0, (y1 + y2) / 2.0);
                let (dx, dy) = (x2 - x1, y2 - y1);
                let len = (dx * dx + dy * dy).sqrt().max(1.0);
                let (qx, qy) = (mx - dy / len * 18.0, my + dx / len * 18.0);
                // Stop short of the node circle.
                let (ex, ey) = (x2 - dx / len * 16.0, y2 - dy / len * 16.0);
                let (color, marker, opacity) = match v {
                    Verdict::Allowed => ("#2e9d47", "ok", "0.85"),
                    Verdict::Denied => ("#d13b3b", "no", "0.35"),
                };
                let _ = writeln!(
                    svg,
                    r##"<path d="M{x1:.1},{y1:.1} Q{qx:.1},{qy:.1} {ex:.1},{ey:.1}" fill="none" stroke="{color}" stroke-width="1.6" stroke-opacity="{opacity}" marker-end="url(#{marker})"><title>{} -> {}: {}</title></path>"##,
                    esc(&m.pods[i]),
                    esc(&m.pods[j]),
                    v
                );
            }
        }
    }
    for (i, p) in m.pods.iter().enumerate() {
        let ns = p.split('/').next().unwrap_or("");
        let color = palette[namespaces.iter().position(|x| *x == ns).unwrap_or(0) % palette.len()];
        let (x, y) = pos[i];
        let identity = cluster
            .endpoint(p)
            .map(|e| e.identity.to_string())
            .unwrap_or_default();
        let (lx, ly) = (cx + (x - cx) * 1.18, cy + (y - cy) * 1.18);
        let _ = writeln!(
            svg,
            r##"<circle cx="{x:.1}" cy="{y:.1}" r="14" fill="{color}" stroke="#222"><title>{} (identity {identity})</title></circle><text x="{lx:.1}" y="{ly:.1}" font-family="sans-serif" font-size="12" text-anchor="middle" dominant-baseline="middle">{}</text>"##,
            esc(p),
            esc(p)
        );
    }
    svg.push_str("</svg>\n");

    let mut table = String::from("<table><tr><th>from \\ to</th>");
    for p in &m.pods {
        let _ = write!(table, "<th>{}</th>", esc(p));
    }
    table.push_str("</tr>\n");
    for (i, row) in m.cells.iter().enumerate() {
        let _ = write!(table, "<tr><th>{}</th>", esc(&m.pods[i]));
        for v in row {
            let (class, mark) = match v {
                Verdict::Allowed => ("ok", "&#10003;"),
                Verdict::Denied => ("no", "&#10007;"),
            };
            let _ = write!(table, r##"<td class="{class}">{mark}</td>"##);
        }
        table.push_str("</tr>\n");
    }
    table.push_str("</table>\n");

    format!(
        r##"<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>portcullis service map: {proto}/{port}</title>
<style>
body {{ font-family: sans-serif; margin: 24px; color: #222; }}
table {{ border-collapse: collapse; margin-top: 16px; }}
th, td {{ border: 1px solid #ccc; padding: 3px 8px; font-size: 12px; text-align: center; }}
td.ok {{ background: #dff3e3; color: #2e9d47; }}
td.no {{ background: #f8dede; color: #d13b3b; }}
.legend span {{ display: inline-block; margin-right: 16px; }}
</style></head>
<body>
<h1>Service map: {proto}/{port}</h1>
<p class="legend"><span style="color:#2e9d47">&#9632; allowed</span><span style="color:#d13b3b">&#9632; denied</span>{allowed} of {total} ordered pairs allowed (self pairs included in the table).</p>
{svg}
{table}
</body></html>
"##,
        proto = m.protocol,
        port = m.port,
        allowed = m.allowed(),
        total = m.cells.len() * m.cells.len(),
    )
}
