//! Real hook processes: each is reaped, its outcome counted, a hung one killed at the deadline.

use std::time::{Duration, Instant};

use super::*;

/// `/proc/<pid>/stat`'s state letter, parent and process group.
fn stat(pid: u32) -> Option<(char, u32, u32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = text.rsplit_once(") ")?.1.split(' ');
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, ppid, pgrp))
}

fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// Our children (of any of our threads) that are zombies.
fn our_zombies() -> Vec<u32> {
    let me = std::process::id();
    let threads: Vec<u32> = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    all_pids()
        .into_iter()
        .filter(|&p| stat(p).is_some_and(|(s, ppid, _)| s == 'Z' && (ppid == me || threads.contains(&ppid))))
        .collect()
}

/// Our children, as `/proc/self/task/*/children` lists them.
fn our_children() -> Vec<u32> {
    let mut out = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let list = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        out.extend(list.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
    }
    out
}

/// Ticks until no hook runs; the time that took.
fn tick_until_idle(hooks: &mut RestartHooks, limit: Duration) -> Duration {
    let t0 = Instant::now();
    while hooks.counts().running > 0 {
        assert!(t0.elapsed() < limit, "hooks still running: {:?}", hooks.counts());
        hooks.tick();
        std::thread::sleep(Duration::from_millis(5));
    }
    t0.elapsed()
}

#[test]
fn hooks_are_reaped_counted_and_killed_at_the_deadline() {
    let mut hooks = RestartHooks::with_deadline(Duration::from_millis(400));
    // The hung hook starts a second process in its group, as `ssh` or `systemctl` would.
    let hung = hooks.start("gw-b3", "sleep 100 & sleep 100; wait").unwrap();
    let pids = [
        hooks.start("gw-b1", "true").unwrap(),
        hooks.start("gw-b2", "false").unwrap(),
        hung,
    ];
    assert_eq!(hooks.counts().running, 3);
    let took = tick_until_idle(&mut hooks, Duration::from_secs(10));
    assert!(
        took >= Duration::from_millis(380),
        "killed before its deadline ({took:?})"
    );
    assert!(took < Duration::from_secs(5), "not killed at its deadline ({took:?})");
    assert_eq!(
        hooks.counts(),
        HookCounts {
            started: 3,
            succeeded: 1,
            failed: 1,
            timed_out: 1,
            skipped: 0,
            running: 0
        }
    );
    let zombies = our_zombies();
    let children = our_children();
    for pid in pids {
        assert!(!zombies.contains(&pid), "hook {pid} left a zombie");
        assert!(!children.contains(&pid), "hook {pid} not reaped");
    }
    // The whole group died, not just the shell.
    std::thread::sleep(Duration::from_millis(100));
    let left: Vec<u32> = all_pids()
        .into_iter()
        .filter(|&p| stat(p).is_some_and(|(s, _, group)| group == hung && s != 'Z'))
        .collect();
    assert!(left.is_empty(), "the hung hook's group lives on: {left:?}");
}

#[test]
fn one_hook_at_a_time_per_daemon() {
    let mut hooks = RestartHooks::with_deadline(Duration::from_millis(300));
    assert!(hooks.start("demux-b", "sleep 100").is_some());
    assert!(hooks.start("demux-b", "sleep 100").is_none(), "the first still runs");
    assert!(hooks.start("gw-b1", "exit 3").is_some(), "another daemon's hook runs");
    tick_until_idle(&mut hooks, Duration::from_secs(10));
    assert_eq!(
        hooks.counts(),
        HookCounts {
            started: 2,
            succeeded: 0,
            failed: 1,
            timed_out: 1,
            skipped: 1,
            running: 0
        }
    );
    assert!(
        hooks.start("demux-b", "true").is_some(),
        "the daemon's hook ended: a new one may run"
    );
    tick_until_idle(&mut hooks, Duration::from_secs(10));
    assert_eq!(hooks.counts().succeeded, 1);
}
