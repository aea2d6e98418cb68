//! A run's results folder: the history, the faults, each checker's verdict,
//! availability in and out of faults, and plots a person can read at a
//! glance (latency over time with the fault windows shaded, throughput over
//! time), tied together by `index.html`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use super::checkers::Verdict;
use super::history::{Call, Fault, Op, Outcome};

/// Operations in and out of fault windows: how many there were, how many
/// succeeded, and how many got an answer at all (ok, or a definite refusal
/// such as "no such queue"); the rest timed out or found the cluster
/// unavailable.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Availability {
    pub ops_in_faults: u64,
    pub ok_in_faults: u64,
    pub answered_in_faults: u64,
    pub ops_outside: u64,
    pub ok_outside: u64,
    pub answered_outside: u64,
}

impl Availability {
    /// Share of operations invoked during a fault that succeeded.
    pub fn during(&self) -> f64 {
        ratio(self.ok_in_faults, self.ops_in_faults)
    }

    /// Share of operations invoked outside faults that succeeded.
    pub fn outside(&self) -> f64 {
        ratio(self.ok_outside, self.ops_outside)
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        1.0
    } else {
        a as f64 / b as f64
    }
}

/// The name of an operation's function, for grouping.
pub fn f_name(call: &Call) -> &'static str {
    match call {
        Call::Send { .. } => "send",
        Call::Receive { .. } => "receive",
        Call::Delete { .. } => "delete",
        Call::Put { .. } => "put",
        Call::Read { .. } => "read",
        Call::Create { .. } => "create",
        Call::Remove { .. } => "remove",
        Call::Get { .. } => "get",
        Call::Publish { .. } => "publish",
    }
}

/// Availability of `ops` (those invoked before `until_ns`: the drain after
/// the faults is not judged) given the fault windows.
pub fn availability(ops: &[Op], faults: &[Fault], until_ns: u64) -> Availability {
    let mut a = Availability::default();
    for op in ops.iter().filter(|o| o.invoke_ns < until_ns) {
        let in_fault = faults
            .iter()
            .any(|f| op.invoke_ns >= f.start_ns && op.invoke_ns <= f.end_ns);
        let ok = matches!(op.outcome, Outcome::Ok { .. }) as u64;
        let answered = !op.outcome.is_unknown() as u64;
        if in_fault {
            a.ops_in_faults += 1;
            a.ok_in_faults += ok;
            a.answered_in_faults += answered;
        } else {
            a.ops_outside += 1;
            a.ok_outside += ok;
            a.answered_outside += answered;
        }
    }
    a
}

/// Everything the summary file holds.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub workload: String,
    pub seed: u64,
    pub nodes: u64,
    pub hosts: String,
    pub nemesis: Vec<String>,
    pub skipped_nemesis: Vec<String>,
    pub time_limit_s: u64,
    pub valid: bool,
    pub operations: BTreeMap<String, BTreeMap<String, u64>>,
    pub faults: BTreeMap<String, u64>,
    pub availability: Availability,
    pub availability_in_faults: f64,
    pub availability_outside_faults: f64,
    pub verdicts: Vec<Verdict>,
    pub notes: Vec<String>,
}

/// Operations counted by function and outcome.
pub fn op_counts(ops: &[Op]) -> BTreeMap<String, BTreeMap<String, u64>> {
    let mut m: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for op in ops {
        let outcome = match op.outcome {
            Outcome::Ok { .. } => "ok",
            Outcome::Fail { .. } => "fail",
            Outcome::Unknown { .. } => "unknown",
        };
        *m.entry(f_name(&op.call).into())
            .or_default()
            .entry(outcome.into())
            .or_default() += 1;
    }
    m
}

const COLORS: [&str; 8] = [
    "#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#17becf", "#bcbd22", "#7f7f7f", "#e377c2",
];

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The shading colour of a fault kind.
fn fault_color(kind: &str) -> &'static str {
    match kind {
        "partition" => "#d62728",
        "kill" => "#8c564b",
        "pause" => "#e377c2",
        "power" => "#ff7f0e",
        "transfer" => "#17becf",
        "member" => "#2ca02c",
        "clock" => "#7f7f7f",
        _ => "#d62728",
    }
}

/// A plot area: maps data to pixels.
struct Frame {
    width: f64,
    height: f64,
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
    x_max: f64,
    y_min: f64,
    y_max: f64,
    y_log: bool,
}

