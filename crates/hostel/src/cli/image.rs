//! `hostel image list|show|build|import|delete`: the images VMs boot (operator for changes).

use super::output::{self, opt, Format, Table};
use super::Ctx;
use anyhow::{Context, Result};
use clap::Subcommand;
use hostel_api::{BuildImage, ImageView, ImportImage};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How often `image build` asks the daemon how the build is going.
const POLL: Duration = Duration::from_secs(1);

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// List the images VMs can boot (and builds in progress).
    List,
    /// Show one image, or how its build is going.
    Show { name: String },
    /// Build an image of the catalog (debian-12, debian-12-web, debian-12-database) and
    /// follow its progress. Minutes when cold; at once when cached.
    Build {
        name: String,
        /// Start the build and return without following it.
        #[arg(long)]
        no_wait: bool,
    },
    /// Import a raw or qcow2 disk file from this host.
    Import {
        name: String,
        file: PathBuf,
        /// For a bare filesystem: a kernel to boot it with (with --initrd).
        #[arg(long)]
        kernel: Option<PathBuf>,
        #[arg(long)]
        initrd: Option<PathBuf>,
        /// Guest command line for direct boot (default `root=/dev/vda rw`).
        #[arg(long)]
        cmdline: Option<String>,
    },
    /// Delete an image no VM uses.
    Delete { name: String },
}

/// The daemon runs elsewhere in the file system's eyes (its own cwd): send absolute paths.
fn absolute(p: &Path) -> Result<String> {
    let abs = std::path::absolute(p).with_context(|| format!("{}", p.display()))?;
    Ok(abs.to_string_lossy().into_owned())
}

pub fn main(ctx: &Ctx, cmd: ImageCommand) -> Result<()> {
    let view = match cmd {
        ImageCommand::List => return print_list(ctx.format, &ctx.client.list_images()?),
        ImageCommand::Show { name } => ctx.client.show_image(&name)?,
        ImageCommand::Build { name, no_wait } => {
            let mut v = ctx.client.build_image(&BuildImage { name: name.clone() })?;
            if !no_wait {
                v = follow_build(ctx, &name, v)?;
            }
            v
        }
        ImageCommand::Import {
            name,
            file,
            kernel,
            initrd,
            cmdline,
        } => ctx.client.import_image(&ImportImage {
            name,
            path: absolute(&file)?,
            kernel: kernel.as_deref().map(absolute).transpose()?,
            initrd: initrd.as_deref().map(absolute).transpose()?,
            cmdline,
        })?,
        ImageCommand::Delete { name } => {
            ctx.client.delete_image(&name)?;
            return match ctx.format {
                Format::Json => output::json(&serde_json::json!({ "deleted": name })),
                Format::Table => {
                    println!("deleted image {name}");
                    Ok(())
                }
            };
        }
    };
    print_one(ctx.format, &view)
}

/// Polls the build until it is ready or failed, showing how it goes: on a terminal one status
/// line redrawn every poll (phase, percent, the build's latest step, time so far); otherwise
/// (a pipe, a log, or `-o json`, where it goes to stderr so stdout stays one JSON document) a
/// line whenever the phase or the percentage moves.
fn follow_build(ctx: &Ctx, name: &str, mut v: ImageView) -> Result<ImageView> {
    let started = Instant::now();
    let live = ctx.format == Format::Table && std::io::stdout().is_terminal();
    let mut last = None;
    let mut drew = false;
    let result = loop {
        match v.state.as_str() {
            "building" => {
                let line = progress_line(name, &v, started.elapsed());
                let now = (v.phase.clone(), v.percent);
                if live {
                    let mut out = std::io::stdout().lock();
                    // Clear the line, then draw the status cut to the terminal's usual width.
                    let _ = write!(out, "\r\x1b[2K{}", fit(&line, 100));
                    let _ = out.flush();
                    drew = true;
                } else if last.as_ref() != Some(&now) {
                    match ctx.format {
                        Format::Json => eprintln!("{line}"),
                        Format::Table => println!("{line}"),
                    }
                }
                last = Some(now);
            }
            "failed" => {
                break Err(anyhow::anyhow!(
                    "build of {name} failed: {}",
                    v.error.as_deref().unwrap_or("(no reason given)")
                ))
            }
            _ => break Ok(v),
        }
        std::thread::sleep(POLL);
        v = match ctx.client.show_image(name) {
            Ok(v) => v,
            Err(e) => break Err(e.into()),
        };
    };
    if drew {
        println!();
    }
    if result.is_ok() && last.is_some() {
        eprintln!("{name}: built in {}", elapsed(started.elapsed()));
    }
    result
}

/// `debian-12-web: [ 42%] packages  debian-12: Unpacking libc6 (1m05s)`.
fn progress_line(name: &str, v: &ImageView, took: Duration) -> String {
    let message = v.message.as_deref().unwrap_or("").trim();
    format!(
        "{name}: [{:>3}%] {:<10} {message} ({})",
        v.percent.unwrap_or(0),
        v.phase.as_deref().unwrap_or("?"),
        elapsed(took)
    )
}

fn elapsed(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// `line` cut to at most `width` characters (a redrawn line must not wrap).
fn fit(line: &str, width: usize) -> String {
    if line.chars().count() <= width {
        return line.to_string();
    }
    let mut out: String = line.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn size(bytes: Option<u64>) -> String {
    match bytes {
        None => "-".into(),
        Some(b) if b >= 1 << 30 => format!("{:.1}G", b as f64 / (1u64 << 30) as f64),
        Some(b) => format!("{}M", b.div_ceil(1 << 20)),
    }
}

fn print_list(format: Format, images: &[ImageView]) -> Result<()> {
    if format == Format::Json {
        return output::json(images);
    }
    let mut table = Table::new(&["name", "state", "kind", "size", "stored", "description"]);
    for i in images {
        let state = match (i.state.as_str(), i.percent) {
            ("building", Some(p)) => format!("building {p}%"),
            (s, _) => s.to_string(),
        };
        table.row(vec![
            i.name.clone(),
            state,
            i.kind.clone(),
            size(i.size_bytes),
            size(i.stored_bytes),
            i.description.clone(),
        ]);
    }
    table.print();
    Ok(())
}

fn print_one(format: Format, v: &ImageView) -> Result<()> {
    if format == Format::Json {
        return output::json(v);
    }
    output::print_fields(&[
        ("name", v.name.clone()),
        ("state", v.state.clone()),
        ("kind", v.kind.clone()),
        ("description", v.description.clone()),
        ("size", size(v.size_bytes)),
        ("stored", size(v.stored_bytes)),
        ("phase", opt(v.phase.as_deref())),
        ("percent", opt(v.percent)),
        ("error", opt(v.error.as_deref())),
    ]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_line_shows_phase_percent_step_and_time() {
        let v = ImageView {
            name: "debian-12-web".into(),
            state: "building".into(),
            phase: Some("packages".into()),
            percent: Some(42),
            message: Some("debian-12: Unpacking libc6".into()),
            ..Default::default()
        };
        assert_eq!(
            progress_line("debian-12-web", &v, Duration::from_secs(65)),
            "debian-12-web: [ 42%] packages   debian-12: Unpacking libc6 (1m05s)"
        );
        let queued = ImageView::default();
        assert_eq!(
            progress_line("x", &queued, Duration::from_secs(3)),
            "x: [  0%] ?           (3s)"
        );
    }

    #[test]
    fn status_lines_are_cut_to_width() {
        assert_eq!(fit("abcdef", 10), "abcdef");
        assert_eq!(fit("abcdefghijkl", 5), "abcd…");
    }
}
