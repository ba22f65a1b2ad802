//! The images hostel can build by name: the Debian base and one derived image per service
//! template. Building a template's image builds (or finds cached) its base first.

use crate::build::{BuildOptions, BuildOutcome};
use crate::error::{ImageError, Result};
use crate::progress::ProgressFn;
use crate::recipe::DebianRecipe;
use crate::store::ImageStore;
use crate::template::Template;

#[derive(Debug, Clone)]
pub struct Catalog {
    bases: Vec<DebianRecipe>,
    templates: Vec<Template>,
}

impl Catalog {
    pub fn new(templates: Vec<Template>) -> Self {
        Catalog {
            bases: vec![DebianRecipe::debian_12()],
            templates,
        }
    }

    /// The base recipes and the templates compiled into hostel.
    pub fn builtin() -> Self {
        Catalog::new(Template::builtin())
    }

    pub fn templates(&self) -> &[Template] {
        &self.templates
    }

    /// A template by its name ("web"), not its image's.
    pub fn template(&self, name: &str) -> Option<&Template> {
        self.templates.iter().find(|t| t.name == name)
    }

    /// Names of every image this catalog can build.
    pub fn buildable(&self) -> Vec<String> {
        self.bases
            .iter()
            .map(|b| b.name.clone())
            .chain(self.templates.iter().map(|t| t.image.clone()))
            .collect()
    }

    /// Builds image `name` and, first, whatever it derives from. Progress reports carry the
    /// name of the image being built at the moment.
    pub fn build(
        &self,
        store: &ImageStore,
        name: &str,
        opts: &BuildOptions,
        progress: ProgressFn<'_>,
    ) -> Result<BuildOutcome> {
        self.build_depth(store, name, opts, progress, 0)
    }

    fn build_depth(
        &self,
        store: &ImageStore,
        name: &str,
        opts: &BuildOptions,
        progress: ProgressFn<'_>,
        depth: usize,
    ) -> Result<BuildOutcome> {
        if let Some(base) = self.bases.iter().find(|b| b.name == name) {
            return store.build_debian(base, opts, progress);
        }
        let Some(t) = self.templates.iter().find(|t| t.image == name) else {
            return Err(ImageError::UnknownRecipe(
                name.to_string(),
                self.buildable().join(", "),
            ));
        };
        if depth > 8 {
            return Err(ImageError::InvalidRecipe(format!(
                "{name}: templates derive from each other in a cycle"
            )));
        }
        // An existing parent is used as it is (even if its recipe changed since: rebuilding a
        // base under other images' VMs is a decision of its own) unless replace is asked for.
        if opts.replace || !store.contains(&t.base) {
            self.build_depth(store, &t.base, opts, progress, depth + 1)?;
        }
        store.build_derived(&t.recipe(), opts, progress)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knows_the_base_and_template_images_and_refuses_others() {
        let c = Catalog::builtin();
        assert_eq!(
            c.buildable(),
            vec!["debian-12", "debian-12-web", "debian-12-database"]
        );
        assert_eq!(
            c.template("web").map(|t| t.image.as_str()),
            Some("debian-12-web")
        );
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let err = c
            .build(
                &store,
                "windows-95",
                &BuildOptions::default(),
                &crate::ignore_progress,
            )
            .unwrap_err();
        assert!(matches!(err, ImageError::UnknownRecipe(..)), "{err}");
    }
}
