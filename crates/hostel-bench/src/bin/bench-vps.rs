//! `make bench-vps`: create+start+delete of a minimal busybox VPS through the daemon's API,
//! against `runc run` of the same busybox root running `/bin/true`, alternating, medians.
//! Goal (issue 19): the VPS at most 1.5× `runc run`.

use anyhow::{bail, Context, Result};
use clap::Parser;
use hostel_api::{Client, CreateTenant, CreateToken, CreateVm};
use hostel_bench::api_daemon::Daemon;
use hostel_bench::stats::{ratio, Summary};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

#[derive(Parser)]
struct Args {
    /// The hostel binary.
    #[arg(long)]
    hostel: PathBuf,
    #[arg(long, default_value_t = 10)]
    rounds: usize,
    /// Append the results to this markdown file.
    #[arg(long)]
    markdown: Option<PathBuf>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let daemon = Daemon::spawn_with(&args.hostel, None, "hostel-bench-vps-")?;
    let op = Client::new(&daemon.url, Some(daemon.operator.clone()));
    op.create_tenant(&CreateTenant {
        name: "bench".into(),
        quota: None,
    })?;
    let tok = op.create_token("bench", &CreateToken::default())?;
    let c = Client::new(&daemon.url, Some(tok.secret));

    let tmp = tempfile::tempdir()?;
    let root = tmp.path().join("busybox");
    hostel_vps::image::build_busybox(&root)?;
    let bundle = tmp.path().join("bundle");
    std::fs::create_dir_all(&bundle)?;
    let spec = Command::new("runc")
        .args(["spec", "--bundle"])
        .arg(&bundle)
        .status()
        .context("runc spec")?;
    if !spec.success() {
        bail!("runc spec failed");
    }
    let cfg_path = bundle.join("config.json");
    let mut cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(&cfg_path)?)?;
    cfg["root"] = serde_json::json!({"path": root, "readonly": true});
    cfg["process"]["args"] = serde_json::json!(["/bin/true"]);
    cfg["process"]["terminal"] = serde_json::json!(false);
    std::fs::write(&cfg_path, serde_json::to_vec(&cfg)?)?;
    let runc_root = tmp.path().join("runc");

    let (mut vps, mut runc) = (Vec::new(), Vec::new());
    for i in 0..args.rounds {
        let t = Instant::now();
        c.vpss(None).create(&CreateVm {
            name: format!("b{i}"),
            image: Some("busybox".into()),
            memory: Some(hostel_api::Size::Mib(64)),
            disk_gib: Some(1),
            ..Default::default()
        })?;
        c.vpss(None).delete(&format!("b{i}"))?;
        vps.push(t.elapsed().as_secs_f64() * 1000.0);

        let t = Instant::now();
        let st = Command::new("runc")
            .arg("--root")
            .arg(&runc_root)
            .args(["run", "--bundle"])
            .arg(&bundle)
            .arg(format!("r{i}"))
            .stdin(Stdio::null())
            .status()?;
        if !st.success() {
            bail!("runc run failed: {st}");
        }
        runc.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let (v, r) = (Summary::of(&vps), Summary::of(&runc));
    let fmt = |s: Option<Summary>| {
        s.map_or("-".into(), |s| {
            format!("{:.0} ms ({:.0}–{:.0})", s.median, s.min, s.max)
        })
    };
    let ratio = ratio(v, r).map_or("-".into(), |x| format!("{x:.1}×"));
    let text = format!(
        "\n## VPS create+start+delete vs `runc run` (`make bench-vps`)\n\n\
         {} rounds, alternating; median (min–max).\n\n\
         | what | time |\n|---|---|\n\
         | busybox VPS through the API: create (namespaces, ext4 disk, idmapped overlay, runc create+start) + delete | {} |\n\
         | `runc run` of the same root, `/bin/true`, no user namespace, no disk | {} |\n\
         | ratio (goal ≤ 1.5×) | {} |\n",
        args.rounds,
        fmt(v),
        fmt(r),
        ratio
    );
    print!("{text}");
    if let Some(md) = args.markdown {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(md)?;
        f.write_all(text.as_bytes())?;
    }
    drop(daemon);
    Ok(())
}
