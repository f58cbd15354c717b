//! The shape of `src/`, checked so that it stays true: each top-level
//! module (a folder, or a file for a small one) depends only on the
//! layers below its own, which also rules out import cycles; and only
//! `settings` reads the configuration by setting name (the hooks' Python
//! `cfg` view aside).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, top first: a module may use the modules of the layers
/// below its own, none of its own layer or above.
const LAYERS: &[&[&str]] = &[
    &["entry"],
    &["master"],
    &["worker"],
    &["python"],
    &["observe"],
    &["settings", "app"],
    &["http", "sys", "control"],
    &["log", "boot"],
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The `.rs` files under `dir`, recursively.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The library's files by top-level module (the binaries and `lib.rs`,
/// which only declares and re-exports, left out).
fn modules() -> BTreeMap<String, Vec<PathBuf>> {
    let src = src();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut by_module: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        let first = rel.components().next().unwrap().as_os_str();
        let module = first.to_string_lossy().trim_end_matches(".rs").to_string();
        if ["lib", "main", "bin"].contains(&module.as_str()) {
            continue;
        }
        by_module.entry(module).or_default().push(file);
    }
    by_module
}

/// The top-level modules a file names as `crate::<module>` (code and doc
/// links alike: a doc link up a layer is a dependency of the reader).
fn uses(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (i, _) in text.match_indices("crate::") {
        if text[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue; // `rgunicorn_crate::`, say
        }
        let name: String = text[i + "crate::".len()..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            found.insert(name);
        }
    }
    found
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

#[test]
fn every_module_depends_only_on_the_layers_below() {
    let mut problems = Vec::new();
    for (module, files) in modules() {
        let Some(own) = layer_of(&module) else {
            problems.push(format!("{module}: not in LAYERS (place it)"));
            continue;
        };
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for used in uses(&text) {
                if used == module || used == "self" {
                    continue;
                }
                match layer_of(&used) {
                    Some(layer) if layer > own => {}
                    Some(_) => problems.push(format!(
                        "{}: {module} uses crate::{used}, which is not below it",
                        file.display()
                    )),
                    None => problems.push(format!(
                        "{}: crate::{used} is not a module in LAYERS",
                        file.display()
                    )),
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// `cfg.int(py, "...")` and its siblings, `cfg.get(py, ...)` and
/// `cfg.env(py)` appear only in `settings` and the hooks' `cfg` view.
#[test]
fn only_settings_reads_the_config_by_name() {
    let src = src();
    let allowed = [src.join("settings.rs"), src.join("python/hooks/cfg.rs")];
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut found = Vec::new();
    for file in files.iter().filter(|f| !allowed.contains(f)) {
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let by_name = ["int", "bool", "string", "list", "get"].iter().any(|m| {
                line.contains(&format!(".{m}(py, ")) || line.contains(&format!(".{m}(self.py, "))
            });
            if by_name || line.contains(".env(py)") || line.contains(".env(self.py)") {
                found.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "config read by name outside settings:\n{}",
        found.join("\n")
    );
}

/// Every folder says what it owns in its `//!` head, and so does every
/// file.
#[test]
fn every_module_has_a_head() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let headless: Vec<String> = files
        .iter()
        .filter(|f| {
            !std::fs::read_to_string(f)
                .unwrap()
                .trim_start()
                .starts_with("//!")
        })
        .map(|f| f.display().to_string())
        .collect();
    assert!(headless.is_empty(), "no //! head: {headless:?}");
}
