//! Option tables (`lock.acquire(name, {ttl = 5000})`, `llm.chat{...}`,
//! `http.get(url, {headers = ...})`) decoded into structs, as WezTerm decodes
//! its option tables with `from_dynamic`: a struct per table implements
//! [`FromOptions`] by reading its fields from [`Options`], which first refuses
//! any name the struct does not declare (a typo such as `temperture` is an
//! error, not a silently ignored option). Every error names the function and
//! the option: `lock.acquire: option 'ttl' must be a number of milliseconds
//! > 0, got long`.

use std::fmt;
use std::time::Duration;

use mlua::{LuaString, Table, Value};

use super::millis;

/// A bad option table: `func: message`, raised where the call was made.
#[derive(Debug)]
pub(crate) struct OptionError {
    func: String,
    message: String,
}

impl fmt::Display for OptionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.func, self.message)
    }
}

impl std::error::Error for OptionError {}

impl From<OptionError> for mlua::Error {
    fn from(e: OptionError) -> Self {
        mlua::Error::external(e)
    }
}

/// A struct an option table decodes into.
pub(crate) trait FromOptions: Sized {
    /// Every option the table may hold, in the order errors list them.
    const NAMES: &'static [&'static str];

    /// Reads the struct's fields (the names are checked already).
    fn from_options(o: &Options) -> Result<Self, OptionError>;
}

/// Decodes the option table `value` of a call to `func`: nil (no table)
/// gives every option its default.
pub(crate) fn decode<T: FromOptions>(func: &str, value: Option<Table>) -> Result<T, OptionError> {
    let o = Options { func, table: value };
    o.refuse_unknown(T::NAMES)?;
    T::from_options(&o)
}

/// [`decode`] of an argument that must be a table (nil included).
pub(crate) fn decode_required<T: FromOptions>(func: &str, value: Value) -> Result<T, OptionError> {
    match value {
        Value::Table(t) => decode(func, Some(t)),
        other => Err(OptionError {
            func: func.to_string(),
            message: format!("expected a table of options, got {}", other.type_name()),
        }),
    }
}

/// The option table of one call, read field by field.
pub(crate) struct Options<'a> {
    func: &'a str,
    table: Option<Table>,
}