impl Frame {
    fn x(&self, v: f64) -> f64 {
        self.left + (v / self.x_max).clamp(0.0, 1.0) * (self.width - self.left - self.right)
    }

    fn y(&self, v: f64) -> f64 {
        let t = if self.y_log {
            (v.max(self.y_min).ln() - self.y_min.ln()) / (self.y_max.ln() - self.y_min.ln())
        } else {
            (v - self.y_min) / (self.y_max - self.y_min)
        };
        self.height - self.bottom - t.clamp(0.0, 1.0) * (self.height - self.top - self.bottom)
    }

    /// Axes, ticks, labels and shaded fault windows.
    fn background(&self, out: &mut String, title: &str, y_label: &str, faults: &[Fault]) {
        let _ = write!(
            out,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">
<rect width="100%" height="100%" fill="white"/>
<text x="{cx}" y="16" text-anchor="middle" font-size="14">{t}</text>
"#,
            w = self.width,
            h = self.height,
            cx = self.width / 2.0,
            t = escape(title)
        );
        // Labels go on one of two rows above the plot, where they do not
        // run into the previous one; a window too crowded to label still
        // has its kind's colour and a tooltip.
        let mut row_ends = [f64::MIN; 2];
        for f in faults {
            let x0 = self.x(f.start_ns as f64 / 1e9);
            let x1 = self.x(f.end_ns as f64 / 1e9).max(x0 + 1.0);
            let color = fault_color(&f.kind);
            let _ = writeln!(
                out,
                r#"<rect x="{x0:.1}" y="{y}" width="{w:.1}" height="{h}" fill="{color}" fill-opacity="0.15"><title>{d}</title></rect>"#,
                y = self.top,
                w = x1 - x0,
                h = self.height - self.top - self.bottom,
                d = escape(&format!("{}: {}", f.kind, f.detail)),
            );
            let label_width = 5.5 * f.kind.len() as f64;
            if let Some(row) = row_ends.iter().position(|end| x0 >= end + 3.0) {
                row_ends[row] = x0 + label_width;
                let _ = writeln!(
                    out,
                    r#"<text x="{x0:.1}" y="{ty}" font-size="9" fill="{color}">{k}</text>"#,
                    ty = self.top - 2.0 - 10.0 * row as f64,
                    k = escape(&f.kind)
                );
            }
        }
        let (x0, x1) = (self.left, self.width - self.right);
        let (y0, y1) = (self.height - self.bottom, self.top);
        let _ = writeln!(
            out,
            r#"<path d="M{x0},{y1} L{x0},{y0} L{x1},{y0}" stroke="black" fill="none"/>"#
        );
        // x ticks: about ten, on round seconds.
        let step = nice_step(self.x_max / 10.0);
        let mut t = 0.0;
        while t <= self.x_max + 1e-9 {
            let x = self.x(t);
            let _ = writeln!(
                out,
                r#"<line x1="{x:.1}" y1="{y0}" x2="{x:.1}" y2="{y2}" stroke="black"/><text x="{x:.1}" y="{ty}" text-anchor="middle">{t}</text>"#,
                y2 = y0 + 4.0,
                ty = y0 + 15.0
            );
            t += step;
        }
        let _ = writeln!(
            out,
            r#"<text x="{cx}" y="{y}" text-anchor="middle">time (s)</text>"#,
            cx = (x0 + x1) / 2.0,
            y = self.height - 4.0
        );
        // y ticks: powers of ten on a log axis, else about five.
        let ticks: Vec<f64> = if self.y_log {
            let mut v = Vec::new();
            let mut p = 10f64.powf(self.y_min.log10().floor());
            while p <= self.y_max * 1.0001 {
                if p >= self.y_min {
                    v.push(p);
                }
                p *= 10.0;
            }
            v
        } else {
            let step = nice_step((self.y_max - self.y_min) / 5.0);
            let mut v = Vec::new();
            let mut t = self.y_min;
            while t <= self.y_max + 1e-9 {
                v.push(t);
                t += step;
            }
            v
        };
        for t in ticks {
            let y = self.y(t);
            let _ = writeln!(
                out,
                r##"<line x1="{x2}" y1="{y:.1}" x2="{x0}" y2="{y:.1}" stroke="black"/><line x1="{x0}" y1="{y:.1}" x2="{x1}" y2="{y:.1}" stroke="#eeeeee"/><text x="{tx}" y="{ty:.1}" text-anchor="end">{l}</text>"##,
                x2 = x0 - 4.0,
                tx = x0 - 6.0,
                ty = y + 4.0,
                l = format_tick(t)
            );
        }
        let _ = writeln!(
            out,
            r#"<text x="14" y="{cy}" text-anchor="middle" transform="rotate(-90 14 {cy})">{l}</text>"#,
            cy = (y0 + y1) / 2.0,
            l = escape(y_label)
        );
    }
}

