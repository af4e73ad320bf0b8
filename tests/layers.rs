//! The module graph points one way (docs/architecture.md, Layers): every source file may
//! use only the files before it in `ORDER`, never one after it. A new file must be placed
//! in the order before this passes. No cluster needed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Every source file, in reading order: leaves, infrastructure, guard (pure, context,
/// steps, pipeline), runtime. Test-only files are not listed (they may use anything).
const ORDER: &[&str] = &[
    // Leaves.
    "api/v1alpha1.rs",
    "api/mod.rs",
    "labels.rs",
    "object_key.rs",
    "error.rs",
    "fault.rs",
    "config.rs",
    // Infrastructure.
    "process_metrics.rs",
    "metrics.rs",
    "queue.rs",
    "throttle.rs",
    "transport.rs",
    "telemetry.rs",
    "leader.rs",
    "alerts.rs",
    "event_recorder.rs",
    "restore_point.rs",
    "cache.rs",
    // Guard: pure decisions and state.
    "guard/spec.rs",
    "guard/index.rs",
    "guard/decide/mod.rs",
    "guard/decide/token.rs",
    "guard/decide/secret.rs",
    "guard/observe.rs",
    "guard/breaker.rs",
    "guard/outcome.rs",
    "guard/state.rs",
    "guard/status/build.rs",
    // Guard: what the steps share.
    "guard/context.rs",
    // Guard: the steps of a reconcile.
    "guard/load.rs",
    "guard/verify.rs",
    "guard/act.rs",
    "guard/record.rs",
    "guard/status/mod.rs",
    "guard/report/events.rs",
    "guard/report/metrics.rs",
    "guard/report/alerts.rs",
    "guard/report/mod.rs",
    "guard/retention.rs",
    "guard/migrate.rs",
    "guard/reconcile.rs",
    "guard/mod.rs",
    // Runtime.
    "controller/selectors.rs",
    "controller/triggers.rs",
    "controller/watches.rs",
    "controller/worker.rs",
    "controller/mod.rs",
    "http/tls.rs",
    "http/auth.rs",
    "http/mod.rs",
    "lib.rs",
    "main.rs",
];

