//! `cargo xtask`: the project's own commands, so a fresh machine needs only cargo to start.
//!
//! `setup` installs what the machine lacks, `up`/`down` bring a local cluster up and take it
//! down, `exec` runs a command in one of its Pods or nodes, `test` runs every check CI runs,
//! `build-ebpf` builds the kernel-side programs, `bench` runs benchmarks against a baseline
//! measured in the same run, and `vagrant` deploys to Linux VMs and tests them.

mod bench;
mod cluster;
mod ebpf;
mod exec;
mod setup;
mod shell;
mod tally;
mod test;
mod vagrant;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "cargo xtask", about = "skiff's developer commands")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Install what this machine lacks: apt packages, the pinned nightly, bpf-linker.
    Setup,
    /// Bring up a local network-namespace cluster and show a server answering across it.
    Up(cluster::UpArgs),
    /// Remove everything `up` made.
    Down,
    /// Run a command in a Pod's (or with --node, a node's) network namespace of the cluster up.
    Exec(exec::ExecArgs),
    /// Run every check: fmt, clippy, unit tests, the eBPF build, the network-namespace suite.
    Test(test::TestArgs),
    /// Build the kernel-side eBPF programs to a BPF object and check the kernel accepts it.
    BuildEbpf,
    /// Run a benchmark; figures go to target/bench/<name>.json.
    Bench(bench::BenchArgs),
    /// skiff on Linux VMs with Vagrant: up, test, down (and dist, ssh, kubectl).
    Vagrant(vagrant::VagrantArgs),
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Setup => setup::run_all(),
        Command::Up(args) => cluster::up(&args),
        Command::Down => cluster::down(),
        Command::Exec(args) => exec::exec(&args),
        Command::Test(args) => test::run(&args),
        Command::BuildEbpf => ebpf::build_and_check().map(drop),
        Command::Bench(args) => bench::run(&args),
        Command::Vagrant(args) => vagrant::run(&args),
    }
}
