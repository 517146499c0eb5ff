//! `system-status`: samples the host (see `crate::host`) on its schedule, with the limits its
//! settings give, and keeps the series the dashboard and the spawner read.

use std::sync::Arc;

use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::json;

use crate::host::Limits;

use super::{settings, Loop, LoopContext, Outcome};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SystemStatus {
    #[serde(default = "ninety")]
    cpu_percent: f32,
    #[serde(default = "ninety")]
    memory_percent: f32,
    #[serde(default = "five")]
    disk_free_percent: f32,
    #[serde(default = "keep")]
    keep_samples: usize,
}

fn ninety() -> f32 {
    90.0
}
fn five() -> f32 {
    5.0
}
fn keep() -> usize {
    360
}

/// Builds the loop.
pub fn build(_name: &str, table: &toml::Table) -> Result<Arc<dyn Loop>, String> {
    let s: SystemStatus = settings(table)?;
    for (name, value) in [
        ("cpu_percent", s.cpu_percent),
        ("memory_percent", s.memory_percent),
        ("disk_free_percent", s.disk_free_percent),
    ] {
        if !(0.0..=100.0).contains(&value) {
            return Err(format!("{name} must be between 0 and 100"));
        }
    }
    Ok(Arc::new(s))
}

impl SystemStatus {
    fn limits(&self) -> Limits {
        Limits {
            cpu_percent: self.cpu_percent,
            memory_percent: self.memory_percent,
            disk_free_percent: self.disk_free_percent,
        }
    }
}

impl Loop for SystemStatus {
    fn run_once<'a>(&'a self, ctx: &'a LoopContext) -> BoxFuture<'a, anyhow::Result<Outcome>> {
        Box::pin(async move {
            let host = ctx.host.clone();
            let data_dir = ctx.data_dir.clone();
            let (limits, keep) = (self.limits(), self.keep_samples);
            // sysinfo reads /proc synchronously; keep it off the async workers.
            let sample = tokio::task::spawn_blocking(move || {
                let sample = host.sample(&data_dir, &limits)?;
                host.push(sample.clone(), keep);
                anyhow::Ok(sample)
            })
            .await??;
            let summary = if sample.overloaded {
                format!(
                    "overloaded, so no agent process is started: {}",
                    sample.reasons.join("; ")
                )
            } else {
                format!(
                    "cpu {:.0}% (last minute {:.0}%), memory {} MiB used, disk {} MiB free",
                    sample.cpu_percent,
                    sample.cpu_percent_1m,
                    sample.memory_used_bytes >> 20,
                    sample.disk_free_bytes >> 20
                )
            };
            Ok(Outcome::new(summary, json!(sample)))
        })
    }
}
