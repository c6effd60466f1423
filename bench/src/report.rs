//! Result rows, the JSON document of `/work/shared/bench-schema.md` (schema 1) and its Markdown table.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::cpu::CpuTotals;

/// One (case, system) result. Figures that were not measured are `None` (JSON `null`), never 0.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    /// Case name, e.g. `pingpong-64B`.
    pub case: String,
    /// System name, e.g. `tokio`.
    pub system: String,
    /// Number of recorded latency samples.
    pub samples: Option<u64>,
    /// Mean latency, µs.
    pub mean_us: Option<f64>,
    /// Standard deviation of the latency, µs (extra field; only where a suite reports it, e.g.
    /// `rpc-seq-64B`, `null` elsewhere).
    pub sd_us: Option<f64>,
    /// Median latency, µs.
    pub p50_us: Option<f64>,
    /// 99th percentile latency, µs.
    pub p99_us: Option<f64>,
    /// 99.9th percentile latency, µs.
    pub p999_us: Option<f64>,
    /// Maximum latency, µs.
    pub max_us: Option<f64>,
    /// Throughput, operations per second (only where it applies).
    pub ops_per_s: Option<f64>,
    /// CPU (user + system) of the threads doing the work, client and server, per operation, µs
    /// (extra field; the note says whose clocks).
    #[serde(default)]
    pub cpu_us_per_op: Option<f64>,
    /// That CPU over wall time: 2.0 is two cores busy throughout (extra field).
    #[serde(default)]
    pub cores_busy: Option<f64>,
    /// The client side's share of `cpu_us_per_op`, µs (extra field).
    #[serde(default)]
    pub client_cpu_us_per_op: Option<f64>,
    /// The server side's share of `cpu_us_per_op`, µs (extra field).
    #[serde(default)]
    pub server_cpu_us_per_op: Option<f64>,
    /// How the system waits for I/O: `spin` (spins, then parks), `park` or `floor` (never
    /// parks); absent where a suite does not say (extra field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waits: Option<String>,
    /// Where the time of a start went (the `spawn` suite's extra fields, flattened into the
    /// row); absent in other suites.
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub breakdown: Option<Breakdown>,
    /// Mode and sample details.
    pub note: String,
    /// Why the system could not be measured; omitted when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Where the time of a proc start went, one field per step, each the median (p50) of that step
/// over the row's samples, µs: the steps' medians need not add up to the row's `p50_us`. `None`
/// (JSON `null`) where a step does not apply to the case or the system, never 0. The `spawn`
/// suite's note says what each step holds for each system.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Breakdown {
    /// Placing the proc on a machine (σ's scheduler).
    #[serde(default)]
    pub schedule_us: Option<f64>,
    /// Bringing the binary into the machine's cache.
    #[serde(default)]
    pub fetch_us: Option<f64>,
    /// Checking the cached binary's digest.
    #[serde(default)]
    pub verify_us: Option<f64>,
    /// Making the realm (when cold) and the proc's namespaces, and joining the realm's.
    #[serde(default)]
    pub namespaces_us: Option<f64>,
    /// The proc's cgroups: made (or taken warm) and joined (extra to the list of the issue).
    #[serde(default)]
    pub cgroups_us: Option<f64>,
    /// The jail (mount namespace, binary, /proc) and the privilege drop (fds, rlimits,
    /// capabilities, uid, no_new_privs).
    #[serde(default)]
    pub jail_us: Option<f64>,
    /// Installing the seccomp filter.
    #[serde(default)]
    pub seccomp_us: Option<f64>,
    /// From the execve call to the proc having started (its `main` running).
    #[serde(default)]
    pub exec_to_started_us: Option<f64>,
    /// From the proc having started to its exit seen and reaped by the parent (for a proc that
    /// exits at once: the exit's teardown; extra to the list of the issue).
    #[serde(default)]
    pub started_to_reaped_us: Option<f64>,
}

/// Nanoseconds to microseconds, kept to nanosecond resolution.
fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