/// Files compiled only into tests.
const TEST_ONLY: &[&str] = &[
    "guard/fixtures.rs",
    "guard/decide/tests.rs",
    "guard/decide/intent_tests.rs",
    "guard/reconcile_tests.rs",
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn source_files(dir: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            source_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path.strip_prefix(src()).expect("under src");
            out.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
}

/// The module path of a file: "guard/status/mod.rs" -> ["guard", "status"].
fn module_of(file: &str) -> Vec<String> {
    let mut parts: Vec<String> = file
        .trim_end_matches(".rs")
        .split('/')
        .map(str::to_owned)
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// The file that defines the deepest module of `path` (segments after `crate::`).
fn file_of(path: &[String], files: &[String]) -> Option<String> {
    for len in (1..=path.len()).rev() {
        let p = path[..len].join("/");
        for candidate in [format!("{p}.rs"), format!("{p}/mod.rs")] {
            if files.contains(&candidate) {
                return Some(candidate);
            }
        }
    }
    // Re-exports at the crate root: `crate::Result`, `crate::Error`.
    matches!(path.first().map(String::as_str), Some("Result" | "Error"))
        .then(|| "error.rs".to_owned())
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Every path the code names through `crate::`, `super::` or `self::`, as module
/// segments from the crate root. `use a::{b, c::d}` yields a::b and a::c.
fn references(file: &str, code: &str) -> Vec<Vec<String>> {
    let here = module_of(file);
    let mut found = Vec::new();
    let chars: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let rest: String = chars[i..chars.len().min(i + 7)].iter().collect();
        let start = ["crate::", "super::", "self::"]
            .into_iter()
            .find(|p| rest.starts_with(p) && (i == 0 || !is_ident(chars[i - 1])));
        let Some(prefix) = start else {
            i += 1;
            continue;
        };
        let mut base: Vec<String> = match prefix {
            "crate::" => Vec::new(),
            "super::" => here[..here.len().saturating_sub(1)].to_vec(),
            _ => here.clone(),
        };
        i += prefix.len();
        // Further `super::` and plain segments.
        loop {
            let seg: String = chars[i..].iter().take_while(|c| is_ident(**c)).collect();
            if seg.is_empty() {
                break;
            }
            let after = i + seg.len();
            if chars[after..].starts_with(&[':', ':']) {
                if seg == "super" {
                    base.pop();
                } else {
                    base.push(seg);
                }
                i = after + 2;
            } else {
                base.push(seg);
                i = after;
                break;
            }
        }
        if chars.get(i) == Some(&'{') {
            // One level of braces: the first segment of each item.
            let mut depth = 0;
            let mut item = String::new();
            for c in chars[i..].iter() {
                i += 1;
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    _ => {}
                }
                if depth == 0 {
                    break;
                }
                if depth == 1 && (*c == ',' || *c == '{') {
                    push_item(&base, &item, &mut found);
                    item.clear();
                } else if depth == 1 {
                    item.push(*c);
                }
            }
            push_item(&base, &item, &mut found);
        } else {
            found.push(base);
        }
    }
    found
}

fn push_item(base: &[String], item: &str, found: &mut Vec<Vec<String>>) {
    let first: String = item.trim().chars().take_while(|c| is_ident(*c)).collect();
    if !first.is_empty() && first != "self" {
        let mut path = base.to_vec();
        path.push(first);
        found.push(path);
    } else if first == "self" {
        found.push(base.to_vec());
    }
}

/// The code of a file outside its unit tests (they come last, behind `#[cfg(test)]`).
fn non_test_code(text: &str) -> &str {
    match text.find("#[cfg(test)]") {
        Some(i) => &text[..i],
        None => text,
    }
}

#[test]
fn every_source_file_uses_only_files_before_it_in_the_layer_order() {
    let mut files = Vec::new();
    source_files(&src(), &mut files);
    files.sort();
    let unplaced: Vec<&String> = files
        .iter()
        .filter(|f| !ORDER.contains(&f.as_str()) && !TEST_ONLY.contains(&f.as_str()))
        .collect();
    assert!(
        unplaced.is_empty(),
        "place these files in tests/layers.rs ORDER (and README's Layout): {unplaced:?}"
    );
    let rank: HashMap<&str, usize> = ORDER.iter().enumerate().map(|(i, f)| (*f, i)).collect();
    let mut upward = Vec::new();
    for file in ORDER.iter().filter(|f| files.iter().any(|g| g == *f)) {
        let text = std::fs::read_to_string(src().join(file)).expect("read source");
        for path in references(file, non_test_code(&text)) {
            let Some(target) = file_of(&path, &files) else {
                continue;
            };
            if target == *file || TEST_ONLY.contains(&target.as_str()) {
                continue;
            }
            // A module file may declare and use its own children only if they come first.
            if rank.get(target.as_str()) > rank.get(file) {
                upward.push(format!("{file} uses {target} (crate::{})", path.join("::")));
            }
        }
    }
    upward.sort();
    upward.dedup();
    assert!(
        upward.is_empty(),
        "dependencies pointing up the layers:\n{}",
        upward.join("\n")
    );
}

#[test]
fn the_reference_scanner_sees_grouped_and_relative_imports() {
    let code = "use super::{act, load::{self, X}};\nuse crate::guard::context::Context;\nlet m = crate::metrics::Guard { };";
    let refs = references("guard/reconcile.rs", code);
    let shown: Vec<String> = refs.iter().map(|p| p.join("::")).collect();
    assert_eq!(
        shown,
        [
            "guard::act",
            "guard::load",
            "guard::context::Context",
            "metrics::Guard"
        ]
    );
}
