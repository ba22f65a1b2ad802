//! ClamAV `.hdb`/`.hsb` whole-file hash signatures: `Hash:FileSize:Name[:MinFL]`.
//!
//! The hash kind follows its length (32 hex digits MD5, 40 SHA-1, 64 SHA-256) in either file
//! type, as ClamAV does; `*` as the size (any size) is accepted.

use super::body::check_name;
use super::SigError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HashKind {
    Md5,
    Sha1,
    Sha256,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashSig {
    pub name: String,
    pub kind: HashKind,
    pub digest: Vec<u8>,
    /// None: any size (`*`).
    pub size: Option<u64>,
}

pub fn parse_hash_line(line: &str) -> Result<HashSig, SigError> {
    let fields: Vec<&str> = line.split(':').collect();
    if fields.len() < 3 || fields.len() > 5 {
        return Err(SigError::Fields {
            want: "3 to 5 (Hash:FileSize:Name[:MinFL[:MaxFL]])",
            got: fields.len(),
        });
    }
    let hex = fields[0].as_bytes();
    let kind = match hex.len() {
        32 => HashKind::Md5,
        40 => HashKind::Sha1,
        64 => HashKind::Sha256,
        n => return Err(SigError::HashLength(n)),
    };
    let digest = hex
        .chunks(2)
        .map(|p| {
            let s = std::str::from_utf8(p).map_err(|_| SigError::HashHex)?;
            u8::from_str_radix(s, 16).map_err(|_| SigError::HashHex)
        })
        .collect::<Result<Vec<u8>, _>>()?;
    let size = match fields[1] {
        "*" => None,
        s => Some(
            s.parse::<u64>()
                .map_err(|_| SigError::Number(s.chars().take(32).collect()))?,
        ),
    };
    let name = check_name(fields[2])?;
    for fl in &fields[3..] {
        if !fl.is_empty() && fl.parse::<u32>().is_err() {
            return Err(SigError::Flevel(fl.to_string()));
        }
    }
    Ok(HashSig {
        name,
        kind,
        digest,
        size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_by_length_and_any_size() {
        let s = parse_hash_line("44d88612fea8a8f36de82e1278abb02f:68:Eicar").unwrap();
        assert_eq!(
            (s.kind, s.size, s.digest.len()),
            (HashKind::Md5, Some(68), 16)
        );
        let s = parse_hash_line(&format!("{}:*:X:73", "ab".repeat(32))).unwrap();
        assert_eq!((s.kind, s.size), (HashKind::Sha256, None));
        for (line, want) in [
            ("abc:1:X", "hash of 3"),
            (&format!("{}:1:X", "zz".repeat(16)) as &str, "hex"),
            ("44d88612fea8a8f36de82e1278abb02f:-1:X", "number"),
            ("44d88612fea8a8f36de82e1278abb02f:1", "3 to 5"),
        ] {
            let err = parse_hash_line(line).unwrap_err().to_string();
            assert!(err.contains(want), "{line}: {err}");
        }
    }
}
