//! CPU time and memory of a process, read from `/proc` (Linux, through `procfs`), and this
//! process's own CPU time from `getrusage(2)` (through `nix`).

use std::io;

/// One reading of a server process.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProcSample {
    /// User + system CPU time so far, in seconds.
    pub cpu_seconds: f64,
    /// Peak resident set size (VmHWM) in bytes, if reported.
    pub peak_rss_bytes: Option<u64>,
    /// Current resident set size (VmRSS) in bytes, if reported.
    pub rss_bytes: Option<u64>,
}

/// Reads `/proc/PID/stat` and `/proc/PID/status`.
pub fn sample(pid: u32) -> io::Result<ProcSample> {
    let pid = i32::try_from(pid).map_err(io::Error::other)?;
    let process = procfs::process::Process::new(pid).map_err(io::Error::other)?;
    let stat = process.stat().map_err(io::Error::other)?;
    let status = process.status().map_err(io::Error::other)?;
    Ok(ProcSample {
        cpu_seconds: (stat.utime + stat.stime) as f64 / procfs::ticks_per_second() as f64,
        peak_rss_bytes: status.vmhwm.map(|kb| kb * 1024),
        rss_bytes: status.vmrss.map(|kb| kb * 1024),
    })
}

/// CPU seconds (user + system) this process has used so far.
pub fn own_cpu_seconds() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    let Ok(usage) = getrusage(UsageWho::RUSAGE_SELF) else {
        return 0.0;
    };
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    secs(usage.user_time()) + secs(usage.system_time())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_can_be_sampled() {
        let busy: u64 = (0..2_000_000u64).map(std::hint::black_box).sum();
        assert!(busy > 0);
        let s = sample(std::process::id()).unwrap();
        assert!(s.peak_rss_bytes.unwrap() > 0);
        assert!(s.rss_bytes.unwrap() <= s.peak_rss_bytes.unwrap());
        assert!(s.cpu_seconds >= 0.0);
        assert!(own_cpu_seconds() > 0.0);
        assert!(sample(u32::MAX).is_err());
    }
}
