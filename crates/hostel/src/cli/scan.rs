//! `hostel scan file|image PATH --db DIR [--yara FILE]`: the scanning engine offline, no
//! daemon needed. `file` scans one file's bytes; `image` reads a raw ext4 image in userspace
//! (never mounted) and scans every regular file in it. Findings as JSON on stdout.
//!
//! Exit status: 0 nothing found, 3 signatures found, 1 the scan could not run.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use hostel_scan::fs::{scan_ext4, BlockSource, WalkLimits};
use hostel_scan::{Engine, FileLimits};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Args, Debug)]
pub struct ScanArgs {
    #[command(subcommand)]
    what: ScanCommand,
}

#[derive(Subcommand, Debug)]
enum ScanCommand {
    /// One file's bytes: hashes, body signatures, YARA rules.
    File(Common),
    /// A raw ext4 image, read in userspace: every regular file, findings with their paths.
    Image(Common),
}

#[derive(Args, Debug)]
struct Common {
    /// The file or image.
    path: PathBuf,
    /// A signature directory (.hdb, .hsb, .ndb, .yar); EICAR is always built in.
    #[arg(long)]
    db: Option<PathBuf>,
    /// A YARA rule file besides the directory's.
    #[arg(long)]
    yara: Option<PathBuf>,
}

/// Exit status when signatures were found.
const FOUND: u8 = 3;

pub fn main(args: ScanArgs) -> Result<ExitCode> {
    let (ScanCommand::File(c) | ScanCommand::Image(c)) = &args.what;
    let engine = Engine::load(c.db.as_deref(), c.yara.as_deref())
        .with_context(|| format!("signature directory {:?}", c.db))?;
    for r in &engine.report.refused {
        tracing::warn!(file = %r.file, line = r.line, name = %r.name, reason = %r.reason, "signature refused");
    }
    let (found, result) = match &args.what {
        ScanCommand::File(c) => {
            let mut f = std::fs::File::open(&c.path)
                .with_context(|| format!("open {}", c.path.display()))?;
            let size = f.metadata()?.len();
            let scan = engine
                .scan_reader(&mut f, size, &FileLimits::default())
                .with_context(|| format!("read {}", c.path.display()))?;
            (!scan.findings.is_empty(), serde_json::to_value(&scan)?)
        }
        ScanCommand::Image(c) => {
            let f = std::fs::File::open(&c.path)
                .with_context(|| format!("open {}", c.path.display()))?;
            let src: Arc<dyn BlockSource> = Arc::new(f);
            let scan = scan_ext4(src, &engine, None, &WalkLimits::default())
                .with_context(|| format!("image {}", c.path.display()))?;
            (!scan.findings.is_empty(), serde_json::to_value(&scan)?)
        }
    };
    let out = serde_json::json!({
        "path": c.path,
        "signatures": engine.report,
        "scan": result,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(if found {
        ExitCode::from(FOUND)
    } else {
        ExitCode::SUCCESS
    })
}
