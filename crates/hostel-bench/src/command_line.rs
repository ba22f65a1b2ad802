//! Command lines as the BENCHMARKS.md sections show them: the benchmark's own invocation and
//! the commands it compared, with the checkout's path taken out, so that a reader can run
//! them from their own checkout and a rerun on the same tree rewrites the same text.

/// The checkout this crate was built in (`crates/hostel-bench/../..`, with a trailing
/// slash); paths under it are shown relative.
fn checkout() -> String {
    let crate_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = crate_dir
        .parent()
        .and_then(|p| p.parent())
        .unwrap_or(crate_dir);
    format!("{}/", root.display())
}

/// `path` relative to the checkout when it is under it.
pub fn relative(path: &str) -> String {
    path.replace(&checkout(), "")
}

/// This process's own command line, as `make bench-*` ran it.
pub fn invocation() -> String {
    std::env::args()
        .map(|a| relative(&a))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `argv` for the documentation: paths made relative, an argument with a space in quotes.
pub fn for_docs(argv: &[String]) -> String {
    argv.iter()
        .map(|a| relative(a))
        .map(|a| {
            if a.contains(' ') {
                format!("\"{a}\"")
            } else {
                a
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_relative_and_spaces_quoted() {
        let hostel = format!("{}target/release/hostel", checkout());
        let argv = [
            hostel.as_str(),
            "run",
            "--cmdline",
            "quiet hostel.run=dHJ1ZQ==",
            "--run-dir",
            "<tmpdir>",
        ]
        .map(String::from);
        assert_eq!(
            for_docs(&argv),
            "target/release/hostel run --cmdline \"quiet hostel.run=dHJ1ZQ==\" --run-dir <tmpdir>"
        );
    }
}