impl Row {
    /// A row with figures taken from a latency histogram recorded in nanoseconds.
    pub fn measured(case: &str, system: &str, hist: &Histogram<u64>, ops_per_s: Option<f64>, note: String) -> Row {
        Row {
            case: case.to_string(),
            system: system.to_string(),
            samples: Some(hist.len()),
            mean_us: Some(round3(hist.mean() / 1000.0)),
            sd_us: None,
            p50_us: Some(us(hist.value_at_quantile(0.50))),
            p99_us: Some(us(hist.value_at_quantile(0.99))),
            p999_us: Some(us(hist.value_at_quantile(0.999))),
            max_us: Some(us(hist.max())),
            ops_per_s: ops_per_s.map(|x| x.round()),
            cpu_us_per_op: None,
            cores_busy: None,
            client_cpu_us_per_op: None,
            server_cpu_us_per_op: None,
            waits: None,
            breakdown: None,
            note,
            error: None,
        }
    }

    /// The same row with `sd_us` set from `hist` (recorded in nanoseconds).
    pub fn with_sd(mut self, hist: &Histogram<u64>) -> Row {
        self.sd_us = Some(round3(hist.stdev() / 1000.0));
        self
    }

    /// The same row with its CPU figures, when every round measured them.
    pub fn with_cpu(mut self, cpu: &CpuTotals) -> Row {
        if let Some(c) = cpu.complete() {
            self.cpu_us_per_op = Some(round3(c.us_per_op()));
            self.client_cpu_us_per_op = Some(round3(c.client_us_per_op()));
            self.server_cpu_us_per_op = Some(round3(c.server_us_per_op()));
            self.cores_busy = c.cpu.cores_busy().map(round3);
        }
        self
    }

    /// The same row saying how the system waits.
    pub fn with_waits(mut self, waits: &str) -> Row {
        self.waits = Some(waits.to_string());
        self
    }

    /// A row for a system that could not be measured: every figure is null.
    pub fn failed(case: &str, system: &str, error: String, note: String) -> Row {
        Row {
            case: case.to_string(),
            system: system.to_string(),
            samples: None,
            mean_us: None,
            sd_us: None,
            p50_us: None,
            p99_us: None,
            p999_us: None,
            max_us: None,
            ops_per_s: None,
            cpu_us_per_op: None,
            cores_busy: None,
            client_cpu_us_per_op: None,
            server_cpu_us_per_op: None,
            waits: None,
            breakdown: None,
            note,
            error: Some(error),
        }
    }
}

/// Facts about the machine the suite ran on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Host {
    /// CPUs available to this process.
    pub cores: usize,
    /// Kernel release (`uname -r`).
    pub kernel: String,
    /// io_uring usable: `kernel.io_uring_disabled` is 0 (or absent) and a ring could be created.
    pub io_uring: bool,
    /// `v1`, `v2`, `hybrid` or `none`.
    pub cgroup: String,
    /// 1-minute load average when the suite started (extra field: other load means noisy figures).
    #[serde(default)]
    pub loadavg_1m: Option<f64>,
}

impl Host {
    /// Detects the host facts.
    pub fn detect() -> Host {
        Host {
            cores: crate::affinity::available_cores(),
            kernel: kernel_release(),
            io_uring: io_uring_usable(),
            cgroup: cgroup_version().to_string(),
            loadavg_1m: std::fs::read_to_string("/proc/loadavg")
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse().ok()),
        }
    }
}

fn kernel_release() -> String {
    // SAFETY: `utsname` is plain data; all-zero is a valid value to be overwritten.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `uts` is a valid, writable utsname.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return "unknown".to_string();
    }
    // SAFETY: uname NUL-terminates `release` within the array.
    let release = unsafe { std::ffi::CStr::from_ptr(uts.release.as_ptr()) };
    release.to_string_lossy().into_owned()
}

fn io_uring_usable() -> bool {
    let sysctl_ok = match std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled") {
        Ok(s) => s.trim() == "0",
        Err(_) => true, // before 6.6 there is no switch; the probe decides
    };
    sysctl_ok && io_uring_probe()
}

/// Creates (and closes) a 4-entry ring.
fn io_uring_probe() -> bool {
    // struct io_uring_params is 120 bytes; all-zero asks for a default ring.
    let mut params = [0u8; 120];
    // SAFETY: io_uring_setup(entries, params) writes at most sizeof(io_uring_params)
    // = 120 bytes into `params`, which is that large and writable.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4u32, params.as_mut_ptr()) };
    if fd < 0 {
        return false;
    }
    // SAFETY: `fd` is a ring fd we just created and own; nothing else uses it.
    unsafe { libc::close(fd as libc::c_int) };
    true
}

