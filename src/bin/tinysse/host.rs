//! Host statistics for the demo dashboard, read from Linux `/proc`. Every
//! field is optional: on a non-Linux host, or when a file cannot be read or
//! parsed, it is left out. Nothing here panics.

use serde_json::{Map, Value};

/// Samples host load, CPU, memory and network counters. CPU usage is a rate
/// over the previous sample, so the first [`HostSampler::sample`] has none.
#[derive(Debug, Default)]
pub struct HostSampler {
    prev_cpu: Option<CpuTimes>,
}

/// Aggregate CPU jiffies from the first line of `/proc/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    pub idle: u64,
    pub total: u64,
}

impl HostSampler {
    pub fn new() -> HostSampler {
        HostSampler { prev_cpu: None }
    }

    /// One sample of the host fields: `load1`, `load5`, `load15`, `cpu_pct`,
    /// `mem_used_bytes`, `mem_total_bytes`, `net_rx_bytes`, `net_tx_bytes`.
    pub fn sample(&mut self) -> Map<String, Value> {
        let read = |path: &str| std::fs::read_to_string(path).ok();
        let mut m = Map::new();
        if let Some((l1, l5, l15)) = read("/proc/loadavg").and_then(|s| parse_loadavg(&s)) {
            put_f64(&mut m, "load1", l1);
            put_f64(&mut m, "load5", l5);
            put_f64(&mut m, "load15", l15);
        }
        let now = read("/proc/stat").and_then(|s| parse_cpu(&s));
        if let (Some(prev), Some(cur)) = (self.prev_cpu, now)
            && let Some(pct) = cpu_pct(prev, cur)
        {
            put_f64(&mut m, "cpu_pct", pct);
        }
        self.prev_cpu = now.or(self.prev_cpu);
        if let Some((used, total)) = read("/proc/meminfo").and_then(|s| parse_meminfo(&s)) {
            m.insert("mem_used_bytes".into(), Value::from(used));
            m.insert("mem_total_bytes".into(), Value::from(total));
        }
        if let Some((rx, tx)) = read("/proc/net/dev").and_then(|s| parse_net_dev(&s)) {
            m.insert("net_rx_bytes".into(), Value::from(rx));
            m.insert("net_tx_bytes".into(), Value::from(tx));
        }
        m
    }
}

/// Inserts a finite float, rounded to two decimals; NaN/inf are left out.
fn put_f64(m: &mut Map<String, Value>, key: &str, v: f64) {
    let rounded = (v * 100.0).round() / 100.0;
    if let Some(n) = serde_json::Number::from_f64(rounded) {
        m.insert(key.into(), Value::Number(n));
    }
}

/// `/proc/loadavg`: "0.52 0.58 0.59 1/467 12345".
pub fn parse_loadavg(s: &str) -> Option<(f64, f64, f64)> {
    let mut it = s.split_whitespace().map(|w| w.parse::<f64>().ok());
    Some((it.next()??, it.next()??, it.next()??))
}

/// First line of `/proc/stat`: "cpu  user nice system idle iowait irq softirq steal ...".
/// Idle time is `idle + iowait`; guest columns are already counted in user/nice.
pub fn parse_cpu(s: &str) -> Option<CpuTimes> {
    let line = s.lines().next()?;
    let mut words = line.split_whitespace();
    if words.next()? != "cpu" {
        return None;
    }
    let v: Vec<u64> = words.map(|w| w.parse().ok()).collect::<Option<_>>()?;
    if v.len() < 4 {
        return None;
    }
    let idle = v[3] + v.get(4).copied().unwrap_or(0);
    let total = v.iter().take(8).sum();
    Some(CpuTimes { idle, total })
}

/// Busy percentage between two samples; `None` when no time passed or the
/// counters went backwards.
pub fn cpu_pct(prev: CpuTimes, cur: CpuTimes) -> Option<f64> {
    let total = cur.total.checked_sub(prev.total)?;
    let idle = cur.idle.checked_sub(prev.idle)?;
    if total == 0 || idle > total {
        return None;
    }
    Some((total - idle) as f64 * 100.0 / total as f64)
}

