//! The shape of a case in `cases.yaml`, and what an answer is.
//!
//! A case is one YAML mapping. Its request keys (`req`, `auth`, `json`, …) say what to send; the
//! others say what to set up first and what must come back:
//!
//! ```yaml
//! - name: a token signed with alg none is refused
//!   family: tokens            # tokens, grants, approvals, arguments, exposure, http, console, mcp, audit, slow
//!   setup: [pending_merge]    # fixtures made fresh for this case (optional)
//!   before: [{req: …, status: 200}]   # requests sent first (optional)
//!   req: POST /v1/actions     # then the request under test
//!   auth: ${tok.none}
//!   json: *issue
//!   status: 401               # or a list of acceptable statuses
//!   words: [algorithm]        # each must be in the answer (headers and body)
//!   absent: []                # none may be in it
//!   calls: 0                  # requests that reached the upstream during the case
//!   audit: none               # entries appended: none, "*", a list of kinds or admin events
//!                             # (`requested*3` for three), or {has: [...]}
//!   since: hole1              # the fix this case waits for (optional)
//!   backends: [sqlite]        # where it runs (optional; default both)
//! ```
//!
//! `${name}` in any text is replaced by a value of the world (keys, grant ids, tokens) or of
//! the case's fixtures; `${n}` is a number unique to the case.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;
use serde_yaml_ng::{Mapping, Value as Yaml};

#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    Tokens,
    Grants,
    Approvals,
    Arguments,
    Exposure,
    Http,
    Console,
    Mcp,
    Audit,
    Slow,
}

impl Family {
    pub const ALL: [Family; 10] = [
        Family::Tokens,
        Family::Grants,
        Family::Approvals,
        Family::Arguments,
        Family::Exposure,
        Family::Http,
        Family::Console,
        Family::Mcp,
        Family::Audit,
        Family::Slow,
    ];
}

/// The fixes of issue 14 a case depends on: it fails on a tree without that fix.
#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Fix {
    /// Grants only for one's own agents; the agent's owner cannot approve; one id namespace.
    Hole1,
    /// An echoed Basic credential is scrubbed.
    Hole2,
    /// An echoed credential is scrubbed in every encoding (JSON-escaped, percent-encoded, …).
    Hole3,
    /// Agents can be disabled; rotating an agent's key ends its tokens.
    Hole4,
    /// Header, body and idle timeouts; a connection limit.
    Hole5,
    /// MCP sessions are bound to the principal that opened them.
    Hole6,
    /// Amounts are bounded below too.
    Hole7,
    /// E-mail addresses are parsed strictly.
    Hole8,
    /// `/v1` POSTs take only JSON.
    Hole9,
    /// The example merge policy gates every merge.
    Hole10,
    /// A grant's action pattern must match a declared action.
    Hole11,
    /// The token error names the presenter once.
    Hole12,
    /// Found by this suite: a token narrowed to some of its grant's actions
    /// (`authorization_details.actions`) is held to them.
    TokenActions,
    /// Found by this suite: `[identity] token_ttl_secs` sets the lifetime of delegated tokens.
    TokenTtl,
}

/// What a case needs made fresh before it runs.
#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Fixture {
    /// helper asks to merge into main under the broad grant: `${approval}`, `${action}`,
    /// `${hash}`, `${pull}`.
    PendingMerge,
    /// bobs-agent asks to merge into main under alice's grant that an admin gave it.
    PendingCross,
    /// helper asks for `echo.gated`, whose approval expires after one second; waits until it
    /// has expired.
    PendingShort,
    /// A new agent of alice's with a grant (`github.*`) and a token: `${fresh.id}`, `${fresh.key}`,
    /// `${fresh.grant}`, `${fresh.token}`.
    FreshAgent,
    /// An MCP session opened by helper with the broad grant's token: `${mcp.session}`.
    McpHelper,
    /// The same with the narrow grant's token (`github.create_issue` only).
    McpNarrow,
    /// The same with the echo grant's token.
    McpEcho,
    /// The server with small timeouts and a connection limit: `${slow.url}`.
    SlowServer,
}

/// A raw-socket client behaviour (see `wire.rs`).
#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Tcp {
    SlowHeaders,
    SlowBody,
    Idle,
    Connections,
}