impl Options<'_> {
    /// An error of this call: `func: message`.
    pub fn error(&self, message: impl fmt::Display) -> OptionError {
        OptionError {
            func: self.func.to_string(),
            message: message.to_string(),
        }
    }

    /// Refuses a key that is not one of `names`.
    fn refuse_unknown(&self, names: &[&str]) -> Result<(), OptionError> {
        let Some(t) = &self.table else {
            return Ok(());
        };
        for pair in t.pairs::<Value, Value>() {
            let (key, _) = pair.map_err(|e| self.error(e))?;
            let known = match &key {
                Value::String(s) => names.iter().any(|n| s.as_bytes() == n.as_bytes()),
                _ => false,
            };
            if !known {
                let shown = key
                    .to_string()
                    .map_or_else(|_| key.type_name().into(), |k| format!("'{k}'"));
                return Err(self.error(format!(
                    "unknown option {shown} (options: {})",
                    names.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// The raw value of option `name` (nil when absent).
    pub fn value(&self, name: &str) -> Result<Value, OptionError> {
        match &self.table {
            None => Ok(Value::Nil),
            Some(t) => t.get(name).map_err(|e| self.error(format!("{name}: {e}"))),
        }
    }

    /// `expected {kind} '{name}', got {type}`.
    pub fn expected(&self, kind: &str, name: &str, got: &Value) -> OptionError {
        self.error(format!("expected {kind} '{name}', got {}", got.type_name()))
    }

    /// Option `name` as a string.
    pub fn string(&self, name: &str) -> Result<Option<String>, OptionError> {
        Ok(self.bytes(name)?.map(|s| s.to_string_lossy()))
    }

    /// Option `name` as a Lua string, bytes as they are.
    pub fn bytes(&self, name: &str) -> Result<Option<LuaString>, OptionError> {
        match self.value(name)? {
            Value::Nil => Ok(None),
            Value::String(s) => Ok(Some(s)),
            other => Err(self.expected("string", name, &other)),
        }
    }

    /// Option `name` as a boolean.
    pub fn boolean(&self, name: &str) -> Result<Option<bool>, OptionError> {
        match self.value(name)? {
            Value::Nil => Ok(None),
            Value::Boolean(b) => Ok(Some(b)),
            other => Err(self.expected("boolean", name, &other)),
        }
    }

    /// Option `name` as a table.
    pub fn table(&self, name: &str) -> Result<Option<Table>, OptionError> {
        match self.value(name)? {
            Value::Nil => Ok(None),
            Value::Table(t) => Ok(Some(t)),
            other => Err(self.expected("table", name, &other)),
        }
    }

    /// Option `name` as a finite number >= 0.
    pub fn number(&self, name: &str) -> Result<Option<f64>, OptionError> {
        let n = match self.value(name)? {
            Value::Nil => return Ok(None),
            Value::Integer(i) => i as f64,
            Value::Number(n) => n,
            other => return Err(self.expected("number", name, &other)),
        };
        if !n.is_finite() || n < 0.0 {
            return Err(self.error(format!("'{name}' must be a finite number >= 0, got {n}")));
        }
        Ok(Some(n))
    }

    /// Option `name` as a whole number of at least 1.
    pub fn whole(&self, name: &str) -> Result<Option<u64>, OptionError> {
        let Some(n) = self.number(name)? else {
            return Ok(None);
        };
        if n < 1.0 || n.fract() != 0.0 {
            return Err(self.error(format!("'{name}' must be a whole number >= 1, got {n}")));
        }
        Ok(Some(n as u64))
    }

    /// Option `name` as milliseconds (`math.huge`: as long as a script may
    /// ask for).
    pub fn ms(&self, name: &str) -> Result<Option<Duration>, OptionError> {
        self.ms_from(name, false)
    }

    /// [`Options::ms`] of a length that 0 would defeat (a lock's TTL: a
    /// lock that expires as it is granted is held by nobody).
    pub fn positive_ms(&self, name: &str) -> Result<Option<Duration>, OptionError> {
        self.ms_from(name, true)
    }

    fn ms_from(&self, name: &str, positive: bool) -> Result<Option<Duration>, OptionError> {
        let n = match self.value(name)? {
            Value::Nil => return Ok(None),
            Value::Integer(n) => Some(n as f64),
            Value::Number(n) => Some(n),
            _ => None,
        };
        // NaN fails both comparisons.
        match n {
            Some(n) if n > 0.0 || (!positive && n >= 0.0) => Ok(Some(millis(n))),
            _ => {
                let other = self.value(name)?;
                Err(self.error(format!(
                    "option '{name}' must be a number of milliseconds {} 0, got {}",
                    if positive { ">" } else { ">=" },
                    other
                        .to_string()
                        .unwrap_or_else(|_| other.type_name().into())
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::FromOptions;
    use crate::lua_api::meta;

    /// The names each option struct accepts are the fields its annotated
    /// class declares: what editors complete is what the host takes.
    #[test]
    fn every_option_struct_takes_the_fields_its_annotation_declares() {
        let structs: [(&str, &[&str]); 6] = [
            (
                "orrery.LockOptions",
                crate::lua_api::lock::AcquireOptions::NAMES,
            ),
            (
                "orrery.ExecOptions",
                crate::lua_api::exec::RunOptions::NAMES,
            ),
            (
                "orrery.HttpOptions",
                crate::lua_api::http::RequestOptions::NAMES,
            ),
            (
                "orrery.JsonEncodeOptions",
                crate::lua_api::json::EncodeOptions::NAMES,
            ),
            ("llm.ChatOptions", crate::llm::ChatRequest::NAMES),
            ("orrery.SpawnCondition", crate::task::SpawnCondition::NAMES),
        ];
        for (class, names) in structs {
            let mut declared = meta::class_fields(class);
            let mut taken: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            declared.sort();
            taken.sort();
            assert_eq!(declared, taken, "{class}");
        }
    }
}
