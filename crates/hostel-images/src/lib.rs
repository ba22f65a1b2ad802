//! hostel's images: the store of bootable root disks VMs are cloned from, and everything
//! around it that does not need a running daemon.
//!
//! How the pieces fit (what the daemon does for `hostel image build` and a VM create):
//!
//! ```no_run
//! use hostel_images::*;
//! # fn main() -> Result<(), ImageError> {
//! let store = ImageStore::open("/var/lib/hostel/images")?;
//! let catalog = Catalog::builtin();
//! // Minutes when cold, milliseconds when cached; run on a blocking thread.
//! let progress = |p: &Progress| println!("{:3}% {:?} {}", p.percent, p.phase, p.message);
//! let built = catalog.build(&store, "debian-12-web", &BuildOptions::default(), &progress)?;
//!
//! let disk = built.image.create_vm_disk("/var/lib/hostel/vms/v1/root.qcow2".as_ref(), Some(10 << 30))?;
//! let mut seed = SeedConfig {
//!     instance_id: "v1".into(),
//!     hostname: "shop".into(),
//!     ssh_authorized_keys: vec!["ssh-ed25519 AAAA... me@laptop".into()],
//!     ..Default::default()
//! };
//! let params = [("index_html".to_string(), "<h1>Shop</h1>".to_string())].into();
//! catalog.template("web").expect("builtin").apply(&params, &mut seed)?;
//! let seed_path = std::path::Path::new("/var/lib/hostel/vms/v1/seed.img");
//! seed.write_disk(seed_path)?;
//! let input = built.image.boot_input(&disk, Some(seed_path))?; // + name, vcpus, memory, nics
//! # let _ = input; Ok(()) }
//! ```
//!
//! Module map:
//! - [`store`]: the on-disk store (`<store>/images/<name>/…`), listing, deleting, atomic commits.
//! - [`manifest`]: `manifest.json`, what an image is and how to boot it.
//! - [`recipe`]: what determines an image's content, hashed into its cache key.
//! - [`catalog`]: the images buildable by name (base + one per template).
//! - [`build`]: building Debian base images and derived (template) images.
//! - [`disk`]: VM disks (qcow2 overlays of an image) and the engine spec that boots them.
//! - [`import`]: importing raw/qcow2 files with integrity checks.
//! - [`seed`]: cloud-init NoCloud seed disks from a typed configuration.
//! - [`template`]: service templates (images/templates/*.toml).
//! - [`progress`]: build progress reports and cancellation.
//! - [`cmd`] (private): running host tools with useful errors.

mod cmd;

pub mod build;
pub mod catalog;
pub mod disk;
pub mod error;
pub mod import;
pub mod manifest;
pub mod progress;
pub mod recipe;
pub mod seed;
pub mod store;
pub mod template;

pub use build::{BuildOptions, BuildOutcome};
pub use catalog::Catalog;
pub use error::ImageError;
pub use import::{ImportOptions, Inspection};
pub use manifest::{DiskInfo, DiskLayout, ImageBoot, Manifest, Origin};
pub use progress::{ignore_progress, CancelToken, Phase, Progress, ProgressFn};
pub use recipe::{DebianRecipe, DerivedRecipe};
pub use seed::{
    Addressing, IpCidr, NicConfig, RunCmd, SeedConfig, SeedFiles, SeedNetwork, SeedUser,
};
pub use store::{validate_name, Image, ImageStore};
pub use template::{Param, ParamKind, Port, Template};