fn nice_step(raw: f64) -> f64 {
    if raw <= 0.0 {
        return 1.0;
    }
    let p = 10f64.powf(raw.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if raw <= m * p {
            return m * p;
        }
    }
    10.0 * p
}

fn format_tick(v: f64) -> String {
    if v >= 1.0 || v == 0.0 {
        format!("{}", v.round())
    } else {
        format!("{v}")
    }
}

fn legend(out: &mut String, frame: &Frame, entries: &[(String, &str)]) {
    for (i, (name, color)) in entries.iter().enumerate() {
        let x = frame.width - frame.right + 10.0;
        let y = frame.top + 14.0 * i as f64 + 8.0;
        let _ = writeln!(
            out,
            r#"<rect x="{x}" y="{ry}" width="10" height="10" fill="{color}"/><text x="{tx}" y="{ty}">{n}</text>"#,
            ry = y - 8.0,
            tx = x + 14.0,
            ty = y + 1.0,
            n = escape(name)
        );
    }
}

/// Latency of every operation against its invocation time, one colour per
/// function; unknown outcomes as red crosses at their timeout, failures as
/// orange circles.
pub fn latency_svg(title: &str, ops: &[Op], faults: &[Fault], x_max_s: f64) -> String {
    let names: Vec<&str> = {
        let mut v: Vec<&str> = ops.iter().map(|o| f_name(&o.call)).collect();
        v.sort();
        v.dedup();
        v
    };
    let color = |n: &str| COLORS[names.iter().position(|m| *m == n).unwrap_or(0) % COLORS.len()];
    let lat_ms = |o: &Op| (o.complete_ns.saturating_sub(o.invoke_ns)) as f64 / 1e6;
    let y_max = ops.iter().map(lat_ms).fold(10.0, f64::max) * 1.2;
    let frame = Frame {
        width: 1000.0,
        height: 420.0,
        left: 60.0,
        right: 120.0,
        top: 40.0,
        bottom: 40.0,
        x_max: x_max_s.max(1.0),
        y_min: 0.1,
        y_max,
        y_log: true,
    };
    let mut out = String::new();
    frame.background(&mut out, title, "latency (ms, log)", faults);
    // Thin the points to keep the file small: at most ~20 000.
    let every = (ops.len() / 20_000).max(1);
    for (i, o) in ops.iter().enumerate() {
        let x = frame.x(o.invoke_ns as f64 / 1e9);
        let y = frame.y(lat_ms(o));
        match o.outcome {
            Outcome::Ok { .. } => {
                if i % every == 0 {
                    let _ = writeln!(
                        out,
                        r#"<circle cx="{x:.1}" cy="{y:.1}" r="1.3" fill="{}"/>"#,
                        color(f_name(&o.call))
                    );
                }
            }
            Outcome::Fail { .. } => {
                let _ = writeln!(
                    out,
                    r##"<circle cx="{x:.1}" cy="{y:.1}" r="2.5" fill="none" stroke="#ff7f0e"/>"##
                );
            }
            Outcome::Unknown { .. } => {
                let _ = writeln!(
                    out,
                    r##"<path d="M{a:.1},{b:.1} L{c:.1},{d:.1} M{a:.1},{d:.1} L{c:.1},{b:.1}" stroke="#d62728"/>"##,
                    a = x - 2.5,
                    b = y - 2.5,
                    c = x + 2.5,
                    d = y + 2.5
                );
            }
        }
    }
    let mut entries: Vec<(String, &str)> =
        names.iter().map(|n| (n.to_string(), color(n))).collect();
    entries.push(("fail".into(), "#ff7f0e"));
    entries.push(("unknown".into(), "#d62728"));
    legend(&mut out, &frame, &entries);
    out.push_str("</svg>\n");
    out
}

