//! How many CPUs this process may use: the CPUs of its CPU set
//! (`sched_getaffinity`), further limited by the CPU quota of its cgroup
//! (v2 `cpu.max`, v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`).
//!
//! A container given `docker run --cpus=1` or a Kubernetes `limits.cpu: 1`
//! still sees every core of the host in its CPU set; the quota is what says
//! it may only use one core's worth of time per period. Workers beyond that
//! only take turns on it. `workers.sched_threads: auto` starts one worker
//! per CPU this gives, rounded up (a quota of 1.5 CPUs gets 2 workers).
//!
//! The quota that binds is the smallest along the cgroup's path, from the
//! process's own cgroup up to the top of the hierarchy as mounted here (a
//! Kubernetes pod's limit sits on the pod's cgroup, above the container's).
//! Parsing is pure and tested on sample file contents; [`CpuLimit::this_process`]
//! reads the real files.

use std::fmt;
use std::path::{Path, PathBuf};

/// A cgroup CPU quota: `quota_us` of CPU time per `period_us`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quota {
    pub quota_us: u64,
    pub period_us: u64,
    /// The file it was read from (for messages).
    pub file: PathBuf,
}

impl Quota {
    /// Whole CPUs it allows, rounded up: at least 1.
    pub fn cpus(&self) -> u32 {
        let n = self.quota_us.div_ceil(self.period_us.max(1));
        u32::try_from(n).unwrap_or(u32::MAX).max(1)
    }

    /// Whether this quota allows less CPU time than `other`.
    fn tighter_than(&self, other: &Quota) -> bool {
        u128::from(self.quota_us) * u128::from(other.period_us)
            < u128::from(other.quota_us) * u128::from(self.period_us)
    }
}

impl fmt::Display for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let exact = self.quota_us as f64 / self.period_us.max(1) as f64;
        write!(
            f,
            "{} us per {} us ({exact:.2} CPUs) in {}",
            self.quota_us,
            self.period_us,
            self.file.display()
        )
    }
}

/// What limits the CPUs of this process. Both parts may be unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuLimit {
    /// CPUs in the process's CPU set.
    pub cpu_set: Option<u32>,
    /// The tightest cgroup CPU quota on the process's cgroup path.
    pub quota: Option<Quota>,
}

impl CpuLimit {
    /// Reads this process's CPU set and cgroup quota.
    pub fn this_process() -> CpuLimit {
        let cpu_set = core_affinity::get_core_ids()
            .map(|ids| ids.len() as u32)
            .filter(|&n| n > 0);
        let read = |p: &Path| std::fs::read_to_string(p).ok();
        let quota = match (
            read(Path::new("/proc/self/cgroup")),
            read(Path::new("/proc/self/mountinfo")),
        ) {
            (Some(cgroup), Some(mounts)) => find_quota(&cgroup, &mounts, &read),
            _ => None,
        };
        CpuLimit { cpu_set, quota }
    }

