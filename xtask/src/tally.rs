//! Counting what the test runs did, so `cargo xtask test` ends on one plain summary line
//! (`summary: N passed, N failed, N skipped`) however many test binaries ran.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// Sums of libtest's `test result:` lines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
}

impl Tally {
    /// Adds the counts of one `test result: ...` line; other lines add nothing.
    pub fn add_line(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(label), Some(count)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(count) = count.parse::<u64>() else {
                continue;
            };
            match label {
                "passed" => self.passed += count,
                "failed" => self.failed += count,
                "ignored" => self.ignored += count,
                _ => {}
            }
        }
    }

    /// The closing line CI reads.
    pub fn summary(&self) -> String {
        format!(
            "summary: {} passed, {} failed, {} skipped",
            self.passed, self.failed, self.ignored
        )
    }
}

/// Runs a `cargo test` command, echoing its output, and adds its results to `tally`.
pub fn run_counted(command: &mut Command, tally: &mut Tally) -> Result<()> {
    let line = skiff_tests::cmd::describe(command);
    println!("$ {line}");
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start `{line}`"))?;
    let stdout = child.stdout.take().context("no stdout")?;
    for out in BufReader::new(stdout).lines() {
        let out = out?;
        println!("{out}");
        tally.add_line(&out);
    }
    let status = child.wait()?;
    if !status.success() {
        println!("{}", tally.summary());
        bail!("`{line}` failed ({status})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_lines_add_up_and_other_lines_do_not() {
        let mut tally = Tally::default();
        tally.add_line("test result: ok. 8 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.21s");
        tally.add_line(
            "test result: FAILED. 6 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out",
        );
        tally.add_line("test foo ... ok");
        tally.add_line("running 3 tests");
        assert_eq!(
            tally,
            Tally {
                passed: 14,
                failed: 2,
                ignored: 1
            }
        );
        assert_eq!(tally.summary(), "summary: 14 passed, 2 failed, 1 skipped");
    }
}
