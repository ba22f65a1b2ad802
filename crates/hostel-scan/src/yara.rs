//! YARA rules through `boreal` (pure Rust; see ARCHITECTURE.md for why not `yara-x`). Each
//! rule file compiles on its own first, so a file that does not compile is refused by name
//! with the compiler's message and the others still load.

use crate::sigs::{SigError, SigSources};
use std::time::Duration;

/// A scan of one buffer gives up after this long (boreal's own timeout).
pub const YARA_TIMEOUT: Duration = Duration::from_secs(10);

pub struct YaraSet {
    scanner: boreal::Scanner,
    pub files: usize,
}

impl std::fmt::Debug for YaraSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("YaraSet")
            .field("files", &self.files)
            .finish()
    }
}

impl YaraSet {
    /// Compiles the sources' rule files; refusals are recorded in the sources' report.
    pub fn compile(src: &mut SigSources) -> Option<YaraSet> {
        if src.yara.is_empty() {
            return None;
        }
        let mut good = Vec::new();
        let mut refused = Vec::new();
        for (file, text) in &src.yara {
            // Each file in a compiler of its own first: its errors are its own.
            let mut probe = boreal::Compiler::new();
            match probe.add_rules_str_in_namespace(text, file) {
                Ok(_) => good.push((file.clone(), text.clone())),
                Err(e) => refused.push((file.clone(), SigError::Yara(e.to_string()))),
            }
        }
        for (file, e) in refused {
            src.refuse_file(&file, e);
        }
        if good.is_empty() {
            return None;
        }
        let mut compiler = boreal::Compiler::new();
        let mut files = 0;
        for (file, text) in &good {
            match compiler.add_rules_str_in_namespace(text, file) {
                Ok(_) => files += 1,
                Err(e) => src.refuse_file(file, SigError::Yara(e.to_string())),
            }
        }
        let mut scanner = compiler.finalize();
        scanner.set_scan_params(
            boreal::scanner::ScanParams::default().timeout_duration(Some(YARA_TIMEOUT)),
        );
        src.report.yara_files = files;
        Some(YaraSet { scanner, files })
    }

    /// The names of the rules matching `data`; a scan cut short (timeout) reports what it had
    /// and says so.
    pub fn scan(&self, data: &[u8]) -> (Vec<String>, bool) {
        let (result, complete) = match self.scanner.scan_mem(data) {
            Ok(r) => (r, true),
            Err((e, r)) => {
                tracing::warn!(error = ?e, "YARA scan cut short");
                (r, false)
            }
        };
        (
            result
                .rules
                .iter()
                .filter(|r| r.matched)
                .map(|r| r.name.to_string())
                .collect(),
            complete,
        )
    }
}
