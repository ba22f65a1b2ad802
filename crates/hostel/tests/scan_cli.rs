//! `hostel scan image|file` offline: EICAR in a file of an ext4 image (made by `mkfs.ext4 -d`,
//! never mounted) is reported with its path as JSON, exit status 3; a clean file exits 0; a
//! refused signature is named in the report.

use std::process::Command;

const EICAR: &[u8] = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

#[test]
fn scan_image_reports_eicar_with_its_path() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir_all(root.join("srv/www")).unwrap();
    std::fs::write(
        root.join("srv/www/upload.bin"),
        [b"head".as_slice(), EICAR].concat(),
    )
    .unwrap();
    std::fs::write(root.join("clean.txt"), b"nothing here").unwrap();
    let image = tmp.path().join("fs.img");
    match Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(&root)
        .arg(&image)
        .arg("8M")
        .status()
    {
        Ok(s) => assert!(s.success()),
        Err(e) => {
            eprintln!("skipped: mkfs.ext4 not available: {e}");
            return;
        }
    }
    let db = tmp.path().join("db");
    std::fs::create_dir(&db).unwrap();
    std::fs::write(db.join("x.ndb"), "Bad.Offset:0:EP+4:aabb\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hostel"))
        .args(["scan", "image"])
        .arg(&image)
        .arg("--db")
        .arg(&db)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let findings = v["scan"]["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 1, "{v}");
    assert_eq!(findings[0]["path"], "/srv/www/upload.bin");
    assert_eq!(findings[0]["offset"], 4);
    assert_eq!(findings[0]["signature"], "Hostel.Test.EICAR");
    assert_eq!(v["signatures"]["refused"][0]["name"], "Bad.Offset");

    let clean = Command::new(env!("CARGO_BIN_EXE_hostel"))
        .args(["scan", "file"])
        .arg(root.join("clean.txt"))
        .output()
        .unwrap();
    assert_eq!(clean.status.code(), Some(0), "{clean:?}");
}
