//! The label selector text grammar, as apimachinery's `labels.Parse` reads it: a lexer that
//! takes the longest operator out of a run of symbols, and a parser for which `in` and `notin`
//! are keywords only where an operator goes. Keys are checked as soon as they are read, so a
//! bad key is reported before whatever follows it, as Kubernetes does.

use super::SelectorError;
use super::label::{LabelOp, Requirement, invalid, label_key_errors, quote};

/// The requirements of a `labelSelector` text, in the order written; empty or blank text has none.
pub(super) fn requirements(text: &str) -> Result<Vec<Requirement>, SelectorError> {
    let mut parser = Parser {
        tokens: lex(text),
        pos: 0,
    };
    let mut requirements = Vec::new();
    loop {
        let token = parser.peek();
        match token.kind {
            Kind::Ident | Kind::Bang => {
                let requirement = parser
                    .requirement()
                    .map_err(|e| SelectorError::Requirement(Box::new(e)))?;
                requirements.push(requirement);
                let after = parser.next();
                match after.kind {
                    Kind::End => break,
                    Kind::Comma => {
                        let next = parser.peek();
                        if !matches!(next.kind, Kind::Ident | Kind::Bang) {
                            return Err(next.unexpected("identifier after ','"));
                        }
                    }
                    _ => return Err(after.unexpected("',' or 'end of string'")),
                }
            }
            Kind::End => break,
            _ => return Err(token.unexpected("!, identifier, or 'end of string'")),
        }
    }
    Ok(requirements)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    End,
    Ident,
    In,
    NotIn,
    OpenPar,
    ClosePar,
    Comma,
    Bang,
    Equals,
    DoubleEquals,
    NotEquals,
    Greater,
    Less,
}

#[derive(Clone, Copy, Debug)]
struct Token<'a> {
    kind: Kind,
    text: &'a str,
}

impl Token<'_> {
    fn unexpected(self, expected: &'static str) -> SelectorError {
        let found = if self.kind == Kind::End {
            "end of string"
        } else {
            self.text
        };
        SelectorError::Unexpected {
            found: found.into(),
            expected,
        }
    }
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_special(b: u8) -> bool {
    matches!(b, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

fn symbol(text: &str) -> Option<Kind> {
    Some(match text {
        "(" => Kind::OpenPar,
        ")" => Kind::ClosePar,
        "," => Kind::Comma,
        "!" => Kind::Bang,
        "=" => Kind::Equals,
        "==" => Kind::DoubleEquals,
        "!=" => Kind::NotEquals,
        ">" => Kind::Greater,
        "<" => Kind::Less,
        _ => return None,
    })
}

/// Splits into tokens; a run of special symbols yields its longest leading operator.
fn lex(input: &str) -> Vec<Token<'_>> {
    let bytes = input.as_bytes();
    let mut tokens = Vec::new();
    let mut pos = 0;
    loop {
        while pos < bytes.len() && is_space(bytes[pos]) {
            pos += 1;
        }
        let start = pos;
        let kind = if pos == bytes.len() {
            tokens.push(Token {
                kind: Kind::End,
                text: "",
            });
            return tokens;
        } else if is_special(bytes[pos]) {
            let mut kind = Kind::End;
            let mut end = pos;
            while end < bytes.len() && is_special(bytes[end]) {
                match symbol(&input[pos..=end]) {
                    Some(k) => (kind, end) = (k, end + 1),
                    None => break,
                }
            }
            pos = end;
            kind
        } else {
            while pos < bytes.len() && !is_special(bytes[pos]) && !is_space(bytes[pos]) {
                pos += 1;
            }
            match &input[start..pos] {
                "in" => Kind::In,
                "notin" => Kind::NotIn,
                _ => Kind::Ident,
            }
        };
        tokens.push(Token {
            kind,
            text: &input[start..pos],
        });
    }
}

struct Parser<'a> {
    tokens: Vec<Token<'a>>,
    pos: usize,
}

