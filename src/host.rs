//! The host the server runs on: CPU, memory and the data folder's disk, sampled by the
//! system-status loop; the recent series for the dashboard; and whether the host counts as
//! overloaded (the spawner starts no agent processes then). CPU is judged by its average over
//! the last minute, so a moment's burst on an ordinary busy machine does not hold spawns back.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Mutex;

use serde::Serialize;
use sysinfo::{Disks, System};
use utoipa::ToSchema;

use crate::domain::Timestamp;

/// How far back the CPU average looks.
const CPU_WINDOW_MS: i64 = 60_000;

/// The limits above which the host counts as overloaded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// CPU use over all cores, averaged over the last minute.
    pub cpu_percent: f32,
    /// Memory in use.
    pub memory_percent: f32,
    /// Free space left on the data folder's disk (below it: overloaded).
    pub disk_free_percent: f32,
}

/// One sample of the host.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct HostSample {
    /// When it was taken.
    pub at: Timestamp,
    /// CPU use over all cores since the previous sample, 0–100.
    pub cpu_percent: f32,
    /// CPU use averaged over the samples of the last minute (the overload judgement uses it).
    pub cpu_percent_1m: f32,
    /// 1-minute load average.
    pub load_1m: f64,
    /// Memory in use, bytes.
    pub memory_used_bytes: u64,
    /// Total memory, bytes.
    pub memory_total_bytes: u64,
    /// Free space on the data folder's disk, bytes.
    pub disk_free_bytes: u64,
    /// Size of that disk, bytes.
    pub disk_total_bytes: u64,
    /// Was the host overloaded by the thresholds then in force?
    pub overloaded: bool,
    /// Which thresholds were crossed.
    pub reasons: Vec<String>,
}

/// What the system-status loop has seen of the host.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct HostStatus {
    /// The newest sample, if any.
    pub latest: Option<HostSample>,
    /// Recent samples, oldest first.
    pub samples: Vec<HostSample>,
}

/// The host's samples, shared between the loop and its readers.
#[derive(Default)]
pub struct HostMonitor {
    samples: Mutex<VecDeque<HostSample>>,
    /// sysinfo needs two refreshes some time apart to measure CPU use; it keeps the last one.
    system: Mutex<Option<System>>,
}

impl HostMonitor {
    /// The newest sample and the series.
    pub fn status(&self) -> HostStatus {
        let samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        HostStatus {
            latest: samples.back().cloned(),
            samples: samples.iter().cloned().collect(),
        }
    }

    /// The average CPU use of the samples taken since `since`, together with `now_cpu`.
    fn cpu_average(&self, since: Timestamp, now_cpu: f32) -> f32 {
        let samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let recent: Vec<f32> = samples
            .iter()
            .filter(|s| s.at >= since)
            .map(|s| s.cpu_percent)
            .chain(std::iter::once(now_cpu))
            .collect();
        recent.iter().sum::<f32>() / recent.len() as f32
    }

    /// Adds a sample, keeping the newest `keep`.
    pub fn push(&self, sample: HostSample, keep: usize) {
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        samples.push_back(sample);
        while samples.len() > keep.max(1) {
            samples.pop_front();
        }
    }
}

/// The disk holding `path`: the mounted disk with the longest mount point that prefixes it.
fn disk_of(path: &Path) -> Option<(u64, u64)> {
    let path = path.canonicalize().ok()?;
    let disks = Disks::new_with_refreshed_list().ok()?;
    disks
        .iter()
        .filter(|d| path.starts_with(d.mount_point()))
        .max_by_key(|d| d.mount_point().as_os_str().len())
        .map(|d| (d.available_space(), d.total_space()))
}

impl HostMonitor {
    /// Samples the host now and judges it by `limits`. Blocks (sysinfo reads /proc, and the
    /// first sample waits to measure CPU use): call it on a blocking thread.
    #[allow(clippy::disallowed_methods)]
    pub fn sample(&self, data_dir: &Path, limits: &Limits) -> anyhow::Result<HostSample> {
        let mut guard = self.system.lock().unwrap_or_else(|p| p.into_inner());
        let first = guard.is_none();
        if first {
            *guard = Some(System::new().map_err(|e| anyhow::anyhow!("cannot read host statistics: {e}"))?);
        }
        let Some(system) = guard.as_mut() else {
            anyhow::bail!("host statistics are unavailable");
        };
        system.refresh_cpu_usage();
        if first {
            // CPU use is measured between two refreshes; the first run has only one.
            std::thread::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL);
            system.refresh_cpu_usage();
        }
        system.refresh_memory();
        let (disk_free, disk_total) = disk_of(data_dir).unwrap_or((0, 0));
        let cpu = system.global_cpu_usage();
        let now = Timestamp::now();
        let cpu_1m = self.cpu_average(now.plus_millis(-CPU_WINDOW_MS), cpu);
        let (used, total) = (system.used_memory(), system.total_memory());
        let mut reasons = Vec::new();
        if cpu_1m > limits.cpu_percent {
            reasons.push(format!(
                "CPU {cpu_1m:.0}% > {}% averaged over the last minute",
                limits.cpu_percent
            ));
        }
        let memory_percent = if total > 0 {
            used as f32 * 100.0 / total as f32
        } else {
            0.0
        };
        if memory_percent > limits.memory_percent {
            reasons.push(format!(
                "memory {memory_percent:.0}% > {}%",
                limits.memory_percent
            ));
        }
        if disk_total > 0 {
            let free_percent = disk_free as f32 * 100.0 / disk_total as f32;
            if free_percent < limits.disk_free_percent {
                reasons.push(format!(
                    "disk {free_percent:.1}% free < {}%",
                    limits.disk_free_percent
                ));
            }
        }
        Ok(HostSample {
            at: now,
            cpu_percent: cpu,
            cpu_percent_1m: cpu_1m,
            load_1m: System::load_average().map(|l| l.one).unwrap_or(0.0),
            memory_used_bytes: used,
            memory_total_bytes: total,
            disk_free_bytes: disk_free,
            disk_total_bytes: disk_total,
            overloaded: !reasons.is_empty(),
            reasons,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at: i64, cpu: f32) -> HostSample {
        HostSample {
            at: Timestamp(at),
            cpu_percent: cpu,
            cpu_percent_1m: cpu,
            load_1m: 0.0,
            memory_used_bytes: 0,
            memory_total_bytes: 0,
            disk_free_bytes: 0,
            disk_total_bytes: 0,
            overloaded: false,
            reasons: vec![],
        }
    }

    #[test]
    fn a_moments_burst_is_averaged_over_the_last_minute() {
        let monitor = HostMonitor::default();
        // An old burst is out of the window; a new one is diluted by the calm samples around it.
        for (at, cpu) in [
            (0, 100.0),
            (70_000, 10.0),
            (80_000, 99.0),
            (90_000, 10.0),
            (100_000, 10.0),
        ] {
            monitor.push(sample(at, cpu), 360);
        }
        let average = monitor.cpu_average(Timestamp(110_000 - CPU_WINDOW_MS), 10.0);
        assert!((average - 27.8).abs() < 0.1, "{average}");
        let busy = monitor.cpu_average(Timestamp(110_000 - 5_000), 99.0);
        assert_eq!(busy, 99.0, "only the newest sample in a short window");
    }
}