/// Successful operations per second, one line per function.
pub fn throughput_svg(title: &str, ops: &[Op], faults: &[Fault], x_max_s: f64) -> String {
    let seconds = x_max_s.ceil().max(1.0) as usize;
    let mut per: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for o in ops {
        if !matches!(o.outcome, Outcome::Ok { .. }) {
            continue;
        }
        let s = (o.complete_ns / 1_000_000_000) as usize;
        let v = per
            .entry(f_name(&o.call))
            .or_insert_with(|| vec![0; seconds + 1]);
        if s < v.len() {
            v[s] += 1;
        }
    }
    let y_max = per
        .values()
        .flat_map(|v| v.iter().copied())
        .max()
        .unwrap_or(1) as f64
        * 1.1;
    let frame = Frame {
        width: 1000.0,
        height: 360.0,
        left: 60.0,
        right: 120.0,
        top: 40.0,
        bottom: 40.0,
        x_max: x_max_s.max(1.0),
        y_min: 0.0,
        y_max: y_max.max(1.0),
        y_log: false,
    };
    let mut out = String::new();
    frame.background(&mut out, title, "ok operations / s", faults);
    let mut entries = Vec::new();
    for (i, (name, counts)) in per.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let points: Vec<String> = counts
            .iter()
            .enumerate()
            .map(|(s, c)| format!("{:.1},{:.1}", frame.x(s as f64 + 0.5), frame.y(*c as f64)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="1.5"/>"#,
            points.join(" ")
        );
        entries.push((name.to_string(), color));
    }
    legend(&mut out, &frame, &entries);
    out.push_str("</svg>\n");
    out
}

/// Writes `summary.json`, `faults.jsonl`, the plots and `index.html` into
/// `dir` (the history is already there, written as the run went).
pub fn write(dir: &Path, summary: &Summary, ops: &[Op], faults: &[Fault]) -> std::io::Result<()> {
    std::fs::write(
        dir.join("summary.json"),
        serde_json::to_string_pretty(summary).map_err(std::io::Error::other)?,
    )?;
    let mut fl = String::new();
    for f in faults {
        fl.push_str(&serde_json::to_string(f).map_err(std::io::Error::other)?);
        fl.push('\n');
    }
    std::fs::write(dir.join("faults.jsonl"), fl)?;
    let x_max = ops
        .iter()
        .map(|o| o.complete_ns)
        .chain(faults.iter().map(|f| f.end_ns))
        .max()
        .unwrap_or(0) as f64
        / 1e9;
    let title = format!("{} workload, seed {}", summary.workload, summary.seed);
    std::fs::write(
        dir.join("latency.svg"),
        latency_svg(&format!("Latency: {title}"), ops, faults, x_max),
    )?;
    std::fs::write(
        dir.join("throughput.svg"),
        throughput_svg(&format!("Throughput: {title}"), ops, faults, x_max),
    )?;
    std::fs::write(dir.join("index.html"), index_html(summary))?;
    Ok(())
}

