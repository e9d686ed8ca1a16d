//! Formulas written by users: parsed once into a tape, evaluated with reverse-mode automatic
//! differentiation (exact gradients, no finite differences).
//!
//! Grammar: `+ - * / ^` (`^` binds tightest and is right-associative; `-x^2` is `-(x^2)`),
//! parentheses, numbers (`1e-3`), names of variables and parameters, and the functions
//! `exp`, `log` (natural), `ln`, `log2`, `log10`, `sqrt`, `pow(a, b)`.

use crate::error::FitError;

/// One operation of the tape; children always come earlier in the tape.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Node {
    Const(f64),
    Var(usize),
    Param(usize),
    Add(usize, usize),
    Sub(usize, usize),
    Mul(usize, usize),
    Div(usize, usize),
    Pow(usize, usize),
    Neg(usize),
    Exp(usize),
    Log(usize),
    Sqrt(usize),
}

/// A parsed formula over named variables (data columns) and parameters (fitted).
#[derive(Debug, Clone)]
pub struct Formula {
    source: String,
    nodes: Vec<Node>,
    n_params: usize,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Num(f64),
    Name(String),
    Op(char),
}

fn tokenize(src: &str) -> Result<Vec<(Token, usize)>, String> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_digit() || (c == '.' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())) {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            if i < chars.len() && (chars[i] == 'e' || chars[i] == 'E') {
                let mut j = i + 1;
                if j < chars.len() && (chars[j] == '+' || chars[j] == '-') {
                    j += 1;
                }
                if j < chars.len() && chars[j].is_ascii_digit() {
                    i = j;
                    while i < chars.len() && chars[i].is_ascii_digit() {
                        i += 1;
                    }
                }
            }
            let text: String = chars[start..i].iter().collect();
            let v = text.parse::<f64>().map_err(|_| format!("bad number `{text}` at column {}", start + 1))?;
            out.push((Token::Num(v), start));
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push((Token::Name(chars[start..i].iter().collect()), start));
        } else if "+-*/^(),".contains(c) {
            out.push((Token::Op(c), i));
            i += 1;
        } else {
            return Err(format!("unexpected character `{c}` at column {}", i + 1));
        }
    }
    Ok(out)
}