impl<'a> Parser<'a> {
    /// The next token as a key or value: `in` and `notin` are plain identifiers there.
    fn peek(&self) -> Token<'a> {
        let mut token = self.peek_operator();
        if matches!(token.kind, Kind::In | Kind::NotIn) {
            token.kind = Kind::Ident;
        }
        token
    }

    fn peek_operator(&self) -> Token<'a> {
        // `lex` always ends with End, and End is never consumed past.
        self.tokens[self.pos.min(self.tokens.len() - 1)]
    }

    fn next(&mut self) -> Token<'a> {
        let token = self.peek();
        self.pos += 1;
        token
    }

    /// `[!] KEY [op values]`.
    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        let mut token = self.next();
        let negated = token.kind == Kind::Bang;
        if negated {
            token = self.next();
        }
        if token.kind != Kind::Ident {
            return Err(token.unexpected("identifier"));
        }
        let key = token.text;
        let key_errors = label_key_errors(key);
        if !key_errors.is_empty() {
            return Err(invalid("key".into(), quote(key), key_errors.join("; ")));
        }
        if negated {
            return Requirement::new(key, LabelOp::DoesNotExist, Vec::new());
        }
        if matches!(self.peek().kind, Kind::End | Kind::Comma) {
            return Requirement::new(key, LabelOp::Exists, Vec::new());
        }
        let token = self.peek_operator();
        self.pos += 1;
        let op = match token.kind {
            Kind::In => LabelOp::In,
            Kind::NotIn => LabelOp::NotIn,
            Kind::Equals | Kind::DoubleEquals => LabelOp::Equals,
            Kind::NotEquals => LabelOp::NotEquals,
            Kind::Greater => LabelOp::GreaterThan,
            Kind::Less => LabelOp::LessThan,
            _ => return Err(token.unexpected("in, notin, =, ==, !=, gt, lt")),
        };
        let mut values = match op {
            LabelOp::In | LabelOp::NotIn => self.value_set()?,
            _ => vec![self.exact_value()?],
        };
        // Kubernetes validates the value set in sorted order; error paths index into it.
        values.sort();
        values.dedup();
        Requirement::new(key, op, values)
    }

    /// `( [VALUE] {, [VALUE]} )`; empty entries are the empty value.
    fn value_set(&mut self) -> Result<Vec<String>, SelectorError> {
        let open = self.next();
        if open.kind != Kind::OpenPar {
            return Err(open.unexpected("'('"));
        }
        let mut values = Vec::new();
        match self.peek().kind {
            Kind::Ident | Kind::Comma => {}
            Kind::ClosePar => {
                self.pos += 1;
                return Ok(vec![String::new()]);
            }
            _ => return Err(self.peek().unexpected("',', ')' or identifier")),
        }
        loop {
            let token = self.next();
            match token.kind {
                Kind::Ident => {
                    values.push(token.text.to_owned());
                    let after = self.peek();
                    match after.kind {
                        Kind::Comma => {}
                        Kind::ClosePar => break,
                        _ => return Err(after.unexpected("',' or ')'")),
                    }
                }
                Kind::Comma => {
                    if values.is_empty() {
                        values.push(String::new());
                    }
                    match self.peek().kind {
                        Kind::ClosePar => {
                            values.push(String::new());
                            break;
                        }
                        Kind::Comma => {
                            self.pos += 1;
                            values.push(String::new());
                        }
                        _ => {}
                    }
                }
                _ => return Err(token.unexpected("',', or identifier")),
            }
        }
        self.pos += 1; // the ')'
        Ok(values)
    }

    /// The value after `=`, `==`, `!=`, `>` or `<`; nothing there is the empty value.
    fn exact_value(&mut self) -> Result<String, SelectorError> {
        if matches!(self.peek().kind, Kind::End | Kind::Comma) {
            return Ok(String::new());
        }
        let token = self.next();
        if token.kind != Kind::Ident {
            return Err(token.unexpected("identifier"));
        }
        Ok(token.text.to_owned())
    }
}
