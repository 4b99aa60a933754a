//! A small CEL evaluator for `x-kubernetes-validations` rules.
//!
//! The subset: `self`, `oldSelf`, field selection (`self.a.b`), literals (int, double,
//! string, bool, null, lists), `!`, unary `-`, integer `+ -` (`+` also on strings and lists),
//! `== != < <= > >=`, `in` (lists and map keys), `&& ||` (with CEL's error absorption), `?:`,
//! `has(self.x)`, `size(x)` / `x.size()`, `startsWith`, `endsWith`, `contains`, `matches`,
//! and the macros `all` and `exists`. Not supported: indexing, `* / %`, other functions and
//! macros, map literals, type conversions. Anything else is rejected by [`parse`], which
//! runs when a CRD is registered, so an unsupported rule fails the CRD instead of passing
//! every object. Values are JSON values; there is no static type checking, so a type error
//! shows up when a rule is evaluated.

use serde_json::{Value, json};

/// A parsed rule.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expr {
    Lit(Value),
    Var(String),
    List(Vec<Expr>),
    Field(Box<Expr>, String),
    Has(Box<Expr>, String),
    Unary(&'static str, Box<Expr>),
    Binary(&'static str, Box<Expr>, Box<Expr>),
    Cond(Box<Expr>, Box<Expr>, Box<Expr>),
    /// `size`, `startsWith`, `endsWith`, `contains`, `matches` with the receiver first.
    Call(&'static str, Vec<Expr>),
    /// `target.all(var, body)` and friends.
    Macro(&'static str, Box<Expr>, String, Box<Expr>),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Int(i64),
    Double(f64),
    Str(String),
    Op(&'static str),
}

const OPS: [&str; 19] = [
    "==", "!=", "<=", ">=", "&&", "||", "<", ">", "!", "+", "-", "?", ":", ".", ",", "(", ")", "[",
    "]",
];

fn lex(src: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = src.chars().collect();
    let (mut toks, mut i) = (Vec::new(), 0);
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            toks.push(Tok::Ident(chars[start..i].iter().collect()));
        } else if c.is_ascii_digit() {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            let text: String = chars[start..i].iter().collect();
            toks.push(match text.parse::<i64>() {
                Ok(n) => Tok::Int(n),
                Err(_) => Tok::Double(text.parse().map_err(|_| format!("bad number {text:?}"))?),
            });
        } else if c == '"' || c == '\'' {
            let mut s = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err("unterminated string".into()),
                    Some(&q) if q == c => break,
                    Some('\\') => {
                        i += 1;
                        let escaped = chars.get(i).ok_or("unterminated string")?;
                        s.push(match escaped {
                            'n' => '\n',
                            't' => '\t',
                            other => *other,
                        });
                    }
                    Some(&other) => s.push(other),
                }
                i += 1;
            }
            i += 1;
            toks.push(Tok::Str(s));
        } else {
            let rest: String = chars[i..chars.len().min(i + 2)].iter().collect();
            let op = OPS
                .iter()
                .find(|op| rest.starts_with(**op))
                .ok_or_else(|| format!("unexpected {c:?}"))?;
            i += op.len();
            toks.push(Tok::Op(op));
        }
    }
    Ok(toks)
}

/// Parses a rule, refusing anything outside the supported subset.
pub(crate) fn parse(src: &str) -> Result<Expr, String> {
    let mut p = Parser {
        toks: lex(src)?,
        pos: 0,
        scope: vec!["self".into(), "oldSelf".into()],
    };
    let expr = p.expr()?;
    match p.toks.get(p.pos) {
        None => Ok(expr),
        Some(t) => Err(format!("unexpected {t:?} after the expression")),
    }
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
    /// Variables in scope: `self`, `oldSelf` and enclosing macro variables.
    scope: Vec<String>,
}

impl Parser {
    fn eat(&mut self, op: &str) -> bool {
        let hit = matches!(self.toks.get(self.pos), Some(Tok::Op(o)) if *o == op);
        self.pos += usize::from(hit);
        hit
    }

    fn expect(&mut self, op: &str) -> Result<(), String> {
        if self.eat(op) {
            Ok(())
        } else {
            Err(format!("expected {op:?} at token {}", self.pos))
        }
    }