struct Parser<'a> {
    tokens: Vec<(Token, usize)>,
    pos: usize,
    nodes: Vec<Node>,
    vars: &'a [String],
    params: &'a [String],
    src_len: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos).map(|t| &t.0)
    }
    fn column(&self) -> usize {
        self.tokens.get(self.pos).map_or(self.src_len + 1, |t| t.1 + 1)
    }
    fn push(&mut self, n: Node) -> usize {
        // Fold constants so that e.g. `1e9` scalings cost nothing per evaluation.
        let folded = match n {
            Node::Add(a, b) | Node::Sub(a, b) | Node::Mul(a, b) | Node::Div(a, b) | Node::Pow(a, b) => {
                match (self.nodes[a], self.nodes[b]) {
                    (Node::Const(x), Node::Const(y)) => Some(match n {
                        Node::Add(..) => x + y,
                        Node::Sub(..) => x - y,
                        Node::Mul(..) => x * y,
                        Node::Div(..) => x / y,
                        _ => x.powf(y),
                    }),
                    _ => None,
                }
            }
            Node::Neg(a) | Node::Exp(a) | Node::Log(a) | Node::Sqrt(a) => match self.nodes[a] {
                Node::Const(x) => Some(match n {
                    Node::Neg(_) => -x,
                    Node::Exp(_) => x.exp(),
                    Node::Log(_) => x.ln(),
                    _ => x.sqrt(),
                }),
                _ => None,
            },
            _ => None,
        };
        self.nodes.push(folded.map_or(n, Node::Const));
        self.nodes.len() - 1
    }
    fn expect(&mut self, c: char) -> Result<(), String> {
        match self.peek() {
            Some(Token::Op(o)) if *o == c => {
                self.pos += 1;
                Ok(())
            }
            _ => Err(format!("expected `{c}` at column {}", self.column())),
        }
    }
    fn expr(&mut self) -> Result<usize, String> {
        let mut lhs = self.term()?;
        while let Some(Token::Op(c @ ('+' | '-'))) = self.peek().cloned() {
            self.pos += 1;
            let rhs = self.term()?;
            lhs = self.push(if c == '+' { Node::Add(lhs, rhs) } else { Node::Sub(lhs, rhs) });
        }
        Ok(lhs)
    }
    fn term(&mut self) -> Result<usize, String> {
        let mut lhs = self.unary()?;
        while let Some(Token::Op(c @ ('*' | '/'))) = self.peek().cloned() {
            self.pos += 1;
            let rhs = self.unary()?;
            lhs = self.push(if c == '*' { Node::Mul(lhs, rhs) } else { Node::Div(lhs, rhs) });
        }
        Ok(lhs)
    }
    fn unary(&mut self) -> Result<usize, String> {
        match self.peek() {
            Some(Token::Op('-')) => {
                self.pos += 1;
                let a = self.unary()?;
                Ok(self.push(Node::Neg(a)))
            }
            Some(Token::Op('+')) => {
                self.pos += 1;
                self.unary()
            }
            _ => self.power(),
        }
    }
    fn power(&mut self) -> Result<usize, String> {
        let base = self.atom()?;
        if let Some(Token::Op('^')) = self.peek() {
            self.pos += 1;
            let exponent = self.unary()?; // right-associative, allows 2^-x
            return Ok(self.push(Node::Pow(base, exponent)));
        }
        Ok(base)
    }
    fn atom(&mut self) -> Result<usize, String> {
        let col = self.column();
        match self.tokens.get(self.pos).map(|t| t.0.clone()) {
            Some(Token::Num(v)) => {
                self.pos += 1;
                Ok(self.push(Node::Const(v)))
            }
            Some(Token::Op('(')) => {
                self.pos += 1;
                let e = self.expr()?;
                self.expect(')')?;
                Ok(e)
            }
            Some(Token::Name(name)) => {
                self.pos += 1;
                if let Some(Token::Op('(')) = self.peek() {
                    self.pos += 1;
                    let a = self.expr()?;
                    if name == "pow" {
                        self.expect(',')?;
                        let b = self.expr()?;
                        self.expect(')')?;
                        return Ok(self.push(Node::Pow(a, b)));
                    }
                    self.expect(')')?;
                    return match name.as_str() {
                        "exp" => Ok(self.push(Node::Exp(a))),
                        "log" | "ln" => Ok(self.push(Node::Log(a))),
                        "log2" => {
                            let l = self.push(Node::Log(a));
                            let c = self.push(Node::Const(std::f64::consts::LN_2));
                            Ok(self.push(Node::Div(l, c)))
                        }
                        "log10" => {
                            let l = self.push(Node::Log(a));
                            let c = self.push(Node::Const(std::f64::consts::LN_10));
                            Ok(self.push(Node::Div(l, c)))
                        }
                        "sqrt" => Ok(self.push(Node::Sqrt(a))),
                        _ => Err(format!(
                            "unknown function `{name}` at column {col}; the functions are exp, log, ln, log2, log10, sqrt, pow"
                        )),
                    };
                }
                if let Some(j) = self.params.iter().position(|p| *p == name) {
                    Ok(self.push(Node::Param(j)))
                } else if let Some(j) = self.vars.iter().position(|v| *v == name) {
                    Ok(self.push(Node::Var(j)))
                } else {
                    Err(format!(
                        "unknown name `{name}` at column {col}; variables are [{}], parameters are [{}]",
                        self.vars.join(", "),
                        self.params.join(", ")
                    ))
                }
            }
            Some(Token::Op(c)) => Err(format!("unexpected `{c}` at column {col}")),
            None => Err("the formula ends too early".to_string()),
        }
    }
}