/// `/proc/meminfo`: (MemTotal - MemAvailable, MemTotal), in bytes.
pub fn parse_meminfo(s: &str) -> Option<(u64, u64)> {
    let field = |name: &str| -> Option<u64> {
        let (_, rest) = s
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim() == name)?;
        let kb: u64 = rest.split_whitespace().next()?.parse().ok()?;
        kb.checked_mul(1024)
    };
    let total = field("MemTotal")?;
    let avail = field("MemAvailable")?;
    Some((total.saturating_sub(avail), total))
}

/// `/proc/net/dev`: received and transmitted bytes summed over every
/// interface except `lo`.
pub fn parse_net_dev(s: &str) -> Option<(u64, u64)> {
    let mut sum: Option<(u64, u64)> = None;
    for line in s.lines() {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name == "lo" || name.contains('|') {
            continue;
        }
        let cols: Vec<&str> = rest.split_whitespace().collect();
        let (Some(rx), Some(tx)) = (cols.first(), cols.get(8)) else {
            continue;
        };
        let (Ok(rx), Ok(tx)) = (rx.parse::<u64>(), tx.parse::<u64>()) else {
            continue;
        };
        let (r, t) = sum.unwrap_or((0, 0));
        sum = Some((r.saturating_add(rx), t.saturating_add(tx)));
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  10132153 290696 3084719 46828483 16683 0 25195 0 175628 0\n\
                        cpu0 1393280 32966 572056 13343292 6130 0 17875 0 23933 0\n\
                        intr 1462898 0 0\n";
    const MEMINFO: &str = "MemTotal:       16307560 kB\nMemFree:         5309536 kB\n\
                           MemAvailable:   10441444 kB\nBuffers:          347604 kB\n";
    const NETDEV: &str = "Inter-|   Receive                                                |  Transmit\n \
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
lo: 1000000    5000    0    0    0     0          0         0  1000000    5000    0    0    0     0       0          0\n  \
eth0: 123456789  98765    0    0    0     0          0         0 98765432   54321    0    0    0     0       0          0\n \
wlan0:    1000      10    0    0    0     0          0         0     2000      20    0    0    0     0       0          0\n";

    #[test]
    fn loadavg() {
        let want = Some((0.52, 0.58, 0.59));
        assert_eq!(parse_loadavg("0.52 0.58 0.59 1/467 12345\n"), want);
        assert_eq!(parse_loadavg("0.52 x 0.59"), None);
        assert_eq!(parse_loadavg(""), None);
    }

    #[test]
    fn cpu_counters_and_percentage() {
        let a = parse_cpu(STAT).unwrap();
        assert_eq!(a.idle, 46828483 + 16683);
        assert_eq!(a.total, 10132153 + 290696 + 3084719 + 46845166 + 25195);
        let b = CpuTimes {
            idle: a.idle + 75,
            total: a.total + 100,
        };
        assert_eq!(cpu_pct(a, b), Some(25.0));
        assert_eq!((cpu_pct(a, a), cpu_pct(b, a)), (None, None));
        assert_eq!(parse_cpu("intr 1 2 3\n"), None);
        assert_eq!(parse_cpu("cpu 1 2\n"), None);
    }

    #[test]
    fn meminfo() {
        let want = Some(((16307560 - 10441444) * 1024, 16307560 * 1024));
        assert_eq!(parse_meminfo(MEMINFO), want);
        assert_eq!(parse_meminfo("MemTotal: 100 kB\n"), None);
    }

    #[test]
    fn net_dev_skips_loopback() {
        let want = Some((123456789 + 1000, 98765432 + 2000));
        assert_eq!(parse_net_dev(NETDEV), want);
        assert_eq!(parse_net_dev("garbage\n"), None);
    }

    #[test]
    fn sample_never_panics() {
        let mut s = HostSampler::new();
        assert!(!s.sample().contains_key("cpu_pct"));
        s.sample();
    }
}
