//! The access-log filter: the part of CEL that Istio's access-log examples use, over the
//! response code and request headers. Validation parses a Telemetry's `filter.expression`
//! with this, and so does the proxy: an expression that validates is one the proxy runs.
//!
//! ```text
//! expr       := or
//! or         := and ("||" and)*
//! and        := unary ("&&" unary)*
//! unary      := "!" unary | "(" expr ")" | "true" | "false" | comparison
//! comparison := operand ("==" | "!=" | "<" | "<=" | ">" | ">=") operand
//! operand    := "response.code" | INTEGER | "request.headers[" STRING "]" | STRING
//! ```
//!
//! `response.code` is an integer (0 when no response was made); a request header is a
//! string, compared with `==` / `!=` only; an absent header equals no string.

/// Deepest nesting of `!` and parentheses accepted: the parser recurses, an expression
/// comes from a user.
const MAX_DEPTH: usize = 32;
/// Longest expression accepted.
const MAX_LEN: usize = 4096;

/// Why an expression was refused, with the byte offset where it went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("empty expression")]
    Empty,
    #[error("expression longer than {MAX_LEN} bytes")]
    TooLong,
    #[error("expression nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("at {at}: unexpected end of expression, expected {expected}")]
    UnexpectedEnd { at: usize, expected: &'static str },
    #[error("at {at}: unexpected {found:?}, expected {expected}")]
    Unexpected {
        at: usize,
        found: String,
        expected: &'static str,
    },
    #[error(
        "at {at}: unknown attribute {name:?} (this mesh filters on response.code and request.headers['NAME'])"
    )]
    UnknownAttribute { at: usize, name: String },
    #[error("at {at}: unterminated string")]
    UnterminatedString { at: usize },
    #[error("at {at}: integer {text:?} out of range")]
    BadInteger { at: usize, text: String },
    #[error("at {at}: cannot compare {left} with {right}")]
    TypeMismatch {
        at: usize,
        left: &'static str,
        right: &'static str,
    },
    #[error("at {at}: strings compare with == and != only")]
    StringOrder { at: usize },
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    /// The operator with its operands swapped: `400 <= x` is `x >= 400`.
    fn flipped(self) -> Self {
        match self {
            Self::Lt => Self::Gt,
            Self::Le => Self::Ge,
            Self::Gt => Self::Lt,
            Self::Ge => Self::Le,
            same => same,
        }
    }

    fn test<T: Ord>(self, a: T, b: T) -> bool {
        match self {
            Self::Eq => a == b,
            Self::Ne => a != b,
            Self::Lt => a < b,
            Self::Le => a <= b,
            Self::Gt => a > b,
            Self::Ge => a >= b,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Expr {
    Const(bool),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    /// `response.code OP value`.
    Code(CmpOp, i64),
    /// `request.headers[name] == value` (or `!=`): the index into [`Filter::headers`].
    Header {
        index: usize,
        equal: bool,
        value: String,
    },
}

/// A parsed filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    expr: Expr,
    headers: Vec<String>,
}

/// What a filter looks at in one request.
pub struct Attributes<'a> {
    pub response_code: u16,
    /// The values of [`Filter::headers`], in that order (`None`: absent).
    pub headers: &'a [Option<&'a str>],
}

impl Filter {
    pub fn parse(input: &str) -> Result<Filter, FilterError> {
        if input.len() > MAX_LEN {
            return Err(FilterError::TooLong);
        }
        let tokens = lex(input)?;
        if tokens.is_empty() {
            return Err(FilterError::Empty);
        }
        let mut p = Parser {
            tokens,
            pos: 0,
            end: input.len(),
            headers: Vec::new(),
        };
        let expr = p.or(0)?;
        if let Some(t) = p.tokens.get(p.pos) {
            return Err(FilterError::Unexpected {
                at: t.at,
                found: t.tok.text(),
                expected: "&&, || or the end",
            });
        }
        Ok(Filter {
            expr,
            headers: p.headers,
        })
    }

    /// The request headers the filter reads (lowercase), to capture when a request starts.
    pub fn headers(&self) -> &[String] {
        &self.headers
    }

    /// Whether the filter is the constant `true` or `false`.
    pub fn constant(&self) -> Option<bool> {
        match self.expr {
            Expr::Const(b) => Some(b),
            _ => None,
        }
    }

