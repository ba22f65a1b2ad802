//! Command lines as the BENCHMARKS.md sections show them: the benchmark's own invocation and
//! the commands it compared, with the checkout's path taken out, so that a reader can run
//! them from their own checkout and a rerun on the same tree rewrites the same text.

/// The checkout the benchmarks are run from; paths under it are shown relative.
const CHECKOUT: &str = "/work/main/";

/// This process's own command line, as `make bench-*` ran it.
pub fn invocation() -> String {
    std::env::args()
        .map(|a| a.replace(CHECKOUT, ""))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `argv` for the documentation: paths made relative, an argument with a space in quotes.
pub fn for_docs(argv: &[String]) -> String {
    argv.iter()
        .map(|a| a.replace(CHECKOUT, ""))
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
        let argv = [
            "/work/main/target/release/hostel",
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
