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
        let ci = std::fs::read_to_string(root.join(".ci/run")).unwrap();
        if !ci.lines().any(|l| l.trim() == "exec cargo xtask test") {
            problems.push(".ci/run must run the README's test command, `cargo xtask test`".into());
        }
        assert!(problems.is_empty(), "tidy:\n{}", problems.join("\n"));
    }
}