fn fs_magic(path: &str) -> Option<i64> {
    let c = std::ffi::CString::new(path).ok()?;
    // SAFETY: `statfs` is plain data; all-zero is a valid value to be overwritten.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a valid, writable statfs.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    #[allow(clippy::unnecessary_cast)]
    Some(st.f_type as i64)
}

fn cgroup_version() -> &'static str {
    const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    match fs_magic("/sys/fs/cgroup") {
        Some(CGROUP2_SUPER_MAGIC) => "v2",
        Some(TMPFS_MAGIC) => {
            if fs_magic("/sys/fs/cgroup/unified") == Some(CGROUP2_SUPER_MAGIC) {
                "hybrid"
            } else {
                "v1"
            }
        }
        _ => "none",
    }
}

/// A moment in UTC, to the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utc {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

impl Utc {
    /// `secs` seconds after 1970-01-01T00:00:00Z (proleptic Gregorian; Howard Hinnant's
    /// civil_from_days).
    pub fn from_unix(secs: i64) -> Utc {
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400) as u32;
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        Utc {
            year: yoe + era * 400 + i64::from(month <= 2),
            month,
            day,
            hour: rem / 3600,
            minute: rem % 3600 / 60,
            second: rem % 60,
        }
    }

    /// Now.
    pub fn now() -> Utc {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        Utc::from_unix(secs)
    }
}

/// The current UTC time as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc_now_rfc3339() -> String {
    let t = Utc::now();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

/// The whole result document of one suite run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Doc {
    /// Suite name.
    pub suite: String,
    /// Format version, 1.
    pub schema: u32,
    /// Whether `--quick` was given.
    pub quick: bool,
    /// Machine facts.
    pub host: Host,
    /// Start time, RFC 3339 UTC.
    pub started_at: String,
    /// Rounds run (extra field).
    pub rounds: u32,
    /// Wall time of the whole suite in seconds (extra field).
    pub elapsed_s: f64,
    /// One row per (case, system).
    pub rows: Vec<Row>,
}

impl Doc {
    /// Writes the pretty-printed JSON document to `path`.
    pub fn write_json(&self, path: &Path) -> Result<()> {
        let mut text = serde_json::to_string_pretty(self)?;
        text.push('\n');
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    }

    /// The Markdown rendering: a one-line header and a table.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let h = &self.host;
        let _ = writeln!(
            out,
            "**{}** suite ({}, {} round{}, {:.1} s) on {} cores, kernel {}, io_uring {}, cgroup {}, started {}\n",
            self.suite,
            if self.quick { "quick" } else { "full" },
            self.rounds,
            if self.rounds == 1 { "" } else { "s" },
            self.elapsed_s,
            h.cores,
            h.kernel,
            if h.io_uring { "yes" } else { "no" },
            h.cgroup,
            self.started_at
        );
        // The sd column only appears when some row has an sd (the `rpc` suite), the CPU columns
        // when some row measured CPU.
        let with_sd = self.rows.iter().any(|r| r.sd_us.is_some());
        let with_cpu = self.rows.iter().any(|r| r.cpu_us_per_op.is_some());
        let (sd_head, sd_rule) = if with_sd { (" sd µs |", "---:|") } else { ("", "") };
        let (cpu_head, cpu_rule) = if with_cpu {
            (" CPU µs/op (client + server) | cores busy |", "---:|---:|")
        } else {
            ("", "")
        };
        let _ = writeln!(
            out,
            "| case | system | samples | p50 µs | p99 µs | p99.9 µs | max µs | mean µs |{sd_head} ops/s |{cpu_head} note |"
        );
        let _ = writeln!(
            out,
            "|---|---|---:|---:|---:|---:|---:|---:|{sd_rule}---:|{cpu_rule}---|"
        );
        for r in &self.rows {
            let note = match &r.error {
                Some(e) => format!("**error**: {}", e.replace('|', "\\|").replace('\n', " ")),
                None => r.note.replace('|', "\\|"),
            };
            let sd = if with_sd {
                format!(" {} |", fmt_us(r.sd_us))
            } else {
                String::new()
            };
            let cpu = if with_cpu {
                format!(" {} | {} |", fmt_cpu(r), fmt_busy(r.cores_busy))
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} |{sd} {} |{cpu} {} |",
                r.case,
                r.system,
                r.samples.map_or("—".to_string(), |s| s.to_string()),
                fmt_us(r.p50_us),
                fmt_us(r.p99_us),
                fmt_us(r.p999_us),
                fmt_us(r.max_us),
                fmt_us(r.mean_us),
                r.ops_per_s.map_or("—".to_string(), |x| format!("{x:.0}")),
                note
            );
        }
        out.push_str(&crate::suites::extra_markdown(self));
        out
    }

    /// Writes the Markdown rendering to `path`.
    pub fn write_md(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.markdown()).with_context(|| format!("writing {}", path.display()))
    }
}