fn index_html(s: &Summary) -> String {
    let mut h = String::new();
    let verdict = if s.valid { "VALID" } else { "INVALID" };
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Sluice chaos: {w} seed {seed}</title>\
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}th{{background:#f4f4f4}}.ok{{color:#2ca02c}}.bad{{color:#d62728}}</style></head><body>\
<h1>{w} workload: <span class=\"{cls}\">{verdict}</span></h1>\
<p>Seed {seed}; {n} nodes ({hosts}); {t} s of faults: {nem}.{skipped}</p>",
        w = escape(&s.workload),
        seed = s.seed,
        cls = if s.valid { "ok" } else { "bad" },
        n = s.nodes,
        hosts = escape(&s.hosts),
        t = s.time_limit_s,
        nem = escape(&s.nemesis.join(", ")),
        skipped = if s.skipped_nemesis.is_empty() {
            String::new()
        } else {
            format!(" Skipped: {}.", escape(&s.skipped_nemesis.join("; ")))
        }
    );
    h.push_str("<h2>Checkers</h2><table><tr><th>checker</th><th>verdict</th><th>counts</th></tr>");
    for v in &s.verdicts {
        let counts: Vec<String> = v.counts.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"{}\">{}</td><td style=\"text-align:left\">{}</td></tr>",
            escape(&v.checker),
            if v.valid { "ok" } else { "bad" },
            if v.valid { "valid" } else { "INVALID" },
            escape(&counts.join(", "))
        );
    }
    h.push_str("</table>");
    for v in s.verdicts.iter().filter(|v| !v.anomalies.is_empty()) {
        let _ = write!(h, "<h3>{} anomalies</h3><ul>", escape(&v.checker));
        for a in &v.anomalies {
            let _ = write!(h, "<li>{}</li>", escape(a));
        }
        h.push_str("</ul>");
    }
    h.push_str("<h2>Operations</h2><table><tr><th>function</th><th>ok</th><th>fail</th><th>unknown</th></tr>");
    for (f, c) in &s.operations {
        let g = |k: &str| c.get(k).copied().unwrap_or(0);
        let _ = write!(
            h,
            "<tr><td>{f}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            g("ok"),
            g("fail"),
            g("unknown")
        );
    }
    h.push_str("</table>");
    let _ = write!(
        h,
        "<p>Availability (operations that succeeded): {:.1}% during faults ({} of {}), {:.1}% outside ({} of {}). Answered at all (ok, or a definite refusal, rather than a timeout or unavailable): {} during faults, {} outside.</p>",
        s.availability_in_faults * 100.0,
        s.availability.ok_in_faults,
        s.availability.ops_in_faults,
        s.availability_outside_faults * 100.0,
        s.availability.ok_outside,
        s.availability.ops_outside,
        s.availability.answered_in_faults,
        s.availability.answered_outside
    );
    h.push_str("<h2>Faults</h2><table><tr><th>kind</th><th>count</th></tr>");
    for (k, n) in &s.faults {
        let _ = write!(h, "<tr><td>{}</td><td>{n}</td></tr>", escape(k));
    }
    h.push_str("</table>");
    if !s.notes.is_empty() {
        h.push_str("<h2>Notes</h2><ul>");
        for n in &s.notes {
            let _ = write!(h, "<li>{}</li>", escape(n));
        }
        h.push_str("</ul>");
    }
    h.push_str(
        "<h2>Plots</h2><p><img src=\"latency.svg\"></p><p><img src=\"throughput.svg\"></p>\
<p>Files: <a href=\"history.jsonl\">history.jsonl</a>, <a href=\"faults.jsonl\">faults.jsonl</a>, \
<a href=\"summary.json\">summary.json</a>, <a href=\"logs/\">logs/</a>.</p></body></html>\n",
    );
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::history::Reply;

    fn op(f: Call, invoke_s: f64, latency_ms: f64, outcome: Outcome) -> Op {
        let invoke_ns = (invoke_s * 1e9) as u64;
        Op {
            process: 1,
            call: f,
            invoke_ns,
            complete_ns: invoke_ns + (latency_ms * 1e6) as u64,
            outcome,
        }
    }

    #[test]
    fn availability_splits_by_fault_windows_and_plots_render() {
        let get = || Call::Get { name: "a".into() };
        let ok = Outcome::Ok {
            reply: Reply::Exists { present: true },
        };
        let unknown = Outcome::Unknown {
            message: "timeout".into(),
        };
        let ops = vec![
            op(get(), 1.0, 2.0, ok.clone()),
            op(get(), 5.0, 5000.0, unknown.clone()),
            op(get(), 6.0, 3.0, ok.clone()),
            op(
                get(),
                6.5,
                1.0,
                Outcome::Fail {
                    code: "QueueDoesNotExist".into(),
                    message: "no such queue".into(),
                },
            ),
            op(get(), 9.0, 1.0, ok),
        ];
        let faults = vec![Fault {
            kind: "kill".into(),
            detail: "kill -9 n1".into(),
            start_ns: 4_000_000_000,
            end_ns: 7_000_000_000,
        }];
        let a = availability(&ops, &faults, u64::MAX);
        assert_eq!((a.ops_in_faults, a.ok_in_faults), (3, 1));
        assert_eq!((a.ops_outside, a.ok_outside), (2, 2));
        assert_eq!((a.answered_in_faults, a.answered_outside), (2, 2));
        assert!((a.during() - 1.0 / 3.0).abs() < 1e-9);
        let svg = latency_svg("t", &ops, &faults, 10.0);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(
            svg.matches("<circle").count(),
            4,
            "three ok points, one refusal"
        );
        assert!(svg.contains("kill -9 n1"), "the fault window is labelled");
        let svg = throughput_svg("t", &ops, &faults, 10.0);
        assert!(svg.contains("<polyline"));
    }
}