#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// What to send. Exactly one of `req` (HTTP), `mcp`, `cli`, `tcp` or `wire` says how.
#[derive(Deserialize, Clone, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// `METHOD /path`.
    pub req: Option<String>,
    /// A bearer credential; `raw:TEXT` sends `Authorization: TEXT` as it is.
    pub auth: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A JSON body (`content-type: application/json` unless `content_type` says otherwise).
    pub json: Option<Value>,
    /// A body as text.
    pub raw: Option<String>,
    /// A form body (`application/x-www-form-urlencoded`).
    pub form: Option<String>,
    /// The content type to send; `none` sends none.
    pub content_type: Option<String>,
    /// Send `raw` as UTF-16LE.
    #[serde(default)]
    pub utf16: bool,
    /// A JSON body of this many bytes.
    pub pad: Option<usize>,
    /// Send this many copies at once.
    pub times: Option<usize>,
    /// A JSON-RPC request `{method, params}` to `/mcp` (POST unless `req` says otherwise).
    pub mcp: Option<Value>,
    /// The `Mcp-Session-Id` header.
    pub session: Option<String>,
    /// Send the console session of this user (signed in with their API key on first use).
    pub cookie: Option<String>,
    /// Run `writ ARGS` against the server's database instead.
    pub cli: Option<Vec<String>>,
    /// A slow client, against the `slow_server` fixture.
    pub tcp: Option<Tcp>,
    /// These bytes, written to a socket as they are.
    pub wire: Option<String>,
    /// Read only the status and headers (an event stream never ends).
    #[serde(default)]
    pub stream: bool,
    /// Values of the answer (JSON pointers) kept as variables for later requests.
    #[serde(default)]
    pub capture: BTreeMap<String, String>,
}

/// A request sent before the one under test, with the status it must get (any, if none).
#[derive(Clone, Debug)]
pub struct Step {
    pub request: Request,
    pub status: Option<Vec<u16>>,
}

/// Which audit entries a case appends.
#[derive(Clone, Debug, PartialEq)]
pub enum AuditExpect {
    /// Not checked (`"*"`).
    Any,
    /// Exactly these, in any order (`none` is the empty list).
    Exactly(Vec<String>),
    /// At least these.
    Has(Vec<String>),
}

