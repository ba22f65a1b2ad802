//! `hostel image list|show|build|import|delete`: the images VMs boot (operator for changes).

use super::output::{self, opt, Format, Table};
use super::Ctx;
use anyhow::{Context, Result};
use clap::Subcommand;
use hostel_api::{BuildImage, ImageView, ImportImage};
use std::path::{Path, PathBuf};
use std::time::Duration;

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

/// Polls the build until it is ready or failed, printing a line whenever phase or percent
/// moves (to stderr with `-o json`, so stdout stays one JSON document).
fn follow_build(ctx: &Ctx, name: &str, mut v: ImageView) -> Result<ImageView> {
    let mut last = None;
    loop {
        match v.state.as_str() {
            "building" => {
                let now = (v.phase.clone(), v.percent);
                if last.as_ref() != Some(&now) {
                    let line = format!(
                        "{name}: [{:>3}%] {} {}",
                        v.percent.unwrap_or(0),
                        v.phase.as_deref().unwrap_or("?"),
                        v.message.as_deref().unwrap_or("")
                    );
                    match ctx.format {
                        Format::Json => eprintln!("{line}"),
                        Format::Table => println!("{line}"),
                    }
                    last = Some(now);
                }
            }
            "failed" => {
                anyhow::bail!(
                    "build of {name} failed: {}",
                    v.error.as_deref().unwrap_or("(no reason given)")
                )
            }
            _ => return Ok(v),
        }
        std::thread::sleep(POLL);
        v = ctx.client.show_image(name)?;
    }
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