    /// CPUs the process may use: the CPU set, or fewer when the quota says
    /// so. None when neither is known.
    pub fn usable(&self) -> Option<u32> {
        match (self.cpu_set, self.quota.as_ref().map(Quota::cpus)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether the quota, rather than the CPU set, is what limits.
    pub fn quota_binds(&self) -> bool {
        match (&self.quota, self.cpu_set) {
            (Some(q), Some(set)) => q.cpus() < set,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }

    /// Why [`usable`](Self::usable) is what it is, for the log.
    pub fn explain(&self) -> String {
        let set = match self.cpu_set {
            Some(n) => format!("{n} CPU(s) in this process's CPU set"),
            None => "the CPU set could not be read".into(),
        };
        match &self.quota {
            Some(q) if self.quota_binds() => format!(
                "the cgroup CPU quota ({q}) allows {} CPU(s), rounded up; {set}",
                q.cpus()
            ),
            Some(q) => format!("{set}; the cgroup CPU quota ({q}) allows as many or more"),
            None => format!("{set}; no cgroup CPU quota"),
        }
    }
}

/// `cpu.max` of cgroup v2: "QUOTA PERIOD", or "max PERIOD" for no limit.
/// Ok(None) for no limit.
pub fn parse_cpu_max(text: &str) -> Result<Option<(u64, u64)>, String> {
    let mut it = text.split_whitespace();
    let (Some(quota), period, None) = (it.next(), it.next(), it.next()) else {
        return Err(format!("expected \"QUOTA PERIOD\", got {text:?}"));
    };
    // The kernel's default period when only the quota is written.
    let period = match period {
        Some(p) => p
            .parse::<u64>()
            .map_err(|_| format!("bad period in {text:?}"))?,
        None => 100_000,
    };
    if quota == "max" {
        return Ok(None);
    }
    let quota = quota
        .parse::<u64>()
        .map_err(|_| format!("bad quota in {text:?}"))?;
    if period == 0 {
        return Err(format!("zero period in {text:?}"));
    }
    Ok(Some((quota, period)))
}

/// cgroup v1's `cpu.cfs_quota_us` (-1: no limit) and `cpu.cfs_period_us`.
pub fn parse_cfs(quota: &str, period: &str) -> Result<Option<(u64, u64)>, String> {
    let q: i64 = quota
        .trim()
        .parse()
        .map_err(|_| format!("bad cpu.cfs_quota_us {quota:?}"))?;
    if q < 0 {
        return Ok(None);
    }
    let p: u64 = period
        .trim()
        .parse()
        .map_err(|_| format!("bad cpu.cfs_period_us {period:?}"))?;
    if p == 0 {
        return Err("cpu.cfs_period_us is 0".into());
    }
    Ok(Some((q as u64, p)))
}

/// One line of /proc/self/cgroup: "ID:CONTROLLERS:PATH".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub hierarchy: u32,
    /// Empty for the v2 (unified) hierarchy, whose ID is 0.
    pub controllers: Vec<String>,
    pub path: String,
}

pub fn parse_proc_cgroup(text: &str) -> Vec<Membership> {
    text.lines()
        .filter_map(|line| {
            let mut it = line.splitn(3, ':');
            let hierarchy = it.next()?.parse().ok()?;
            let controllers = it
                .next()?
                .split(',')
                .filter(|c| !c.is_empty())
                .map(String::from)
                .collect();
            let path = it.next()?.to_string();
            Some(Membership {
                hierarchy,
                controllers,
                path,
            })
        })
        .collect()
}

/// A cgroup file system as /proc/self/mountinfo lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    /// The cgroup this mount shows at its mount point ("/" for the whole
    /// hierarchy; a container may be shown only its own).
    pub root: String,
    pub point: PathBuf,
    /// true: cgroup2; false: a v1 hierarchy, with its `controllers`.
    pub v2: bool,
    pub controllers: Vec<String>,
}

/// The cgroup mounts of a /proc/self/mountinfo text.
pub fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    text.lines()
        .filter_map(|line| {
            // ID PARENT MAJ:MIN ROOT POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
            let (left, right) = line.split_once(" - ")?;
            let f: Vec<&str> = left.split(' ').collect();
            let r: Vec<&str> = right.split(' ').collect();
            let (root, point) = (f.get(3)?, f.get(4)?);
            let v2 = match *r.first()? {
                "cgroup2" => true,
                "cgroup" => false,
                _ => return None,
            };
            let controllers = if v2 {
                Vec::new()
            } else {
                r.get(2)?
                    .split(',')
                    .filter(|o| !matches!(*o, "rw" | "ro") && !o.contains('='))
                    .map(String::from)
                    .collect()
            };
            Some(CgroupMount {
                root: unescape(root),
                point: PathBuf::from(unescape(point)),
                v2,
                controllers,
            })
        })
        .collect()
}

/// mountinfo writes space, tab, newline and backslash as \ooo.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], oct) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The directory of a cgroup `path` under `mount`: the path relative to the
/// mount's root. A path outside the mount's root (a container shown only its
/// own cgroup, or a path with `..` from another namespace) is the mount
/// point itself: the closest this process can see.
fn cgroup_dir(mount: &CgroupMount, path: &str) -> PathBuf {
    if path.split('/').any(|c| c == "..") {
        return mount.point.clone();
    }
    let root = mount.root.trim_end_matches('/');
    let rel = match path.strip_prefix(root) {
        Some(rest) if rest.is_empty() || rest.starts_with('/') || root.is_empty() => rest,
        _ => return mount.point.clone(),
    };
    mount.point.join(rel.trim_start_matches('/'))
}

