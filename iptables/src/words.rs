//! Rule words: how restore text groups and quotes the arguments of one rule.
//!
//! iptables keeps a rule as argv words; restore and save text write them on one line, with
//! double quotes around a word holding spaces (comments). Comparing rules word by word makes
//! `--comment "a b"` and `--comment a\ b`-style respellings irrelevant to callers.

/// Splits a restore-format line into words; double quotes group words and are dropped.
pub fn split_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let (mut quoted, mut started) = (false, false);
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                started = true;
            }
            c if c.is_whitespace() && !quoted => {
                if started {
                    words.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            c => {
                word.push(c);
                started = true;
            }
        }
    }
    if started {
        words.push(word);
    }
    words
}

/// Words back into one restore line, quoting words that are empty or hold white space.
pub fn join_words(words: &[String]) -> String {
    words
        .iter()
        .map(|w| {
            if w.is_empty() || w.contains(char::is_whitespace) {
                format!("\"{w}\"")
            } else {
                w.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The chain or target a rule jumps (`-j`) or goes (`-g`) to.
pub fn jumps_to(rule: &str) -> Option<&str> {
    let mut words = rule.split_whitespace();
    while let Some(w) = words.next() {
        if w == "-j" || w == "-g" {
            return words.next();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_words_stay_together_and_join_back() {
        let line = r#"-A X -m comment --comment "two words" -j RETURN"#;
        let words = split_words(line);
        assert_eq!(
            words,
            [
                "-A",
                "X",
                "-m",
                "comment",
                "--comment",
                "two words",
                "-j",
                "RETURN"
            ]
        );
        assert_eq!(join_words(&words), line);
        assert_eq!(split_words(r#"--comment """#), ["--comment", ""]);
        assert_eq!(
            join_words(&split_words(r#"--comment """#)),
            r#"--comment """#
        );
    }

    #[test]
    fn the_jump_target_is_found_after_j_or_g() {
        assert_eq!(
            jumps_to("-m mark --mark 0x4000/0x4000 -j MASQUERADE"),
            Some("MASQUERADE")
        );
        assert_eq!(
            jumps_to("-d 10.0.0.1/32 -g SKIFF-SVC-X"),
            Some("SKIFF-SVC-X")
        );
        assert_eq!(jumps_to("-s 10.0.0.0/8"), None);
    }
}
