//! The process metrics every Prometheus client exports (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, `process_open_fds`, ...), read from /proc on each
//! scrape, under the names and meanings dashboards and alerts for any process already use.
//! Linux only; elsewhere (or if /proc cannot be read) they are left out of the scrape.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Every process metric name as scraped.
pub const NAMES: &[&str] = &[
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_start_time_seconds",
    "process_open_fds",
    "process_max_fds",
];

#[derive(Debug, Default)]
pub struct ProcessCollector;

/// What one scrape reads of the process.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sample {
    pub cpu_seconds: f64,
    pub resident_bytes: f64,
    pub virtual_bytes: f64,
    pub start_time_seconds: f64,
    pub open_fds: f64,
    pub max_fds: Option<f64>,
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(s) = read() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(s.cpu_seconds);
        let e = encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            cpu.metric_type(),
        )?;
        cpu.encode(e)?;
        let mut gauge = |name: &str, help: &str, value: f64| {
            let g = ConstGauge::new(value);
            let e = encoder.encode_descriptor(name, help, None, g.metric_type())?;
            g.encode(e)
        };
        gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            s.resident_bytes,
        )?;
        gauge(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes",
            s.virtual_bytes,
        )?;
        gauge(
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch in seconds",
            s.start_time_seconds,
        )?;
        gauge(
            "process_open_fds",
            "Number of open file descriptors",
            s.open_fds,
        )?;
        if let Some(max) = s.max_fds {
            gauge(
                "process_max_fds",
                "Maximum number of open file descriptors",
                max,
            )?;
        }
        Ok(())
    }
}

/// This process, now; None where /proc cannot be read.
pub fn read() -> Option<Sample> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let boot = std::fs::read_to_string("/proc/stat").ok()?;
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as f64;
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    // SAFETY: sysconf only reads a system constant.
    let (ticks, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    parse(&stat, &boot, &limits, ticks as f64, page as f64, open_fds)
}

/// From /proc/self/stat, /proc/stat and /proc/self/limits (proc(5)), with the clock ticks
/// per second and the page size.
fn parse(
    stat: &str,
    boot: &str,
    limits: &str,
    ticks: f64,
    page: f64,
    open_fds: f64,
) -> Option<Sample> {
    if ticks <= 0.0 || page <= 0.0 {
        return None;
    }
    // The command name (field 2) may hold spaces and parentheses: fields are counted
    // after its last ')'. There, index 0 is field 3 (state).
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let field = |n: usize| -> Option<f64> { fields.get(n - 3)?.parse().ok() };
    let boot_time: f64 = boot
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let max_fds = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok());
    Some(Sample {
        cpu_seconds: (field(14)? + field(15)?) / ticks,
        start_time_seconds: boot_time + field(22)? / ticks,
        virtual_bytes: field(23)?,
        resident_bytes: field(24)? * page,
        open_fds,
        max_fds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "4242 (secret guard) (x) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 50 0 0 20 0 6 0 12000 104857600 2560 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
    const BOOT: &str = "cpu  1 2 3\nbtime 1700000000\nprocesses 10\n";
    const LIMITS: &str = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1048576              1048576              files\n";

    #[test]
    fn reads_cpu_memory_start_time_and_fds_from_proc() {
        let s = parse(STAT, BOOT, LIMITS, 100.0, 4096.0, 12.0).expect("parsed");
        assert_eq!(
            s,
            Sample {
                cpu_seconds: 3.0, // (250 + 50) ticks
                resident_bytes: 2560.0 * 4096.0,
                virtual_bytes: 104_857_600.0,
                start_time_seconds: 1_700_000_120.0, // boot + 12000 ticks
                open_fds: 12.0,
                max_fds: Some(1_048_576.0),
            }
        );
    }

    #[test]
    fn an_unreadable_stat_gives_nothing_rather_than_zeros() {
        assert_eq!(parse("4242 (x", BOOT, LIMITS, 100.0, 4096.0, 1.0), None);
        assert_eq!(parse(STAT, "cpu 1", LIMITS, 100.0, 4096.0, 1.0), None);
        assert_eq!(parse(STAT, BOOT, LIMITS, 0.0, 4096.0, 1.0), None);
    }

    #[test]
    fn this_process_is_read() {
        let s = read().expect("/proc is there on Linux");
        assert!(s.resident_bytes > 0.0 && s.open_fds > 0.0, "{s:?}");
        assert!(s.start_time_seconds > 1_600_000_000.0, "{s:?}");
    }
}
