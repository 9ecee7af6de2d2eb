//! Offered file names made safe to store, and free names beside taken ones.
//!
//! An offered name is the peer's choice. This module owns reducing it to a plain file name that
//! means the same thing on every system (no directories, no drive or stream syntax, no device
//! names), and choosing `stem (n).ext` when a name is taken. It must not create files.

use std::path::{Path, PathBuf};

/// Device names Windows reserves in every directory, with or without an extension.
const RESERVED: [&str; 22] = [
    "CON", "PRN", "AUX", "NUL", "COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7", "COM8", "COM9",
    "LPT1", "LPT2", "LPT3", "LPT4", "LPT5", "LPT6", "LPT7", "LPT8", "LPT9",
];

/// How many numbered names are tried before giving up.
pub(crate) const MAX_SUFFIX: u32 = 1000;

/// The plain, portable file name in `offered`, or `None`.
pub(crate) fn safe_name(offered: &str) -> Option<String> {
    let last = offered.rsplit(['/', '\\']).next().unwrap_or("");
    if last.contains(':') {
        return None;
    }
    let cleaned: String = last.chars().filter(|c| !c.is_control()).collect();
    let cleaned = cleaned
        .trim_start_matches('.')
        .trim()
        .trim_end_matches(['.', ' ']);
    if cleaned.is_empty() || is_reserved(cleaned) {
        return None;
    }
    Some(cleaned.to_owned())
}

fn is_reserved(name: &str) -> bool {
    let stem = name.split('.').next().unwrap_or(name).trim_end();
    RESERVED
        .iter()
        .any(|reserved| stem.eq_ignore_ascii_case(reserved))
}

/// `path` with ` (n)` before its extension: `a.txt` → `a (2).txt`.
pub(crate) fn numbered(path: &Path, n: u32) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match path.extension() {
        Some(ext) => format!("{stem} ({n}).{}", ext.to_string_lossy()),
        None => format!("{stem} ({n})"),
    };
    path.with_file_name(name)
}

/// The partial file that stands for `path` while content arrives.
pub(crate) fn partial(path: &Path) -> PathBuf {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    PathBuf::from(partial)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_directories_drives_streams_or_devices_are_refused_or_reduced() {
        assert_eq!(safe_name("../../etc/passwd").as_deref(), Some("passwd"));
        assert_eq!(
            safe_name("C:\\Users\\x\\report.pdf").as_deref(),
            Some("report.pdf")
        );
        assert_eq!(safe_name("C:evil"), None, "drive-relative");
        assert_eq!(safe_name("a:b"), None, "an alternate data stream");
        assert_eq!(safe_name("CON"), None);
        assert_eq!(safe_name("con.txt"), None);
        assert_eq!(safe_name("Lpt9.log"), None);
        assert_eq!(safe_name("console.txt").as_deref(), Some("console.txt"));
        assert_eq!(safe_name("...hidden").as_deref(), Some("hidden"));
        assert_eq!(safe_name("trailing. . ").as_deref(), Some("trailing"));
        assert_eq!(safe_name("\u{7}"), None);
    }

    #[test]
    fn numbered_names_keep_the_extension() {
        assert_eq!(numbered(Path::new("/d/a.txt"), 2), PathBuf::from("/d/a (2).txt"));
        assert_eq!(numbered(Path::new("/d/a"), 1), PathBuf::from("/d/a (1)"));
        assert_eq!(partial(Path::new("/d/a.txt")), PathBuf::from("/d/a.txt.partial"));
    }
}
