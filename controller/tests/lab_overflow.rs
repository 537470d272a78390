//! A demux that falls behind counts what its full socket dropped, in a real one-pair lab.
//!
//! The controller is frozen first (SIGSTOP), so nothing restarts what the test stops. Then
//! demux b is stopped while a raw UDP flood crosses the cluster from host a: the GENEVE its
//! gateway delivers piles up in demux b's socket until the kernel drops it. Once demux b runs
//! again, its `drop_geneve_socket_full` counter must have grown by what the kernel counted in
//! its namespace (`RcvbufErrors`), and by more than nothing. Without the counter that loss is
//! silent: no braid counter and no receive call sees it.

mod support;

use std::time::{Duration, Instant};

use braid_lab::netns::udp_receive_buffer_errors;
use support::*;

#[test]
fn a_demux_that_falls_behind_counts_what_its_full_socket_dropped() {
    if skip_without_lab("lab_overflow") {
        return;
    }
    let _one = one_lab_at_a_time();
    let lab = Lab::up(&lab_name("ovf", Suite::WireGuard), 1);
    let info = &lab.info;
    let demux_b = info
        .processes
        .iter()
        .find(|p| p.role == "demux" && p.site == "b")
        .expect("demux b");
    let controller = controller_pid(info);
    let counted_before = counter(info, "demux", "b", 0, "drop_geneve_socket_full");
    let kernel_before = udp_receive_buffer_errors(&demux_b.netns).expect("RcvbufErrors");

    signal(controller, libc::SIGSTOP);
    let frozen_controller = ThawOnDrop(controller);
    signal(demux_b.pid, libc::SIGSTOP);
    let stopped_demux = ThawOnDrop(demux_b.pid);
    let flood = braid_lab::netns::run_in(
        &info.hosts.a.netns,
        &bin_dir().join("braid-bench"),
        &[
            "flood".into(),
            "--destination".into(),
            info.hosts.b.addr.to_string(),
            "--port".into(),
            "9".into(),
            "--source-base".into(),
            info.hosts.a.addr.to_string(),
            "--flows".into(),
            "16".into(),
            "--pps".into(),
            "60000".into(),
            "--size".into(),
            "1200".into(),
            "--seconds".into(),
            "2".into(),
        ],
    );
    drop(stopped_demux);
    let flood = flood.expect("the flood ran");
    // The demux reads its socket's drop count every canary interval and publishes its status
    // soon after; datagrams the gateway still had queued may overflow the socket a little
    // after the flood, so both counts are read until they agree (the controller stays frozen
    // until then).
    let (mut counted, mut kernel) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        counted = counter(info, "demux", "b", 0, "drop_geneve_socket_full") - counted_before;
        kernel = udp_receive_buffer_errors(&demux_b.netns).expect("RcvbufErrors") - kernel_before;
        if counted > 0 && counted == kernel {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(frozen_controller);
    eprintln!("flood: {flood}");
    eprintln!("MEASURED demux b socket drops: counted {counted}, kernel RcvbufErrors {kernel}");
    assert!(kernel > 0, "the flood never overflowed demux b's socket");
    assert_eq!(
        counted, kernel,
        "demux b counts every message its namespace's kernel dropped for a full buffer"
    );
}
