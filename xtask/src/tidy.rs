//! Repository hygiene, checked as a plain test (so CI runs it through `cargo xtask test`, nothing else).

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    fn files(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let p = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if p.is_dir() {
                if !matches!(name.as_str(), "target" | ".git" | ".m6rec" | "runs" | "fixtures") {
                    files(&p, out);
                }
            } else {
                out.push(p);
            }
        }
    }

    /// The longest a function outside tests may be, in lines (its signature to its closing brace).
    const MAX_FN_LINES: usize = 80;

    /// Functions of library and binary code (`src/` of every crate, xtask, benches; test modules and `tests/` left
    /// out) longer than `limit` lines. Relies on rustfmt's layout: a body closes with `}` at its `fn`'s indent.
    fn long_functions(files: &[PathBuf], limit: usize) -> Vec<String> {
        let mut out = Vec::new();
        for p in files {
            let in_src = p.components().any(|c| c.as_os_str() == "src");
            let in_tests = p.components().any(|c| c.as_os_str() == "tests");
            if p.extension().is_none_or(|e| e != "rs") || !in_src || in_tests {
                continue;
            }
            let text = std::fs::read_to_string(p).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            let end = lines
                .windows(2)
                .position(|w| w[0] == "#[cfg(test)]" && w[1].starts_with("mod tests"))
                .unwrap_or(lines.len());
            for (i, line) in lines[..end].iter().enumerate() {
                let Some(name) = fn_name(line) else { continue };
                if line.trim_end().ends_with(';') || line.trim_end().ends_with('}') {
                    continue;
                }
                let indent = &line[..line.len() - line.trim_start().len()];
                let close = format!("{indent}}}");
                let Some(len) = lines[i..end].iter().position(|l| *l == close) else { continue };
                if len + 1 > limit {
                    out.push(format!(
                        "{}:{}: fn {name} is {} lines; at most {limit} (split it into named steps)",
                        p.display(),
                        i + 1,
                        len + 1
                    ));
                }
            }
        }
        out
    }

    /// The name of the function a line declares, if it declares one.
    fn fn_name(line: &str) -> Option<&str> {
        let mut rest = line.trim_start();
        for prefix in ["pub(crate) ", "pub(super) ", "pub ", "const ", "async ", "unsafe ", "extern \"C\" "] {
            rest = rest.strip_prefix(prefix).unwrap_or(rest);
        }
        let rest = rest.strip_prefix("fn ")?;
        let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_'))?;
        Some(&rest[..end])
    }

    #[test]
    fn the_length_check_counts_a_function_from_its_signature_to_its_brace() {
        let dir = std::env::temp_dir().join(format!("m6rec-tidy-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("src")).unwrap();
        let body: String = (0..5).map(|i| format!("    let _x{i} = {i};\n")).collect();
        let text = format!("pub fn long() {{\n{body}}}\n\nfn short() {{}}\n\n#[cfg(test)]\nmod tests {{\n    fn t() {{\n{body}    }}\n}}\n");
        let file = dir.join("src/lib.rs");
        std::fs::write(&file, text).unwrap();
        let found = long_functions(std::slice::from_ref(&file), 6);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("fn long is 7 lines"), "{found:?}");
    }

    #[test]
    fn tidy() {
        let root = crate::project_root();
        let mut all = Vec::new();
        files(&root, &mut all);
        let ignore_attr = ["#[", "ignore"].concat();
        let panic_attr = ["should", "_panic"].concat();
        let mut problems = Vec::new();
        for p in &all {
            let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
            if !matches!(ext, "rs" | "md" | "toml") {
                continue;
            }
            let text = std::fs::read_to_string(p).unwrap();
            for (i, line) in text.lines().enumerate() {
                if line.ends_with(' ') || line.ends_with('\t') {
                    problems.push(format!("{}:{}: trailing whitespace", p.display(), i + 1));
                }
            }
            if ext == "rs" && (text.contains(&ignore_attr) || text.contains(&panic_attr)) {
                problems.push(format!("{}: no ignored tests and no {panic_attr} (check the Err instead)", p.display()));
            }
        }
        for entry in std::fs::read_dir(root.join("crates")).unwrap().flatten() {
            let dir = entry.path();
            if !dir.join("README.md").exists() {
                problems.push(format!("{}: every crate needs a README.md", dir.display()));
            }
            let entry_file =
                if dir.join("src/lib.rs").exists() { dir.join("src/lib.rs") } else { dir.join("src/main.rs") };
            let head = std::fs::read_to_string(&entry_file).unwrap_or_default();
            if !head.starts_with("//!") {
                problems.push(format!("{}: crate docs (`//!`) must open the file", entry_file.display()));
            }
        }
        problems.extend(long_functions(&all, MAX_FN_LINES));
        let ci = std::fs::read_to_string(root.join(".ci/run")).unwrap();
        if !ci.lines().any(|l| l.trim() == "exec cargo xtask test") {
            problems.push(".ci/run must run the README's test command, `cargo xtask test`".into());
        }
        assert!(problems.is_empty(), "tidy:\n{}", problems.join("\n"));
    }
}
