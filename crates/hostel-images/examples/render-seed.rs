//! Prints the user-data of a web-template seed (for checking it against cloud-init's schema).
use hostel_images::{Catalog, SeedConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut seed = SeedConfig {
        instance_id: "i-1".into(),
        hostname: "example".into(),
        ssh_authorized_keys: vec!["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA me@host".into()],
        ..Default::default()
    };
    let name = std::env::args().nth(1).unwrap_or_else(|| "web".into());
    let params = std::env::args()
        .skip(2)
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    Catalog::builtin()
        .template(&name)
        .ok_or("no such template")?
        .apply(&params, &mut seed)?;
    print!("{}", seed.render()?.user_data);
    Ok(())
}