/// A figure in µs to a tenth, or a dash.
pub(crate) fn fmt_us(v: Option<f64>) -> String {
    v.map_or("—".to_string(), |x| format!("{x:.1}"))
}

/// `num / den`, when both are known and `den` is positive.
pub(crate) fn ratio(num: Option<f64>, den: Option<f64>) -> Option<f64> {
    match (num, den) {
        (Some(n), Some(d)) if d > 0.0 => Some(n / d),
        _ => None,
    }
}

/// A ratio as `1.23×`, or a dash.
pub(crate) fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or("—".to_string(), |r| format!("{r:.2}×"))
}

/// `total (client + server)`, or a dash.
pub(crate) fn fmt_cpu(r: &Row) -> String {
    match (r.cpu_us_per_op, r.client_cpu_us_per_op, r.server_cpu_us_per_op) {
        (Some(t), Some(c), Some(s)) => format!("{t:.1} ({c:.1} + {s:.1})"),
        (Some(t), _, _) => format!("{t:.1}"),
        _ => "—".to_string(),
    }
}

/// Cores busy to a hundredth, or a dash.
pub(crate) fn fmt_busy(v: Option<f64>) -> String {
    v.map_or("—".to_string(), |x| format!("{x:.2}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_figures_serialize_as_null_and_error_is_omitted_when_none() {
        let r = Row::failed("c", "s", "why".into(), String::new());
        let v = serde_json::to_value(&r).unwrap();
        assert!(v["p50_us"].is_null());
        assert_eq!(v["error"], "why");
        let mut h = Histogram::<u64>::new_with_bounds(1, 1_000_000, 3).unwrap();
        h.record(31_200).unwrap();
        let r = Row::measured("c", "s", &h, None, String::new());
        let v = serde_json::to_value(&r).unwrap();
        assert!(v.get("error").is_none());
        assert!(v["ops_per_s"].is_null());
        assert!((v["p50_us"].as_f64().unwrap() - 31.2).abs() < 0.1);
        assert!(v["sd_us"].is_null());
        h.record(32_200).unwrap();
        let v = serde_json::to_value(Row::measured("c", "s", &h, None, String::new()).with_sd(&h)).unwrap();
        assert!((v["sd_us"].as_f64().unwrap() - 0.5).abs() < 0.05, "{v}");
    }

    #[test]
    fn markdown_has_an_sd_column_only_when_a_row_has_an_sd() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 1_000_000, 3).unwrap();
        h.record(10_000).unwrap();
        let doc = |rows: Vec<Row>| Doc {
            suite: "t".into(),
            schema: 1,
            quick: true,
            host: Host::detect(),
            started_at: utc_now_rfc3339(),
            rounds: 1,
            elapsed_s: 0.0,
            rows,
        };
        let plain = doc(vec![Row::measured("c", "s", &h, None, String::new())]).markdown();
        assert!(!plain.contains("sd µs"), "{plain}");
        let md = doc(vec![
            Row::measured("c", "s", &h, None, String::new()).with_sd(&h),
            Row::failed("c", "t", "why".into(), String::new()),
        ])
        .markdown();
        assert!(md.contains("| mean µs | sd µs | ops/s |"), "{md}");
        assert!(md.contains("| 10.0 | 0.0 | — |"), "{md}");
        let cols = |l: &str| l.matches('|').count();
        let lines: Vec<&str> = md.lines().filter(|l| l.starts_with('|')).collect();
        assert!(lines.iter().all(|l| cols(l) == cols(lines[0])), "{md}");
    }

    #[test]
    fn timestamp_shape() {
        let t = utc_now_rfc3339();
        assert_eq!(t.len(), 20);
        assert!(t.ends_with('Z'));
        assert_eq!(&t[4..5], "-");
        assert_eq!(&t[10..11], "T");
    }
}