/// The tightest CPU quota on this process's cgroup paths, from the text of
/// /proc/self/cgroup and /proc/self/mountinfo, reading each cgroup's files
/// with `read`. Every level from the process's cgroup up to the mount point
/// counts, in the v2 hierarchy and in a v1 hierarchy with the cpu
/// controller alike; unreadable or malformed files are skipped.
pub fn find_quota(
    proc_cgroup: &str,
    mountinfo: &str,
    read: &dyn Fn(&Path) -> Option<String>,
) -> Option<Quota> {
    let mounts = parse_mountinfo(mountinfo);
    let mut best: Option<Quota> = None;
    for m in parse_proc_cgroup(proc_cgroup) {
        let v2 = m.hierarchy == 0 && m.controllers.is_empty();
        let mount = if v2 {
            mounts.iter().find(|x| x.v2)
        } else if m.controllers.iter().any(|c| c == "cpu") {
            mounts
                .iter()
                .find(|x| !x.v2 && x.controllers.iter().any(|c| c == "cpu"))
        } else {
            None
        };
        let Some(mount) = mount else { continue };
        let mut dir = cgroup_dir(mount, &m.path);
        loop {
            let found = if v2 {
                let file = dir.join("cpu.max");
                read(&file)
                    .and_then(|t| parse_cpu_max(&t).ok().flatten())
                    .map(|qp| (qp, file))
            } else {
                let file = dir.join("cpu.cfs_quota_us");
                match (read(&file), read(&dir.join("cpu.cfs_period_us"))) {
                    (Some(q), Some(p)) => parse_cfs(&q, &p).ok().flatten().map(|qp| (qp, file)),
                    _ => None,
                }
            };
            if let Some(((quota_us, period_us), file)) = found {
                let q = Quota {
                    quota_us,
                    period_us,
                    file,
                };
                if best.as_ref().is_none_or(|b| q.tighter_than(b)) {
                    best = Some(q);
                }
            }
            if dir == mount.point || !dir.pop() || !dir.starts_with(&mount.point) {
                break;
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn files(list: &[(&str, &str)]) -> impl Fn(&Path) -> Option<String> {
        let map: HashMap<PathBuf, String> = list
            .iter()
            .map(|(p, t)| (PathBuf::from(p), format!("{t}\n")))
            .collect();
        move |p: &Path| map.get(p).cloned()
    }

    const V2_MOUNT: &str = "29 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n";

    #[test]
    fn cpu_max_of_cgroup_v2() {
        assert_eq!(parse_cpu_max("max 100000\n"), Ok(None));
        assert_eq!(parse_cpu_max("150000 100000\n"), Ok(Some((150000, 100000))));
        assert_eq!(parse_cpu_max("50000"), Ok(Some((50000, 100000))));
        assert!(parse_cpu_max("").is_err());
        assert!(parse_cpu_max("lots 100000").is_err());
        assert!(parse_cpu_max("1000 0").is_err());
        assert!(parse_cpu_max("1 2 3").is_err());
    }

    #[test]
    fn cfs_quota_and_period_of_cgroup_v1() {
        assert_eq!(parse_cfs("-1\n", "100000\n"), Ok(None));
        assert_eq!(
            parse_cfs("100000\n", "100000\n"),
            Ok(Some((100000, 100000)))
        );
        assert_eq!(parse_cfs("250000", "100000"), Ok(Some((250000, 100000))));
        assert!(parse_cfs("x", "100000").is_err());
        assert!(parse_cfs("100000", "0").is_err());
    }

    #[test]
    fn a_quota_is_rounded_up_to_whole_cpus() {
        let q = |quota_us, period_us| Quota {
            quota_us,
            period_us,
            file: PathBuf::from("/x"),
        };
        assert_eq!(q(100_000, 100_000).cpus(), 1);
        assert_eq!(q(150_000, 100_000).cpus(), 2);
        assert_eq!(q(200_000, 100_000).cpus(), 2);
        assert_eq!(q(10_000, 100_000).cpus(), 1, "never 0");
        assert_eq!(q(400_000, 50_000).cpus(), 8);
        assert!(q(1, 2).tighter_than(&q(3, 4)));
        assert!(!q(3, 4).tighter_than(&q(3, 4)));
    }

    #[test]
    fn the_container_view_of_cgroup_v2() {
        // A container with its own cgroup namespace sees its cgroup as "/".
        let read = files(&[("/sys/fs/cgroup/cpu.max", "100000 100000")]);
        let q = find_quota("0::/\n", V2_MOUNT, &read).unwrap();
        assert_eq!((q.quota_us, q.period_us, q.cpus()), (100000, 100000, 1));
        assert_eq!(q.file, Path::new("/sys/fs/cgroup/cpu.max"));
        let none = files(&[("/sys/fs/cgroup/cpu.max", "max 100000")]);
        assert_eq!(find_quota("0::/\n", V2_MOUNT, &none), None);
        // The root cgroup has no cpu.max at all.
        assert_eq!(find_quota("0::/\n", V2_MOUNT, &files(&[])), None);
    }

    #[test]
    fn nested_cgroups_the_tightest_level_counts() {
        // A Kubernetes pod: the pod's cgroup has the limit, the container's
        // none, the QoS class above a looser one.
        let path =
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-pod1.slice/cri-abc.scope\n";
        let read = files(&[
            ("/sys/fs/cgroup/kubepods.slice/cpu.max", "max 100000"),
            (
                "/sys/fs/cgroup/kubepods.slice/kubepods-burstable.slice/cpu.max",
                "800000 100000",
            ),
            (
                "/sys/fs/cgroup/kubepods.slice/kubepods-burstable.slice/kubepods-pod1.slice/cpu.max",
                "150000 100000",
            ),
            (
                "/sys/fs/cgroup/kubepods.slice/kubepods-burstable.slice/kubepods-pod1.slice/cri-abc.scope/cpu.max",
                "max 100000",
            ),
            // Not on our path: ignored.
            ("/sys/fs/cgroup/system.slice/cpu.max", "10000 100000"),
        ]);
        let q = find_quota(path, V2_MOUNT, &read).unwrap();
        assert_eq!((q.quota_us, q.cpus()), (150000, 2));
        assert!(q.file.ends_with("kubepods-pod1.slice/cpu.max"), "{q}");
        // The periods differ: compared as fractions of a CPU.
        let read = files(&[
            ("/sys/fs/cgroup/a/cpu.max", "50000 50000"),
            ("/sys/fs/cgroup/a/b/cpu.max", "150000 100000"),
        ]);
        let q = find_quota("0::/a/b\n", V2_MOUNT, &read).unwrap();
        assert_eq!((q.quota_us, q.period_us, q.cpus()), (50000, 50000, 1));
    }

    #[test]
    fn cgroup_v1_as_docker_shows_it() {
        // cgroup v1 without a cgroup namespace: the path is the host's, the
        // mount shows the container's own cgroup at the mount point.
        let cgroup = "12:pids:/docker/abc\n4:cpu,cpuacct:/docker/abc\n3:cpuset:/docker/abc\n0::/docker/abc\n";
        let mounts = "\
713 712 0:60 /docker/abc /sys/fs/cgroup/cpu,cpuacct ro,nosuid,nodev,noexec,relatime master:10 - cgroup cgroup rw,cpu,cpuacct
714 712 0:61 /docker/abc /sys/fs/cgroup/cpuset ro,nosuid,nodev,noexec,relatime master:11 - cgroup cgroup rw,cpuset
715 712 0:62 /docker/abc /sys/fs/cgroup/name\\040with\\040space ro - cgroup cgroup rw,name=systemd
";
        let read = files(&[
            ("/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "100000"),
            ("/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000"),
        ]);
        let q = find_quota(cgroup, mounts, &read).unwrap();
        assert_eq!((q.quota_us, q.period_us, q.cpus()), (100000, 100000, 1));
        assert_eq!(
            q.file,
            Path::new("/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us")
        );
        let unlimited = files(&[
            ("/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "-1"),
            ("/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000"),
        ]);
        assert_eq!(find_quota(cgroup, mounts, &unlimited), None);
        let m = parse_mountinfo(mounts);
        assert_eq!(m[0].controllers, ["cpu", "cpuacct"]);
        assert_eq!(m[2].point, Path::new("/sys/fs/cgroup/name with space"));
    }

    #[test]
    fn cgroup_v1_on_a_host_walks_up_to_the_mount() {
        let cgroup = "5:cpu:/batch/job7\n";
        let mounts = "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n";
        let read = files(&[
            ("/sys/fs/cgroup/cpu/batch/cpu.cfs_quota_us", "300000"),
            ("/sys/fs/cgroup/cpu/batch/cpu.cfs_period_us", "100000"),
            ("/sys/fs/cgroup/cpu/batch/job7/cpu.cfs_quota_us", "-1"),
            ("/sys/fs/cgroup/cpu/batch/job7/cpu.cfs_period_us", "100000"),
            ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "-1"),
            ("/sys/fs/cgroup/cpu/cpu.cfs_period_us", "100000"),
        ]);
        let q = find_quota(cgroup, mounts, &read).unwrap();
        assert_eq!((q.quota_us, q.cpus()), (300000, 3));
    }

    #[test]
    fn hybrid_hierarchies_take_the_tighter_and_ignore_the_rest() {
        // v1 cpu controller and a v2 mount without the cpu controller.
        let cgroup = "1:cpu:/\n4:memory:/x\n0::/\n";
        let mounts = "\
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
";
        assert_eq!(find_quota(cgroup, mounts, &files(&[])), None);
        let read = files(&[
            ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "400000"),
            ("/sys/fs/cgroup/cpu/cpu.cfs_period_us", "100000"),
            ("/sys/fs/cgroup/unified/cpu.max", "200000 100000"),
        ]);
        assert_eq!(find_quota(cgroup, mounts, &read).unwrap().cpus(), 2);
        // Garbage in a file is skipped, not a quota of 0.
        let bad = files(&[("/sys/fs/cgroup/unified/cpu.max", "garbage")]);
        assert_eq!(find_quota(cgroup, mounts, &bad), None);
        // A path from another namespace ("/../..") is read at the mount point.
        let read = files(&[("/sys/fs/cgroup/cpu.max", "100000 100000")]);
        assert_eq!(
            find_quota("0::/../../x\n", V2_MOUNT, &read).unwrap().cpus(),
            1
        );
        // No cgroup file system at all.
        assert_eq!(find_quota("0::/\n", "", &read), None);
    }

    #[test]
    fn usable_cpus_are_the_set_limited_by_the_quota() {
        let quota = |q| {
            Some(Quota {
                quota_us: q,
                period_us: 100_000,
                file: PathBuf::from("/sys/fs/cgroup/cpu.max"),
            })
        };
        let l = CpuLimit {
            cpu_set: Some(8),
            quota: quota(100_000),
        };
        assert_eq!(l.usable(), Some(1));
        assert!(l.quota_binds());
        assert!(
            l.explain().contains("allows 1 CPU(s), rounded up"),
            "{}",
            l.explain()
        );
        let l = CpuLimit {
            cpu_set: Some(2),
            quota: quota(400_000),
        };
        assert_eq!(l.usable(), Some(2));
        assert!(!l.quota_binds());
        let l = CpuLimit {
            cpu_set: Some(4),
            quota: None,
        };
        assert_eq!(l.usable(), Some(4));
        assert!(l.explain().contains("no cgroup CPU quota"));
        assert_eq!(CpuLimit::default().usable(), None);
        let l = CpuLimit {
            cpu_set: None,
            quota: quota(250_000),
        };
        assert_eq!(l.usable(), Some(3));
    }

    #[test]
    fn this_process_reads_something_sensible() {
        let l = CpuLimit::this_process();
        let n = l.usable().expect("a Linux test host has a CPU set");
        assert!(n >= 1 && n <= l.cpu_set.unwrap(), "{l:?}");
    }
}