    fn ident(&mut self) -> Result<String, String> {
        match self.toks.get(self.pos) {
            Some(Tok::Ident(name)) => {
                self.pos += 1;
                Ok(name.clone())
            }
            t => Err(format!("expected an identifier, found {t:?}")),
        }
    }

    fn expr(&mut self) -> Result<Expr, String> {
        let cond = self.binary(0)?;
        if !self.eat("?") {
            return Ok(cond);
        }
        let then = self.expr()?;
        self.expect(":")?;
        Ok(Expr::Cond(
            Box::new(cond),
            Box::new(then),
            Box::new(self.expr()?),
        ))
    }

    /// Precedence climbing over CEL's binary operator levels, loosest first.
    fn binary(&mut self, level: usize) -> Result<Expr, String> {
        const LEVELS: [&[&str]; 4] = [
            &["||"],
            &["&&"],
            &["==", "!=", "<", "<=", ">", ">=", "in"],
            &["+", "-"],
        ];
        let Some(ops) = LEVELS.get(level) else {
            return self.unary();
        };
        let mut left = self.binary(level + 1)?;
        loop {
            let op = match self.toks.get(self.pos) {
                Some(Tok::Op(o)) if ops.contains(o) => *o,
                Some(Tok::Ident(w)) if w == "in" && level == 2 => "in",
                _ => return Ok(left),
            };
            self.pos += 1;
            left = Expr::Binary(op, Box::new(left), Box::new(self.binary(level + 1)?));
        }
    }

    fn unary(&mut self) -> Result<Expr, String> {
        for op in ["!", "-"] {
            if self.eat(op) {
                return Ok(Expr::Unary(op, Box::new(self.unary()?)));
            }
        }
        let mut e = self.primary()?;
        loop {
            if self.eat(".") {
                let name = self.ident()?;
                if !self.eat("(") {
                    e = Expr::Field(Box::new(e), name);
                    continue;
                }
                e = self.method(e, &name)?;
            } else {
                return Ok(e);
            }
        }
    }

    fn method(&mut self, target: Expr, name: &str) -> Result<Expr, String> {
        if let Some(m) = ["all", "exists"].into_iter().find(|m| *m == name) {
            let var = self.ident()?;
            self.expect(",")?;
            self.scope.push(var.clone());
            let body = self.expr();
            self.scope.pop();
            self.expect(")")?;
            return Ok(Expr::Macro(m, Box::new(target), var, Box::new(body?)));
        }
        let f = ["size", "startsWith", "endsWith", "contains", "matches"]
            .into_iter()
            .find(|f| *f == name)
            .ok_or_else(|| format!("function {name}() is not in the supported CEL subset"))?;
        let mut args = vec![target];
        args.extend(self.args(")")?);
        if args.len() != if f == "size" { 1 } else { 2 } {
            return Err(format!("wrong number of arguments to {f}()"));
        }
        if let (Some(Expr::Lit(Value::String(re))), "matches") = (args.get(1), f) {
            regex::Regex::new(re)
                .map_err(|e| format!("bad regular expression in matches(): {e}"))?;
        }
        Ok(Expr::Call(f, args))
    }

    fn args(&mut self, close: &str) -> Result<Vec<Expr>, String> {
        let mut args = Vec::new();
        while !self.eat(close) {
            if !args.is_empty() {
                self.expect(",")?;
            }
            args.push(self.expr()?);
        }
        Ok(args)
    }

