//! Property tests: task parsing never panics and always names the origin;
//! values crossing the Lua/JSON boundary survive the round trip, and arbitrary
//! Lua values never panic the host; the interruptible pattern matcher agrees
//! with Lua's own.

use std::sync::Arc;

use mlua::{Function, Lua, LuaSerdeExt};
use orrery::agent::sandbox;
use orrery::config::Config;
use orrery::coordination::Coordination;
use orrery::llm::TaskLlm;
use orrery::lua_api::AgentContext;
use orrery::scripts::ScriptRegistry;
use orrery::store::{BlackboardStore, MemoryStore};
use orrery::task::Task;
use proptest::prelude::*;
use serde_json::{Map, Value, json};

use crate::common::{Scratch, task};
use crate::util::config;

const VALID: &str =
    "id = \"t\"\ntype = \"test\"\ndescription = \"d\"\ntimeout = 1000\n[inputs]\na = [1, 2]\n";

/// The valid task with one byte range replaced by `insert`.
fn mutate(text: &str, at: usize, len: usize, insert: &str) -> String {
    let bytes = text.as_bytes();
    let at = at % (bytes.len() + 1);
    let end = (at + len).min(bytes.len());
    let mut out = bytes[..at].to_vec();
    out.extend_from_slice(insert.as_bytes());
    out.extend_from_slice(&bytes[end..]);
    String::from_utf8_lossy(&out).into_owned()
}

proptest! {
    #[test]
    fn task_parsing_never_panics_and_names_the_origin(
        text in ".{0,200}",
        at in 0usize..200, len in 0usize..8, insert in "[\\[\\]{}=\",:a-z0-9 \\n-]{0,6}",
    ) {
        for text in [text, mutate(VALID, at, len, insert.as_str())] {
            for parsed in [Task::from_toml(&text, "file.toml"), Task::from_json(&text, "file.json")] {
                match parsed.and_then(|t| t.validate("file.x").map(|_| t)) {
                    Ok(_) => {}
                    Err(e) => {
                        prop_assert_eq!(e.exit_code(), 2);
                        prop_assert!(e.to_string().starts_with("file."), "{}", e);
                    }
                }
            }
        }
    }
}

/// Found by the property above: a parser's error position inside a
/// multi-byte character must not panic the host.
#[test]
fn an_error_inside_a_multibyte_character_names_the_file() {
    for text in [
        "\"R\u{5576}\u{499ee}",
        "\"\u{499ee}\u{499ee}",
        "id = \"\u{499ee}",
    ] {
        for parsed in [
            Task::from_json(text, "file.json"),
            Task::from_toml(text, "file.toml"),
        ] {
            let e = parsed.expect_err("not a task");
            assert_eq!(e.exit_code(), 2);
            assert!(e.to_string().starts_with("file."), "{e}");
        }
    }
}

/// A VM set up as an agent's, on its own embedded store.
struct Vm {
    lua: sandbox::Vm,
    store: Arc<MemoryStore>,
    _scratch: Scratch,
}

