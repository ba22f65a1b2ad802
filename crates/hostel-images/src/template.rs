//! Service templates (`images/templates/*.toml`): a base image plus packages baked into a
//! derived image at build time, a cloud-config fragment with `{{param}}` placeholders for the
//! customer's parameters, and the ports the service serves. The file format is documented in
//! `images/templates/web.toml`.
//!
//! Placeholders are substituted in the parsed structure, string by string, so a parameter
//! value is always one string value: it cannot add keys, commands or YAML.

use crate::error::{ImageError, Result};
use crate::recipe::DerivedRecipe;
use crate::seed::{merge, SeedConfig};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// The templates shipped with hostel, compiled in so the daemon needs no data directory.
const BUILTIN: &[(&str, &str)] = &[
    ("web", include_str!("../../../images/templates/web.toml")),
    (
        "database",
        include_str!("../../../images/templates/database.toml"),
    ),
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Template {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The image the template's image is derived from.
    pub base: String,
    /// Name of the derived image VMs of this template boot.
    pub image: String,
    #[serde(default)]
    pub packages: Vec<String>,
    #[serde(default)]
    pub ports: Vec<Port>,
    #[serde(default)]
    pub params: BTreeMap<String, Param>,
    #[serde(default)]
    pub cloud_config: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Port {
    pub port: u16,
    #[serde(default = "tcp")]
    pub protocol: String,
    #[serde(default)]
    pub description: String,
}

fn tcp() -> String {
    "tcp".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamKind {
    /// Any UTF-8 text up to `max_len` bytes (a page's content).
    Text,
    /// A lowercase SQL/Unix identifier: `[a-z_][a-z0-9_]{0,62}`.
    Identifier,
    /// 8-128 characters without control characters.
    Password,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Param {
    #[serde(default)]
    pub description: String,
    pub kind: ParamKind,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub default: Option<String>,
    #[serde(default)]
    pub max_len: Option<usize>,
}

/// Why a parameter's value (or default) is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    #[error("{name} is longer than {max} bytes")]
    TooLong { name: String, max: usize },
    #[error("{0} must be a lowercase identifier ([a-z_][a-z0-9_]*, at most 63)")]
    NotIdentifier(String),
    #[error("{0} must be 8-128 characters without control characters")]
    BadPassword(String),
}

impl Param {
    fn check(&self, name: &str, v: &str) -> std::result::Result<(), ParamError> {
        let max = self.max_len.unwrap_or(64 * 1024);
        if v.len() > max {
            return Err(ParamError::TooLong {
                name: name.to_string(),
                max,
            });
        }
        match self.kind {
            ParamKind::Text => Ok(()),
            ParamKind::Identifier => {
                let ok = (1..=63).contains(&v.len())
                    && v.bytes()
                        .next()
                        .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
                    && v.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
                ok.then_some(())
                    .ok_or_else(|| ParamError::NotIdentifier(name.to_string()))
            }
            ParamKind::Password => {
                let n = v.chars().count();
                let ok = (8..=128).contains(&n) && !v.chars().any(char::is_control);
                ok.then_some(())
                    .ok_or_else(|| ParamError::BadPassword(name.to_string()))
            }
        }
    }
}

impl Template {
    /// Parses and validates a template file's text.
    pub fn parse(text: &str) -> Result<Template> {
        let t: Template = toml::from_str(text).map_err(|e| ImageError::Template {
            template: "?".into(),
            reason: e.to_string(),
        })?;
        t.validate()?;
        Ok(t)
    }

    pub fn load(path: &Path) -> Result<Template> {
        let text = std::fs::read_to_string(path).map_err(ImageError::io(path))?;
        Template::parse(&text).map_err(|e| match e {
            ImageError::Template { reason, .. } => ImageError::Template {
                template: path.display().to_string(),
                reason,
            },
            other => other,
        })
    }

    /// Every `*.toml` in `dir`, sorted by name.
    pub fn load_dir(dir: &Path) -> Result<Vec<Template>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(ImageError::io(dir))? {
            let path = entry.map_err(ImageError::io(dir))?.path();
            if path.extension().is_some_and(|e| e == "toml") {
                out.push(Template::load(&path)?);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The templates compiled into hostel (images/templates at build time).
    pub fn builtin() -> Vec<Template> {
        BUILTIN
            .iter()
            .filter_map(|(name, text)| {
                Template::parse(text)
                    .inspect_err(
                        |e| tracing::error!(template = name, error = %e, "bad builtin template"),
                    )
                    .ok()
            })
            .collect()
    }

    fn err(&self, reason: impl Into<String>) -> ImageError {
        ImageError::Template {
            template: self.name.clone(),
            reason: reason.into(),
        }
    }

    fn validate(&self) -> Result<()> {
        crate::store::validate_name(&self.image)?;
        crate::store::validate_name(&self.base)?;
        if let Some(p) = self
            .packages
            .iter()
            .find(|p| !crate::build::valid_package(p))
        {
            return Err(self.err(format!("{p:?} is not a Debian package name")));
        }
        for (name, p) in &self.params {
            if let Some(d) = &p.default {
                p.check(name, d)
                    .map_err(|e| self.err(format!("default: {e}")))?;
            }
        }
        let mut unknown = Vec::new();
        walk_strings(&Value::Object(self.cloud_config.clone()), &mut |s| {
            for name in placeholders(s) {
                if !self.params.contains_key(name) {
                    unknown.push(name.to_string());
                }
            }
        });
        if let Some(u) = unknown.first() {
            return Err(self.err(format!("placeholder {{{{{u}}}}} names no parameter")));
        }
        Ok(())
    }

    /// The recipe of the template's image.
    pub fn recipe(&self) -> DerivedRecipe {
        DerivedRecipe {
            name: self.image.clone(),
            parent: self.base.clone(),
            packages: self.packages.clone(),
        }
    }

    /// The cloud-config fragment for these parameter values (defaults filled in; unknown,
    /// missing or malformed values refused).
    pub fn render(&self, values: &BTreeMap<String, String>) -> Result<Map<String, Value>> {
        if let Some(k) = values.keys().find(|k| !self.params.contains_key(*k)) {
            return Err(self.err(format!("unknown parameter {k:?}")));
        }
        let mut resolved = BTreeMap::new();
        for (name, p) in &self.params {
            let v = match (values.get(name), &p.default) {
                (Some(v), _) => v.clone(),
                (None, Some(d)) => d.clone(),
                (None, None) if p.required => {
                    return Err(self.err(format!("parameter {name:?} is required")))
                }
                (None, None) => String::new(),
            };
            p.check(name, &v).map_err(|e| self.err(e.to_string()))?;
            resolved.insert(name.as_str(), v);
        }
        let mut out = Value::Object(self.cloud_config.clone());
        substitute(&mut out, &resolved);
        match out {
            Value::Object(m) => Ok(m),
            _ => Err(self.err("cloud_config is not a table")),
        }
    }

    /// Renders the fragment into `seed` (merged with what the seed already has).
    pub fn apply(&self, values: &BTreeMap<String, String>, seed: &mut SeedConfig) -> Result<()> {
        let fragment = self.render(values)?;
        merge(&mut seed.cloud_config, &fragment);
        Ok(())
    }
}

/// The names in `{{name}}` placeholders of `s`.
fn placeholders(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        out.push(after[..end].trim());
        rest = &after[end + 2..];
    }
    out
}

/// Replaces placeholders in one pass (a value containing `{{x}}` stays literal).
fn fill(s: &str, values: &BTreeMap<&str, String>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        out.push_str(&rest[..start]);
        match values.get(after[..end].trim()) {
            Some(v) => out.push_str(v),
            None => out.push_str(&rest[start..start + 2 + end + 2]),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

fn substitute(v: &mut Value, values: &BTreeMap<&str, String>) {
    match v {
        Value::String(s) => *s = fill(s, values),
        Value::Array(a) => a.iter_mut().for_each(|x| substitute(x, values)),
        Value::Object(m) => m.values_mut().for_each(|x| substitute(x, values)),
        _ => {}
    }
}

fn walk_strings<'a>(v: &'a Value, f: &mut impl FnMut(&'a str)) {
    match v {
        Value::String(s) => f(s),
        Value::Array(a) => a.iter().for_each(|x| walk_strings(x, f)),
        Value::Object(m) => m.values().for_each(|x| walk_strings(x, f)),
        _ => {}
    }
}

#[cfg(test)]
mod tests;