    fn primary(&mut self) -> Result<Expr, String> {
        let tok = self
            .toks
            .get(self.pos)
            .cloned()
            .ok_or("unexpected end of rule")?;
        self.pos += 1;
        Ok(match tok {
            Tok::Int(n) => Expr::Lit(json!(n)),
            Tok::Double(d) => Expr::Lit(json!(d)),
            Tok::Str(s) => Expr::Lit(json!(s)),
            Tok::Op("(") => {
                let e = self.expr()?;
                self.expect(")")?;
                e
            }
            Tok::Op("[") => Expr::List(self.args("]")?),
            Tok::Ident(word) => match word.as_str() {
                "true" | "false" => Expr::Lit(json!(word == "true")),
                "null" => Expr::Lit(Value::Null),
                "has" => {
                    self.expect("(")?;
                    let Expr::Field(target, field) = self.unary()? else {
                        return Err("has() takes a field selection like has(self.x)".into());
                    };
                    self.expect(")")?;
                    Expr::Has(target, field)
                }
                "size" if self.eat("(") => {
                    let args = self.args(")")?;
                    if args.len() != 1 {
                        return Err("size() takes one argument".into());
                    }
                    Expr::Call("size", args)
                }
                _ if self.scope.contains(&word) => Expr::Var(word),
                _ => {
                    return Err(format!(
                        "{word:?} is not a variable or function of the supported CEL subset"
                    ));
                }
            },
            t => return Err(format!("unexpected {t:?}")),
        })
    }
}

/// Variable bindings; later entries shadow earlier ones.
pub(crate) type Env = Vec<(String, Value)>;

/// Evaluates a parsed rule to a value.
pub(crate) fn eval(e: &Expr, env: &mut Env) -> Result<Value, String> {
    Ok(match e {
        Expr::Lit(v) => v.clone(),
        Expr::Var(name) => env
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .ok_or(format!("no value for {name}"))?,
        Expr::List(items) => Value::Array(
            items
                .iter()
                .map(|i| eval(i, env))
                .collect::<Result<_, _>>()?,
        ),
        Expr::Field(target, field) => match eval(target, env)? {
            Value::Object(mut m) => m.remove(field).ok_or(format!("no such key: {field}"))?,
            v => return Err(format!("cannot select field {field} of {v}")),
        },
        Expr::Has(target, field) => match eval(target, env)? {
            Value::Object(m) => json!(m.contains_key(field)),
            v => return Err(format!("has() on a non-object {v}")),
        },
        Expr::Unary(op, operand) => match (*op, eval(operand, env)?) {
            ("!", Value::Bool(b)) => json!(!b),
            ("-", Value::Number(n)) => n
                .as_i64()
                .map_or_else(|| json!(-n.as_f64().unwrap_or(0.0)), |i| json!(-i)),
            (op, v) => return Err(format!("no such overload: {op}{v}")),
        },
        Expr::Binary(op @ ("&&" | "||"), l, r) => {
            // CEL's && and || are commutative over errors: `false && error` is false.
            let short = *op == "||";
            let (l, r) = (bool_of(eval(l, env)), bool_of(eval(r, env)));
            match (l, r) {
                (Ok(a), _) if a == short => json!(short),
                (_, Ok(b)) if b == short => json!(short),
                (Ok(_), Ok(_)) => json!(!short),
                (Err(e), _) | (_, Err(e)) => return Err(e),
            }
        }
        Expr::Binary(op, l, r) => binary(op, eval(l, env)?, eval(r, env)?)?,
        Expr::Cond(c, t, f) => {
            if bool_of(eval(c, env))? {
                eval(t, env)?
            } else {
                eval(f, env)?
            }
        }
        Expr::Call(f, args) => {
            let args: Vec<Value> = args
                .iter()
                .map(|a| eval(a, env))
                .collect::<Result<_, _>>()?;
            call(f, &args)?
        }
        Expr::Macro(m, target, var, body) => {
            let items = match eval(target, env)? {
                Value::Array(l) => l,
                Value::Object(o) => o.keys().map(|k| json!(k)).collect(),
                v => return Err(format!("{m}() on {v}")),
            };
            let (n, mut hits) = (items.len(), 0);
            for item in items {
                env.push((var.clone(), item));
                let result = bool_of(eval(body, env));
                env.pop();
                hits += usize::from(result?);
            }
            json!(if *m == "all" { hits == n } else { hits > 0 })
        }
    })
}

fn bool_of(v: Result<Value, String>) -> Result<bool, String> {
    match v? {
        Value::Bool(b) => Ok(b),
        v => Err(format!("expected a bool, got {v}")),
    }
}

/// Equality with numbers compared by value (JSON `1` and `1.0` are equal).
fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| equal(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| equal(v, w)))
        }
        _ => a == b,
    }
}

