//! `braid_core::config::ClusterConfig::from_yaml_str` (parsing and validation, what every
//! daemon runs on the cluster file) on any text, as if read from a file in a directory that
//! does not exist (relative paths resolve against it; validation reads no file).
//!
//! Checks: a configuration that validates writes out (`to_yaml`) to text that validates again
//! to an equal configuration, and writing that out gives the same text.

#![no_main]

use std::path::Path;

use braid_core::config::ClusterConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let path = Path::new("/nonexistent/braid-fuzz/cluster.yaml");
    let Ok(config) = ClusterConfig::from_yaml_str(text, path) else {
        return;
    };
    let yaml = config.to_yaml();
    let again = match ClusterConfig::from_yaml_str(&yaml, path) {
        Ok(again) => again,
        Err(e) => panic!("to_yaml output does not validate: {e}\n{yaml}"),
    };
    assert_eq!(again, config);
    assert_eq!(again.to_yaml(), yaml);
});