/// Reusable buffers for [`Formula::eval_grad`] (one per thread).
#[derive(Debug, Default, Clone)]
pub struct Scratch {
    values: Vec<f64>,
    adjoints: Vec<f64>,
}

impl Formula {
    /// Parses `source` with the given variable and parameter names. Every parameter must appear.
    pub fn parse(source: &str, vars: &[String], params: &[String]) -> Result<Formula, FitError> {
        let err = |message: String| FitError::Formula { formula: source.to_string(), message };
        for p in params {
            if vars.contains(p) {
                return Err(err(format!("`{p}` is both a variable and a parameter; rename one")));
            }
        }
        let tokens = tokenize(source).map_err(err)?;
        if tokens.is_empty() {
            return Err(err("the formula is empty".into()));
        }
        let mut parser = Parser { tokens, pos: 0, nodes: Vec::new(), vars, params, src_len: source.chars().count() };
        parser.expr().map_err(err)?;
        if parser.pos != parser.tokens.len() {
            return Err(err(format!("unexpected text at column {}", parser.column())));
        }
        let nodes = parser.nodes;
        for (j, p) in params.iter().enumerate() {
            if !nodes.contains(&Node::Param(j)) {
                return Err(err(format!("parameter `{p}` does not appear in the formula; remove it or use it")));
            }
        }
        Ok(Formula { source: source.to_string(), nodes, n_params: params.len() })
    }

    /// The formula as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Value at `params` and `vars`.
    pub fn eval(&self, params: &[f64], vars: &[f64], scratch: &mut Scratch) -> f64 {
        self.forward(params, vars, scratch)
    }

    fn forward(&self, params: &[f64], vars: &[f64], scratch: &mut Scratch) -> f64 {
        let v = &mut scratch.values;
        v.clear();
        for n in &self.nodes {
            let x = match *n {
                Node::Const(c) => c,
                Node::Var(i) => vars[i],
                Node::Param(j) => params[j],
                Node::Add(a, b) => v[a] + v[b],
                Node::Sub(a, b) => v[a] - v[b],
                Node::Mul(a, b) => v[a] * v[b],
                Node::Div(a, b) => v[a] / v[b],
                Node::Pow(a, b) => v[a].powf(v[b]),
                Node::Neg(a) => -v[a],
                Node::Exp(a) => v[a].exp(),
                Node::Log(a) => v[a].ln(),
                Node::Sqrt(a) => v[a].sqrt(),
            };
            v.push(x);
        }
        *v.last().expect("non-empty tape")
    }