fn binary(op: &str, l: Value, r: Value) -> Result<Value, String> {
    use std::cmp::Ordering;
    let order = match (&l, &r) {
        (Value::Number(a), Value::Number(b)) => match (a.as_i64(), b.as_i64()) {
            (Some(a), Some(b)) => Some(a.cmp(&b)),
            _ => a
                .as_f64()
                .zip(b.as_f64())
                .and_then(|(a, b)| a.partial_cmp(&b)),
        },
        (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
        (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
        _ => None,
    };
    let no_overload = || format!("no such overload: {l} {op} {r}");
    Ok(match op {
        "==" => json!(equal(&l, &r)),
        "!=" => json!(!equal(&l, &r)),
        "<" | "<=" | ">" | ">=" => {
            let o = order.ok_or_else(no_overload)?;
            json!(match op {
                "<" => o == Ordering::Less,
                "<=" => o != Ordering::Greater,
                ">" => o == Ordering::Greater,
                _ => o != Ordering::Less,
            })
        }
        "in" => match &r {
            Value::Array(items) => json!(items.iter().any(|i| equal(i, &l))),
            Value::Object(m) => json!(l.as_str().is_some_and(|k| m.contains_key(k))),
            _ => return Err(no_overload()),
        },
        _ => match (&l, &r) {
            (Value::String(a), Value::String(b)) if op == "+" => json!(format!("{a}{b}")),
            (Value::Array(a), Value::Array(b)) if op == "+" => {
                json!([a.as_slice(), b.as_slice()].concat())
            }
            (Value::Number(a), Value::Number(b)) => {
                let (a, b) = a.as_i64().zip(b.as_i64()).ok_or_else(no_overload)?;
                let sum = if op == "+" {
                    a.checked_add(b)
                } else {
                    a.checked_sub(b)
                };
                json!(sum.ok_or_else(|| format!("integer overflow: {a} {op} {b}"))?)
            }
            _ => return Err(no_overload()),
        },
    })
}

fn call(f: &str, args: &[Value]) -> Result<Value, String> {
    let s = |i: usize| {
        args.get(i)
            .and_then(Value::as_str)
            .ok_or(format!("{f}() expects strings"))
    };
    Ok(match f {
        "size" => json!(match &args[0] {
            Value::String(s) => s.chars().count(),
            Value::Array(l) => l.len(),
            Value::Object(m) => m.len(),
            v => return Err(format!("size() of {v}")),
        }),
        "startsWith" => json!(s(0)?.starts_with(s(1)?)),
        "endsWith" => json!(s(0)?.ends_with(s(1)?)),
        "contains" => json!(s(0)?.contains(s(1)?)),
        _ => json!(
            regex::Regex::new(s(1)?)
                .map_err(|e| e.to_string())?
                .is_match(s(0)?)
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(rule: &str, this: Value) -> Result<Value, String> {
        eval(&parse(rule)?, &mut vec![("self".into(), this)])
    }

    #[test]
    fn subset_evaluates() {
        let obj = json!({"min": 1, "max": 5, "name": "web-1", "tags": ["a", "b"], "mode": "x"});
        for rule in [
            "self.min <= self.max && self.max - self.min == 4",
            "has(self.name) && !has(self.missing)",
            "size(self.tags) == 2 && self.tags.size() < 3 && 'a' in self.tags",
            "self.name.startsWith('web') && self.name.matches('^[a-z]+-[0-9]$')",
            "self.mode == 'x' ? self.min == 1 : false",
            "self.tags.all(t, size(t) == 1) && self.tags.exists(t, t == 'b')",
            "self.missing == 1 || true",
            "\"b\" in self.tags && 3 - 1 + 1 == 3",
        ] {
            assert_eq!(run(rule, obj.clone()), Ok(json!(true)), "{rule}");
        }
        assert_eq!(run("self.min > self.max", obj.clone()), Ok(json!(false)));
        assert!(run("self.missing == 1", obj).is_err());
    }

    #[test]
    fn outside_the_subset_is_refused() {
        for rule in [
            "self.x.map(y, y)",
            "quantity(self.x)",
            "other.x",
            "self.x ==",
            "{'a': 1}",
            "self.l[0] == 1",
            "2 * 3 == 6",
        ] {
            assert!(parse(rule).is_err(), "{rule}");
        }
    }
}