fn vm() -> Vm {
    let scratch = Scratch::new(&[("probe.lua", "return {}")]);
    let cfg = Config {
        scripts: scratch.scripts(),
        max_value_bytes: 1 << 20,
        ..config()
    };
    let registry = Arc::new(ScriptRegistry::load(&cfg.scripts, &cfg.stdlib).unwrap());
    let store = Arc::new(MemoryStore::new());
    let coord = Coordination::new(
        Arc::new(task("props", 1000)),
        Arc::new(cfg.clone()),
        store.clone(),
    );
    let ctx = AgentContext::new(
        "probe-1",
        "probe",
        coord,
        registry.clone(),
        TaskLlm::offline(),
    );
    let (lua, _budget) = sandbox::agent_vm(&ctx).unwrap();
    Vm {
        lua,
        store,
        _scratch: scratch,
    }
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        (-1e15f64..1e15).prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// What a value becomes after a trip through Lua: empty objects turn into
/// empty arrays (an empty Lua table is an empty list), documented behaviour.
fn through_lua(v: &Value) -> Value {
    match v {
        Value::Object(m) if m.is_empty() => json!([]),
        Value::Object(m) => {
            Value::Object(m.iter().map(|(k, v)| (k.clone(), through_lua(v))).collect())
        }
        Value::Array(a) => Value::Array(a.iter().map(through_lua).collect()),
        other => other.clone(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn json_values_survive_the_blackboard_round_trip(value in json_value()) {
        let vm = vm();
        let bb: mlua::Table = vm.lua.globals().get("blackboard").unwrap();
        let lua_value = vm.lua.to_value(&value).unwrap();
        bb.get::<Function>("set").unwrap().call::<()>(("k", lua_value)).unwrap();
        let expected = through_lua(&value);
        let stored = futures::executor::block_on(vm.store.bb_get("props", "k")).unwrap();
        prop_assert_eq!(stored.as_ref(), Some(&expected));
        let back: mlua::Value = bb.get::<Function>("get").unwrap().call("k").unwrap();
        let back: Value = vm.lua.from_value(back).unwrap();
        prop_assert_eq!(back, expected);
    }
}

/// Lua constructors of arbitrary values: cycles, functions, NaN, huge and
/// negative-zero numbers, non-string keys, mixed tables, userdata.
fn lua_value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("nil".to_string()),
        Just("true".to_string()),
        Just("0/0".to_string()),
        Just("1/0".to_string()),
        Just("-0.0".to_string()),
        Just("math.maxinteger".to_string()),
        Just("math.mininteger".to_string()),
        Just("print".to_string()),
        Just("json.null".to_string()),
        Just("coroutine.create(print)".to_string()),
        Just("'\\0\\255\\n'".to_string()),
        any::<i64>().prop_map(|n| format!("({n})")),
        "[a-z]{0,5}".prop_map(|s| format!("{s:?}")),
    ];
    leaf.prop_recursive(4, 48, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5)
                .prop_map(|v| format!("{{{}}}", v.join(", "))),
            prop::collection::vec((inner.clone(), inner.clone()), 0..4).prop_map(|kv| {
                let fields: Vec<String> = kv
                    .iter()
                    .map(|(k, v)| format!("[({k}) or 1] = {v}"))
                    .collect();
                format!("{{{}}}", fields.join(", "))
            }),
            inner.prop_map(|v| format!("(function() local t = {{ {v} }} t.me = t return t end)()")),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn arbitrary_lua_values_never_panic_the_host(value in lua_value()) {
        let vm = vm();
        // Any outcome but a panic is fine: stored, or refused with an error.
        let code = format!(
            "local built, v = pcall(function() return {value} end)\n\
             if not built then return end -- not a value Lua can build (a NaN key)\n\
             pcall(blackboard.set, 'k', v)\n\
             pcall(bus.send, 'probe', 't', v)\n\
             pcall(json.encode, v)\n\
             pcall(task.output, 'o', v)\n\
             pcall(blackboard.cas, 'k', v, v)"
        );
        vm.lua.load(&code).exec().unwrap();
    }
}

fn pattern() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        "[ab]",
        Just(".".to_string()),
        Just("%a".to_string()),
        Just("%d".to_string()),
        Just("[ab]".to_string()),
        Just("[^a]".to_string()),
        Just("%b()".to_string()),
        Just("%f[%a]".to_string()),
        Just("(".to_string()),
        Just(")".to_string()),
        Just("()".to_string()),
        Just("%1".to_string()),
        Just("$".to_string()),
        Just("^".to_string()),
        Just("%".to_string()),
        Just("[".to_string()),
    ];
    let quantified = (
        token,
        prop_oneof![Just(""), Just("*"), Just("+"), Just("-"), Just("?")],
    )
        .prop_map(|(t, q)| format!("{t}{q}"));
    prop::collection::vec(quantified, 0..6).prop_map(|v| v.concat())
}

/// Serializes the results of `f(...)` (or its failure) for comparison.
const PROBE: &str = r#"
local name, s, p, init = ...
local r = table.pack(pcall(string[name], s, p, init))
if not r[1] then return "error" end
local out = {}
for i = 2, r.n do out[#out + 1] = type(r[i]) .. ":" .. tostring(r[i]) end
return table.concat(out, "|")
"#;

const GSUB_PROBE: &str = r#"
local s, p = ...
local ok, r, n = pcall(string.gsub, s, p, "<%0>")
if not ok then return "error" end
return r .. "/" .. n
"#;

const GMATCH_PROBE: &str = r#"
local s, p = ...
local out = {}
local ok = pcall(function()
  for a, b in string.gmatch(s, p) do
    out[#out + 1] = tostring(a) .. "," .. tostring(b)
    if #out > 50 then break end
  end
end)
if not ok then return "error" end
return table.concat(out, "|")
"#;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_interruptible_matcher_agrees_with_lua(
        s in "[ab() %d1]{0,12}", p in pattern(), init in -14i64..14,
    ) {
        let stock = Lua::new();
        let ours = vm();
        for (lua, label) in [(&stock, "stock"), (&ours.lua, "sandbox")] {
            let _ = label;
            lua.globals().set("probe_find", lua.load(PROBE).into_function().unwrap()).unwrap();
            lua.globals().set("probe_gsub", lua.load(GSUB_PROBE).into_function().unwrap()).unwrap();
            lua.globals().set("probe_gmatch", lua.load(GMATCH_PROBE).into_function().unwrap()).unwrap();
        }
        for name in ["find", "match"] {
            let run = |lua: &Lua| -> String {
                lua.globals().get::<Function>("probe_find").unwrap().call((name, s.as_str(), p.as_str(), init)).unwrap()
            };
            prop_assert_eq!(run(&ours.lua), run(&stock), "string.{}({:?}, {:?}, {})", name, s, p, init);
        }
        for probe in ["probe_gsub", "probe_gmatch"] {
            let run = |lua: &Lua| -> String {
                lua.globals().get::<Function>(probe).unwrap().call((s.as_str(), p.as_str())).unwrap()
            };
            prop_assert_eq!(run(&ours.lua), run(&stock), "{}({:?}, {:?})", probe, s, p);
        }
    }
}
