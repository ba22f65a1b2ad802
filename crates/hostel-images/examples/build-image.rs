//! Builds an image into a store through the catalog:
//! `cargo run -p hostel-images --example build-image -- STORE [NAME]` (default debian-12).
use hostel_images::{BuildOptions, Catalog, ImageStore, Progress};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let dir = std::env::args()
        .nth(1)
        .ok_or("usage: build-image STORE [NAME]")?;
    let name = std::env::args()
        .nth(2)
        .unwrap_or_else(|| "debian-12".into());
    let store = ImageStore::open(dir)?;
    let show = |p: &Progress| {
        eprintln!(
            "{} [{:3}%] {:?}: {}",
            p.image, p.percent, p.phase, p.message
        )
    };
    let out = Catalog::builtin().build(&store, &name, &BuildOptions::default(), &show)?;
    println!(
        "{} cached={} in {:.1?}",
        out.image.dir().display(),
        out.cached,
        out.elapsed
    );
    Ok(())
}