#[derive(Clone, Debug)]
pub struct Case {
    pub name: String,
    pub family: Family,
    pub setup: Vec<Fixture>,
    pub before: Vec<Step>,
    pub send: Request,
    pub status: Vec<u16>,
    pub words: Vec<String>,
    pub absent: Vec<String>,
    pub calls: usize,
    pub audit: AuditExpect,
    pub since: Option<Fix>,
    pub backends: Option<Vec<Backend>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Statuses {
    One(u16),
    Many(Vec<u16>),
}

impl Statuses {
    fn list(self) -> Vec<u16> {
        match self {
            Statuses::One(s) => vec![s],
            Statuses::Many(v) => v,
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum AuditSpec {
    Word(String),
    List(Vec<String>),
    Has { has: Vec<String> },
}

/// `requested*3` → three `requested`.
fn expand(names: Vec<String>) -> Vec<String> {
    names
        .into_iter()
        .flat_map(|n| match n.split_once('*') {
            Some((name, count)) => {
                vec![name.to_owned(); count.parse().expect("NAME*COUNT")]
            }
            None => vec![n],
        })
        .collect()
}

/// The keys of a case that are not request keys.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Meta {
    name: String,
    family: Family,
    #[serde(default)]
    setup: Vec<Fixture>,
    #[serde(default)]
    before: Vec<Yaml>,
    status: Statuses,
    #[serde(default)]
    words: Vec<String>,
    #[serde(default)]
    absent: Vec<String>,
    calls: usize,
    audit: AuditSpec,
    since: Option<Fix>,
    backends: Option<Vec<Backend>>,
}

const META_KEYS: &[&str] = &[
    "name", "family", "setup", "before", "status", "words", "absent", "calls", "audit", "since",
    "backends",
];

/// Splits a mapping into (the keys named in `keys`, the rest).
fn split(map: Mapping, keys: &[&str]) -> (Mapping, Mapping) {
    let mut named = Mapping::new();
    let mut rest = Mapping::new();
    for (k, v) in map {
        if k.as_str().is_some_and(|k| keys.contains(&k)) {
            named.insert(k, v);
        } else {
            rest.insert(k, v);
        }
    }
    (named, rest)
}

fn request(rest: Mapping, at: &str) -> Request {
    let r: Request = serde_yaml_ng::from_value(Yaml::Mapping(rest))
        .unwrap_or_else(|e| panic!("{at}: a request key is wrong: {e}"));
    let ways = [
        r.req.is_some() && r.mcp.is_none(),
        r.mcp.is_some(),
        r.cli.is_some(),
        r.tcp.is_some(),
        r.wire.is_some(),
    ];
    assert_eq!(
        ways.iter().filter(|w| **w).count(),
        1,
        "{at}: say how to send it with exactly one of req, mcp, cli, tcp, wire"
    );
    r
}

/// Reads the cases of a `cases.yaml` document (`{defs: …, cases: [...]}`).
pub fn parse(text: &str) -> Vec<Case> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        #[allow(dead_code)]
        defs: Yaml,
        cases: Vec<Yaml>,
    }
    let file: File = serde_yaml_ng::from_str(text).expect("cases.yaml is not valid YAML");
    let mut names = std::collections::HashSet::new();
    file.cases
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let Yaml::Mapping(map) = v else {
                panic!("case {i} is not a mapping")
            };
            let (meta, rest) = split(map, META_KEYS);
            let meta: Meta = serde_yaml_ng::from_value(Yaml::Mapping(meta))
                .unwrap_or_else(|e| panic!("case {i}: {e}"));
            assert!(
                names.insert(meta.name.clone()),
                "two cases are named {:?}",
                meta.name
            );
            let send = request(rest, &meta.name);
            let before = meta
                .before
                .into_iter()
                .map(|step| {
                    let Yaml::Mapping(map) = step else {
                        panic!("{}: a step is not a mapping", meta.name)
                    };
                    let (status, rest) = split(map, &["status"]);
                    let status = status.get("status").map(|s| {
                        serde_yaml_ng::from_value::<Statuses>(s.clone())
                            .expect("a status or a list of them")
                            .list()
                    });
                    Step {
                        request: request(rest, &meta.name),
                        status,
                    }
                })
                .collect();
            let audit = match meta.audit {
                AuditSpec::Word(w) if w == "none" => AuditExpect::Exactly(Vec::new()),
                AuditSpec::Word(w) if w == "*" => AuditExpect::Any,
                AuditSpec::Word(w) => panic!("{}: audit {w:?}: none, \"*\" or a list", meta.name),
                AuditSpec::List(l) => AuditExpect::Exactly(expand(l)),
                AuditSpec::Has { has } => AuditExpect::Has(expand(has)),
            };
            Case {
                name: meta.name,
                family: meta.family,
                setup: meta.setup,
                before,
                send,
                status: meta.status.list(),
                words: meta.words,
                absent: meta.absent,
                calls: meta.calls,
                audit,
                since: meta.since,
                backends: meta.backends,
            }
        })
        .collect()
}

/// What came back: a status, the headers as text, the body as text, and the body's JSON (an
/// event stream's JSON-RPC messages as an array) when it has some.
#[derive(Clone, Debug, Default)]
pub struct Answer {
    pub status: u16,
    pub headers: String,
    pub body: String,
    pub json: Option<Value>,
}

impl Answer {
    pub fn text(status: u16, body: String) -> Answer {
        Answer {
            status,
            headers: String::new(),
            json: parse_json(&body),
            body,
        }
    }

    /// Headers and body, for `words` and `absent`.
    pub fn full(&self) -> String {
        format!("{}\n\n{}", self.headers, self.body)
    }
}

/// JSON, or the `data:` lines of an event stream that hold JSON.
pub fn parse_json(body: &str) -> Option<Value> {
    if let Ok(v) = serde_json::from_str::<Value>(body.trim()) {
        return Some(v);
    }
    let events: Vec<Value> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str(d.trim()).ok())
        .collect();
    (!events.is_empty()).then_some(Value::Array(events))
}
