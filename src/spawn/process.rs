//! Process-group signalling and process facts (start time, CPU, memory) for spawned runs.

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid as NixPid;
use sysinfo::{Pid, ProcessRefreshKind, ProcessStatus, ProcessesToUpdate, System};

/// Sends `signal` to the process group `pgid` (a run's process is its group's leader).
/// Returns false when the group no longer exists.
pub fn signal_group(pgid: i64, signal: Signal) -> bool {
    match i32::try_from(pgid) {
        Ok(id) if id > 1 => killpg(NixPid::from_raw(id), signal).is_ok(),
        _ => false,
    }
}

/// The start time (seconds since the epoch) of process `pid`, if it exists and is not a
/// zombie (a zombie has ended; only its exit status is left to collect).
pub fn start_time(pid: i64) -> Option<i64> {
    let pid = Pid::from_u32(u32::try_from(pid).ok()?);
    let mut system = System::new().ok()?;
    system.refresh_processes_specifics(
        ProcessesToUpdate::Some(&[pid]),
        true,
        ProcessRefreshKind::nothing(),
    );
    system
        .process(pid)
        .filter(|p| p.status() != ProcessStatus::Zombie)
        .map(|p| p.start_time() as i64)
}

/// Samples CPU and memory of one process; keeps state between samples (CPU use is a delta).
pub struct Sampler {
    system: Option<System>,
    pid: Pid,
}

impl Sampler {
    /// A sampler for `pid`.
    pub fn new(pid: i64) -> Self {
        Self {
            system: System::new().ok(),
            pid: Pid::from_u32(u32::try_from(pid).unwrap_or(0)),
        }
    }

    /// (CPU percent of one core, resident bytes), if the process is still there.
    pub fn sample(&mut self) -> Option<(f64, i64)> {
        let system = self.system.as_mut()?;
        system.refresh_processes_specifics(
            ProcessesToUpdate::Some(&[self.pid]),
            true,
            ProcessRefreshKind::nothing().with_cpu().with_memory(),
        );
        let p = system.process(self.pid)?;
        Some((
            f64::from(p.cpu_usage()),
            i64::try_from(p.memory()).unwrap_or(i64::MAX),
        ))
    }
}
