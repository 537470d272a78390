//! Daemon logs carry ANSI colour codes only on a terminal, and never with `NO_COLOR` set.
//!
//! Runs the real `braid-demux` on a cluster file that does not exist: it logs the error through
//! its tracing subscriber and exits. Its stderr goes to a file, then (through util-linux
//! `script`) to a pseudo-terminal.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const ESC: u8 = 0x1b;

fn demux() -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_braid")).parent().expect("a directory");
    let bin = dir.join("braid-demux");
    assert!(
        bin.exists(),
        "{} is missing: build it first (cargo build --release --workspace --bins)",
        bin.display()
    );
    bin
}

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("braid-log-colours-{name}-{}", std::process::id()))
}

const ARGS: [&str; 4] = ["--config", "/nonexistent/braid-cluster.yaml", "--site", "a"];

#[test]
fn logs_to_a_file_have_no_escape_codes() {
    let path = temp("file");
    let file = std::fs::File::create(&path).unwrap();
    let status = Command::new(demux())
        .args(ARGS)
        .env_remove("NO_COLOR")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(file)
        .status()
        .unwrap();
    let log = std::fs::read(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    let text = String::from_utf8_lossy(&log);
    assert!(!status.success(), "a missing cluster file is an error");
    assert!(text.contains("ERROR"), "the error is logged through tracing:\n{text}");
    assert!(!log.contains(&ESC), "escape codes in a log file:\n{text:?}");
}

/// Runs the demux with its stderr on a pseudo-terminal; what the terminal showed.
fn on_a_terminal(no_color: Option<&str>) -> Option<Vec<u8>> {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("SKIPPED: the terminal half of the log colour test, because util-linux `script` is missing");
        return None;
    }
    let typescript = temp(&format!("tty-{}", no_color.unwrap_or("unset")));
    let line = format!("{} {} 2>&1", demux().display(), ARGS.join(" "));
    let mut cmd = Command::new("script");
    cmd.args(["-q", "-e", "-c", &line])
        .arg(&typescript)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    match no_color {
        Some(value) => cmd.env("NO_COLOR", value),
        None => cmd.env_remove("NO_COLOR"),
    };
    cmd.status().unwrap();
    let shown = std::fs::read(&typescript).unwrap();
    let _ = std::fs::remove_file(&typescript);
    Some(shown)
}

#[test]
fn a_terminal_gets_colours_unless_no_color_is_set() {
    let Some(coloured) = on_a_terminal(None) else {
        return;
    };
    let text = String::from_utf8_lossy(&coloured);
    assert!(text.contains("ERROR"), "{text:?}");
    assert!(coloured.contains(&ESC), "no colours on a terminal: {text:?}");
    let plain = on_a_terminal(Some("1")).expect("script ran once already");
    let text = String::from_utf8_lossy(&plain);
    assert!(text.contains("ERROR"), "{text:?}");
    assert!(!plain.contains(&ESC), "colours despite NO_COLOR=1: {text:?}");
}