    /// Value and gradient with respect to the parameters (written into `grad`, overwritten).
    pub fn eval_grad(&self, params: &[f64], vars: &[f64], scratch: &mut Scratch, grad: &mut [f64]) -> f64 {
        let value = self.forward(params, vars, scratch);
        let v = &scratch.values;
        let adj = &mut scratch.adjoints;
        adj.clear();
        adj.resize(self.nodes.len(), 0.0);
        *adj.last_mut().expect("non-empty tape") = 1.0;
        grad[..self.n_params].fill(0.0);
        for k in (0..self.nodes.len()).rev() {
            let g = adj[k];
            if g == 0.0 {
                continue;
            }
            match self.nodes[k] {
                Node::Const(_) | Node::Var(_) => {}
                Node::Param(j) => grad[j] += g,
                Node::Add(a, b) => {
                    adj[a] += g;
                    adj[b] += g;
                }
                Node::Sub(a, b) => {
                    adj[a] += g;
                    adj[b] -= g;
                }
                Node::Mul(a, b) => {
                    adj[a] += g * v[b];
                    adj[b] += g * v[a];
                }
                Node::Div(a, b) => {
                    adj[a] += g / v[b];
                    adj[b] -= g * v[k] / v[b];
                }
                Node::Pow(a, b) => {
                    let (base, e) = (v[a], v[b]);
                    // d/da a^e = e a^(e-1); written as e * a^e / a when a != 0.
                    adj[a] += g * if base != 0.0 { e * v[k] / base } else { e * base.powf(e - 1.0) };
                    // d/de a^e = a^e ln a; 0 where a^e is 0 (e.g. a mixture ratio of 0).
                    if v[k] != 0.0 {
                        adj[b] += g * v[k] * base.ln();
                    }
                }
                Node::Neg(a) => adj[a] -= g,
                Node::Exp(a) => adj[a] += g * v[k],
                Node::Log(a) => adj[a] += g / v[a],
                Node::Sqrt(a) => adj[a] += g * 0.5 / v[k],
            }
        }
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn gradient_matches_hand_derivative() {
        // L = E + A / N^alpha: dL/dE = 1, dL/dA = N^-alpha, dL/dalpha = -A N^-alpha ln N.
        let f = Formula::parse("E + A / N^alpha", &names(&["N"]), &names(&["E", "A", "alpha"])).unwrap();
        let mut s = Scratch::default();
        let mut g = [0.0; 3];
        let (e, a, al, n) = (1.7, 400.0, 0.34, 1e8f64);
        let val = f.eval_grad(&[e, a, al], &[n], &mut s, &mut g);
        let p = n.powf(-al);
        assert!((val - (e + a * p)).abs() < 1e-12);
        assert!((g[0] - 1.0).abs() < 1e-12);
        assert!((g[1] - p).abs() < 1e-15);
        assert!((g[2] + a * p * n.ln()).abs() < 1e-9 * (a * p * n.ln()).abs());
    }

    #[test]
    fn functions_precedence_and_zero_base_power() {
        let f = Formula::parse(
            "-x^2 + pow(2, 3) + log2(8) + log10(100) + sqrt(k) * exp(0) + ln(1)",
            &names(&["x"]),
            &names(&["k"]),
        )
        .unwrap();
        let mut s = Scratch::default();
        let mut g = [0.0];
        let v = f.eval_grad(&[4.0], &[3.0], &mut s, &mut g);
        assert!((v - (-9.0 + 8.0 + 3.0 + 2.0 + 2.0)).abs() < 1e-12);
        assert!((g[0] - 0.25).abs() < 1e-12);
        // r^eta at r = 0 has value 0 and a zero (not NaN) derivative in eta.
        let f = Formula::parse("B * r^eta", &names(&["r"]), &names(&["B", "eta"])).unwrap();
        let mut g = [0.0; 2];
        let v = f.eval_grad(&[2.0, 0.5], &[0.0], &mut s, &mut g);
        assert_eq!(v, 0.0);
        assert_eq!(g, [0.0, 0.0]);
    }

    #[test]
    fn errors_name_the_problem() {
        let e =
            Formula::parse("E + A / M^alpha", &names(&["N"]), &names(&["E", "A", "alpha"])).unwrap_err().to_string();
        assert!(e.contains("unknown name `M`") && e.contains("variables are [N]"), "{e}");
        let e = Formula::parse("E + (A", &names(&["N"]), &names(&["E", "A"])).unwrap_err().to_string();
        assert!(e.contains("expected `)`"), "{e}");
        let e = Formula::parse("E + A", &names(&["N"]), &names(&["E", "A", "k"])).unwrap_err().to_string();
        assert!(e.contains("`k` does not appear"), "{e}");
        let e = Formula::parse("E # 2", &names(&[]), &names(&["E"])).unwrap_err().to_string();
        assert!(e.contains("unexpected character `#`"), "{e}");
        let e = Formula::parse("foo(E)", &names(&[]), &names(&["E"])).unwrap_err().to_string();
        assert!(e.contains("unknown function `foo`"), "{e}");
    }
}