    pub fn matches(&self, attrs: &Attributes<'_>) -> bool {
        eval(&self.expr, attrs)
    }
}

fn eval(e: &Expr, a: &Attributes<'_>) -> bool {
    match e {
        Expr::Const(b) => *b,
        Expr::Not(e) => !eval(e, a),
        Expr::And(l, r) => eval(l, a) && eval(r, a),
        Expr::Or(l, r) => eval(l, a) || eval(r, a),
        Expr::Code(op, v) => op.test(i64::from(a.response_code), *v),
        Expr::Header {
            index,
            equal,
            value,
        } => {
            let same = a.headers.get(*index).copied().flatten() == Some(value.as_str());
            same == *equal
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Ident(String),
    Int(String),
    Str(String),
    Op(&'static str),
}

impl Tok {
    fn text(&self) -> String {
        match self {
            Tok::Ident(s) | Tok::Int(s) => s.clone(),
            Tok::Str(s) => format!("'{s}'"),
            Tok::Op(o) => (*o).to_string(),
        }
    }
}

struct Token {
    tok: Tok,
    at: usize,
}

const OPS: [&str; 14] = [
    "==", "!=", "<=", ">=", "&&", "||", "<", ">", "!", "(", ")", "[", "]", ".",
];

fn lex(input: &str) -> Result<Vec<Token>, FilterError> {
    let bytes = input.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let at = i;
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c.is_ascii_alphabetic() || c == b'_' {
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            out.push(Token {
                tok: Tok::Ident(input[at..i].to_string()),
                at,
            });
        } else if c.is_ascii_digit()
            || (c == b'-' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit))
        {
            i += 1;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            out.push(Token {
                tok: Tok::Int(input[at..i].to_string()),
                at,
            });
        } else if c == b'\'' || c == b'"' {
            i += 1;
            let start = i;
            while i < bytes.len() && bytes[i] != c {
                if bytes[i] == b'\\' {
                    return Err(FilterError::Unexpected {
                        at: i,
                        found: "\\".into(),
                        expected: "a string without escapes",
                    });
                }
                i += 1;
            }
            if i >= bytes.len() {
                return Err(FilterError::UnterminatedString { at });
            }
            out.push(Token {
                tok: Tok::Str(input[start..i].to_string()),
                at,
            });
            i += 1;
        } else if let Some(op) = OPS.iter().find(|op| input[i..].starts_with(**op)) {
            i += op.len();
            out.push(Token {
                tok: Tok::Op(op),
                at,
            });
        } else {
            let ch = input[i..].chars().next().unwrap_or('?');
            return Err(FilterError::Unexpected {
                at,
                found: ch.to_string(),
                expected: "an attribute, a literal or an operator",
            });
        }
    }
    Ok(out)
}

/// A comparison operand.
enum Operand {
    Code,
    Int(i64),
    Str(String),
    Header(String),
}

impl Operand {
    fn type_name(&self) -> &'static str {
        match self {
            Operand::Code | Operand::Int(_) => "int",
            Operand::Str(_) | Operand::Header(_) => "string",
        }
    }
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    end: usize,
    headers: Vec<String>,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.pos).map(|t| &t.tok)
    }

    fn at(&self) -> usize {
        self.tokens.get(self.pos).map_or(self.end, |t| t.at)
    }

    fn next(&mut self, expected: &'static str) -> Result<(Tok, usize), FilterError> {
        let t = self
            .tokens
            .get(self.pos)
            .ok_or(FilterError::UnexpectedEnd {
                at: self.end,
                expected,
            })?;
        self.pos += 1;
        Ok((t.tok.clone(), t.at))
    }

    fn expect(&mut self, op: &'static str, expected: &'static str) -> Result<(), FilterError> {
        match self.next(expected)? {
            (Tok::Op(o), _) if o == op => Ok(()),
            (found, at) => Err(FilterError::Unexpected {
                at,
                found: found.text(),
                expected,
            }),
        }
    }

    fn or(&mut self, depth: usize) -> Result<Expr, FilterError> {
        let mut left = self.and(depth)?;
        while self.peek() == Some(&Tok::Op("||")) {
            self.pos += 1;
            left = Expr::Or(Box::new(left), Box::new(self.and(depth)?));
        }
        Ok(left)
    }

    fn and(&mut self, depth: usize) -> Result<Expr, FilterError> {
        let mut left = self.unary(depth)?;
        while self.peek() == Some(&Tok::Op("&&")) {
            self.pos += 1;
            left = Expr::And(Box::new(left), Box::new(self.unary(depth)?));
        }
        Ok(left)
    }

    fn unary(&mut self, depth: usize) -> Result<Expr, FilterError> {
        if depth >= MAX_DEPTH {
            return Err(FilterError::TooDeep);
        }
        match self.peek() {
            Some(Tok::Op("!")) => {
                self.pos += 1;
                Ok(Expr::Not(Box::new(self.unary(depth + 1)?)))
            }
            Some(Tok::Op("(")) => {
                self.pos += 1;
                let e = self.or(depth + 1)?;
                self.expect(")", ")")?;
                Ok(e)
            }
            Some(Tok::Ident(w)) if w == "true" || w == "false" => {
                let b = w == "true";
                self.pos += 1;
                Ok(Expr::Const(b))
            }
            _ => self.comparison(),
        }
    }

    fn comparison(&mut self) -> Result<Expr, FilterError> {
        let at = self.at();
        let left = self.operand()?;
        let (op, op_at) = match self.next("a comparison operator")? {
            (Tok::Op("=="), a) => (CmpOp::Eq, a),
            (Tok::Op("!="), a) => (CmpOp::Ne, a),
            (Tok::Op("<"), a) => (CmpOp::Lt, a),
            (Tok::Op("<="), a) => (CmpOp::Le, a),
            (Tok::Op(">"), a) => (CmpOp::Gt, a),
            (Tok::Op(">="), a) => (CmpOp::Ge, a),
            (found, at) => {
                return Err(FilterError::Unexpected {
                    at,
                    found: found.text(),
                    expected: "a comparison operator",
                });
            }
        };
        let right = self.operand()?;
        let equality = matches!(op, CmpOp::Eq | CmpOp::Ne);
        match (left, right) {
            (Operand::Code, Operand::Int(v)) => Ok(Expr::Code(op, v)),
            (Operand::Int(v), Operand::Code) => Ok(Expr::Code(op.flipped(), v)),
            (Operand::Int(a), Operand::Int(b)) => Ok(Expr::Const(op.test(a, b))),
            (Operand::Code, Operand::Code) => Ok(Expr::Const(op.test(0, 0))),
            (Operand::Header(name), Operand::Str(value))
            | (Operand::Str(value), Operand::Header(name)) => {
                if !equality {
                    return Err(FilterError::StringOrder { at: op_at });
                }
                Ok(Expr::Header {
                    index: self.header_index(name),
                    equal: op == CmpOp::Eq,
                    value,
                })
            }
            (Operand::Str(a), Operand::Str(b)) if equality => Ok(Expr::Const(op.test(a, b))),
            (l, r) if l.type_name() == r.type_name() => Err(FilterError::StringOrder { at: op_at }),
            (l, r) => Err(FilterError::TypeMismatch {
                at,
                left: l.type_name(),
                right: r.type_name(),
            }),
        }
    }

    fn header_index(&mut self, name: String) -> usize {
        let name = name.to_ascii_lowercase();
        match self.headers.iter().position(|h| *h == name) {
            Some(i) => i,
            None => {
                self.headers.push(name);
                self.headers.len() - 1
            }
        }
    }

    fn operand(&mut self) -> Result<Operand, FilterError> {
        const EXPECTED: &str = "response.code, request.headers['NAME'], an integer or a string";
        match self.next(EXPECTED)? {
            (Tok::Int(text), at) => text
                .parse::<i64>()
                .map(Operand::Int)
                .map_err(|_| FilterError::BadInteger { at, text }),
            (Tok::Str(s), _) => Ok(Operand::Str(s)),
            (Tok::Ident(first), at) => {
                let mut name = first;
                while self.peek() == Some(&Tok::Op(".")) {
                    self.pos += 1;
                    match self.next("an attribute name")? {
                        (Tok::Ident(part), _) => {
                            name.push('.');
                            name.push_str(&part);
                        }
                        (found, at) => {
                            return Err(FilterError::Unexpected {
                                at,
                                found: found.text(),
                                expected: "an attribute name",
                            });
                        }
                    }
                }
                match name.as_str() {
                    "response.code" => Ok(Operand::Code),
                    "request.headers" => {
                        self.expect("[", "[")?;
                        let header = match self.next("a header name string")? {
                            (Tok::Str(h), _) if !h.is_empty() => h,
                            (found, at) => {
                                return Err(FilterError::Unexpected {
                                    at,
                                    found: found.text(),
                                    expected: "a header name string",
                                });
                            }
                        };
                        self.expect("]", "]")?;
                        Ok(Operand::Header(header))
                    }
                    _ => Err(FilterError::UnknownAttribute { at, name }),
                }
            }
            (found, at) => Err(FilterError::Unexpected {
                at,
                found: found.text(),
                expected: EXPECTED,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(f: &str, c: u16) -> bool {
        Filter::parse(f).unwrap().matches(&Attributes {
            response_code: c,
            headers: &[],
        })
    }

    #[test]
    fn response_code_comparisons() {
        assert!(code("response.code >= 400", 503));
        assert!(!code("response.code >= 400", 200));
        assert!(code("response.code == 503 || response.code == 404", 404));
        assert!(!code("response.code == 503 || response.code == 404", 500));
        assert!(code("400 <= response.code", 400));
        assert!(!code("400 < response.code", 400));
        assert!(code("response.code != 200 && !(response.code < 300)", 301));
        assert!(code("response.code > 499 && response.code <= 599", 599));
    }

    #[test]
    fn constants() {
        assert_eq!(Filter::parse("true").unwrap().constant(), Some(true));
        assert_eq!(Filter::parse(" false ").unwrap().constant(), Some(false));
        assert_eq!(Filter::parse("1 == 1").unwrap().constant(), Some(true));
        assert!(code("!false", 0));
        assert!(!code("(true && false)", 0));
    }

    #[test]
    fn request_headers() {
        let f = Filter::parse(
            "request.headers['X-Debug'] == 'on' || response.code >= 500 && request.headers[\"x-debug\"] != \"off\"",
        )
        .unwrap();
        assert_eq!(f.headers(), ["x-debug"]);
        let with = |v: Option<&str>, c| {
            f.matches(&Attributes {
                response_code: c,
                headers: &[v],
            })
        };
        assert!(with(Some("on"), 200));
        assert!(!with(Some("off"), 500));
        assert!(with(None, 500));
        assert!(!with(None, 200));
    }

    #[test]
    fn errors_are_typed_with_their_position() {
        let err = |s: &str| Filter::parse(s).unwrap_err();
        assert_eq!(err(""), FilterError::Empty);
        assert_eq!(
            err("response.code >="),
            FilterError::UnexpectedEnd {
                at: 16,
                expected: "response.code, request.headers['NAME'], an integer or a string"
            }
        );
        assert!(matches!(
            err("response.status >= 400"),
            FilterError::UnknownAttribute { at: 0, ref name } if name == "response.status"
        ));
        assert!(matches!(
            err("response.code == '503'"),
            FilterError::TypeMismatch {
                left: "int",
                right: "string",
                ..
            }
        ));
        assert!(matches!(
            err("request.headers['a'] > 'b'"),
            FilterError::StringOrder { .. }
        ));
        assert!(matches!(
            err("response.code >= 400 ||"),
            FilterError::UnexpectedEnd { .. }
        ));
        assert!(matches!(err("(true"), FilterError::UnexpectedEnd { .. }));
        assert!(matches!(
            err("true true"),
            FilterError::Unexpected { at: 5, .. }
        ));
        assert!(matches!(
            err("'abc"),
            FilterError::UnterminatedString { at: 0 }
        ));
        assert!(matches!(
            err("response.code == 99999999999999999999"),
            FilterError::BadInteger { .. }
        ));
        assert!(matches!(
            err("response.code = 1"),
            FilterError::Unexpected { .. }
        ));
        assert_eq!(err(&"!".repeat(100)), FilterError::TooDeep);
        assert_eq!(err(&"(".repeat(100)), FilterError::TooDeep);
        assert_eq!(err(&" ".repeat(5000)), FilterError::TooLong);
        // CEL that Istio parses but this mesh cannot evaluate is refused, not ignored.
        assert!(
            err("response.code in codes")
                .to_string()
                .starts_with("at 14: unexpected \"in\"")
        );
    }
}
