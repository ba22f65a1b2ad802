//! Backend-independent records the store reads and writes.

pub mod agent;
pub mod appliance;
pub mod audit;
pub mod edge;
pub mod ids;
pub mod network;
pub mod nic_limits;
pub mod tenant;
pub mod token;
pub mod vm;
pub mod volume;

/// Declares a fieldless enum that is stored and serialized as a lowercase
/// word, with one spelling for serde, the database and error messages alike
/// (so a value written by one backend can be read back by another).
macro_rules! word_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        pub enum $name {
            $(#[serde(rename = $text)] $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = crate::error::StoreError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(crate::error::StoreError::invalid(
                        stringify!($name),
                        format!("unknown value {s:?}"),
                    )),
                }
            }
        }
    };
}
pub(crate) use word_enum;
