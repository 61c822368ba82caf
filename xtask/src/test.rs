//! `cargo xtask test`: every check CI runs, in the order that fails fastest.
//!
//! fmt, clippy (warnings denied, the eBPF crate included), unit tests, the eBPF object (built and
//! loaded), the network-namespace suite in `tests/`, which needs root, and last the cluster on
//! Vagrant VMs (`cargo xtask vagrant test`), the slowest.

use anyhow::{Result, bail};
use clap::Args;

use crate::tally::{Tally, run_counted};
use crate::{ebpf, setup, shell, vagrant};

#[derive(Args, Debug)]
pub struct TestArgs {
    /// Skip the network-namespace suite (it needs root).
    #[arg(long)]
    no_netns: bool,
    /// Leave out the cluster on Vagrant VMs (it takes about ten minutes).
    #[arg(long)]
    no_vagrant: bool,
    /// Run only netns tests whose name contains this (passed to the test binary); the VMs are
    /// left out then.
    filter: Option<String>,
}

pub fn run(args: &TestArgs) -> Result<()> {
    let started = std::time::Instant::now();
    if !args.no_netns && !shell::is_root() {
        bail!("the network-namespace suite needs root: run as root, or pass --no-netns");
    }
    setup::run_all()?;

    shell::step("test: [1/7] formatting");
    shell::run(shell::cargo().args(["fmt", "--all", "--check"]))?;
    let ebpf_sources: Vec<_> = std::fs::read_dir(shell::root().join("ebpf/programs/src"))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .collect();
    shell::run(
        std::process::Command::new("rustfmt")
            .args(["--edition", "2024", "--check"])
            .args(&ebpf_sources),
    )?;

    shell::step("test: [2/7] clippy, warnings denied");
    shell::run(shell::cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--locked",
        "--",
        "-D",
        "warnings",
    ]))?;
    ebpf::clippy()?;

    shell::step("test: [3/7] unit and API tests (no root needed)");
    let mut tally = Tally::default();
    run_counted(
        shell::cargo().args([
            "test",
            "--locked",
            "--workspace",
            "--exclude",
            "skiff-tests",
        ]),
        &mut tally,
    )?;
    run_counted(
        shell::cargo().args(["test", "--locked", "-p", "skiff-tests", "--lib", "--bins"]),
        &mut tally,
    )?;

    shell::step("test: [4/7] eBPF object");
    ebpf::build_and_check()?;

    if args.no_netns {
        println!("\n--no-netns: skipping the network-namespace suite");
    } else {
        shell::step("test: [5/7] network-namespace and client suite (tests/)");
        shell::run(shell::cargo().args(["build", "--locked", "--workspace", "--bins"]))?;
        let mut command = shell::cargo();
        command.args(["test", "--locked", "-p", "skiff-tests", "--test", "*"]);
        if let Some(filter) = &args.filter {
            command.args(["--", filter]);
        }
        run_counted(&mut command, &mut tally)?;
    }

    if args.no_netns || args.no_vagrant || args.filter.is_some() {
        println!("\nskipping the cluster on Vagrant VMs (--no-netns, --no-vagrant or a filter)");
    } else {
        shell::step("test: [6/7] the cluster on Vagrant VMs");
        vagrant::test(&vagrant::Settings::ci(), false)?;
    }

    shell::step("test: [7/7] leftovers");
    let mut left: Vec<String> = skiff_tests::run::netns_names()
        .into_iter()
        .chain(skiff_tests::run::root_link_names())
        .filter(|n| n.starts_with(skiff_tests::run::PREFIX))
        .filter(|n| {
            skiff_tests::RunId::from_object_name(n)
                .is_some_and(|id| !skiff_tests::run::detached_runs().contains(&id))
        })
        .collect();
    left.extend(vagrant::leftovers());
    if !left.is_empty() {
        bail!("the tests left these behind: {}", left.join(", "));
    }
    println!("none");
    println!(
        "\nall checks passed in {:.0}s",
        started.elapsed().as_secs_f64()
    );
    println!("{}", tally.summary());
    Ok(())
}
