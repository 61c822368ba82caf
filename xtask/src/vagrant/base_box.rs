//! The Vagrant box: built here from Debian packages when missing, since these machines cannot
//! download one. Its name carries a hash of the recipe (`deploy/vagrant/box/build-box.sh`), so a
//! changed recipe makes a new box and the old one is removed.

use std::process::Command;

use anyhow::{Context, Result};

use crate::shell::{self, probe, run};

const RECIPE: &str = "deploy/vagrant/box/build-box.sh";
const NAME_PREFIX: &str = "skiff/bookworm-";

/// The box's name for the current recipe.
pub fn name() -> Result<String> {
    let recipe = shell::root().join(RECIPE);
    let sum = probe(Command::new("sha256sum").arg(&recipe))
        .with_context(|| format!("cannot hash {}", recipe.display()))?;
    Ok(format!("{NAME_PREFIX}{}", &sum[..12]))
}

/// Boxes Vagrant has, by name.
fn boxes() -> Vec<String> {
    probe(Command::new("vagrant").args(["box", "list", "--machine-readable"]))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            (fields.get(2) == Some(&"box-name")).then(|| fields.get(3).map(|s| s.to_string()))?
        })
        .collect()
}

/// Builds and adds the box unless Vagrant has it; removes boxes of older recipes.
pub fn ensure() -> Result<String> {
    let name = name()?;
    let have = boxes();
    if have.contains(&name) {
        println!("box {name}: present");
    } else {
        let work = shell::root().join("target/vagrant/box-work");
        let file = shell::root().join("target/vagrant/skiff-bookworm.box");
        let started = std::time::Instant::now();
        run(Command::new("bash")
            .arg(shell::root().join(RECIPE))
            .arg(&work)
            .arg(&file))?;
        run(Command::new("vagrant")
            .args(["box", "add", "--force", "--name", &name])
            .arg(&file))?;
        std::fs::remove_file(&file).ok();
        println!(
            "box {name}: built and added in {:.0}s",
            started.elapsed().as_secs_f64()
        );
    }
    for old in have
        .iter()
        .filter(|b| b.starts_with(NAME_PREFIX) && **b != name)
    {
        println!("removing the box of an older recipe: {old}");
        let _ = run(Command::new("vagrant").args(["box", "remove", "--force", "--all", old]));
    }
    Ok(name)
}
