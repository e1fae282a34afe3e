//! `writ.toml`: every setting of a Writ server in one file, each overridable by a `WRIT_*`
//! environment variable, with defaults that start a working gateway when there is no file at all.
//!
//! Environment variables name a section and a key: `WRIT_SERVER_LISTEN`,
//! `WRIT_STORAGE_DATABASE_URL`, `WRIT_POLICY_DIR`. `WRIT_DATA_DIR` and `WRIT_DATABASE_URL` are
//! accepted as the short forms the CLI also reads. Variables of other sections (`WRIT_LOG`,
//! `WRIT_URL`, …) belong to other parts of Writ and are left alone. A key that no section has is
//! an error, in the file or in the environment: a typo must not silently fall back to a default.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use writ_connectors::HttpConnectorConfig;
use writ_connectors::mcp::McpConnectorConfig;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Invalid { origin: String, message: String },
}

fn invalid(origin: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        origin: origin.to_owned(),
        message: message.into(),
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub policy: PolicyConfig,
    pub audit: AuditConfig,
    pub identity: IdentityConfig,
    pub vault: VaultConfig,
    pub limits: LimitsConfig,
    pub connectors: BTreeMap<String, ConnectorConfig>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// The URL clients use, when it differs from `http://<listen>` (behind a proxy).
    pub public_url: Option<String>,
    /// Browser origins (`https://app.example.com`) allowed to call `/mcp` besides the server's
    /// own; any other `Origin` is refused (DNS-rebinding protection).
    pub allowed_origins: Vec<String>,
    /// A connection must send a request's whole header within this time (from when it opened,
    /// and from a request's first byte on a kept-alive connection).
    pub header_timeout_ms: u64,
    /// A request's whole body must arrive within this time of its header (408 otherwise).
    pub body_timeout_ms: u64,
    /// A kept-alive connection with no request in flight and nothing sent either way for this
    /// long is closed.
    pub idle_timeout_ms: u64,
    /// At most this many connections are open at once; further clients wait to be accepted.
    pub max_connections: usize,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Keys and the embedded database live here.
    pub data_dir: PathBuf,
    /// `postgres://…` or `sqlite://PATH`; empty means SQLite in `data_dir`.
    pub database_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// The bundle directory; empty means the example bundle.
    pub dir: Option<PathBuf>,
    /// A candidate bundle evaluated in shadow beside the live one.
    pub shadow_dir: Option<PathBuf>,
    /// Reload when the directory changes.
    pub watch: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// The log's origin line in checkpoints and the name of its signing key.
    pub origin: String,
    /// Seconds between signed checkpoints while the log grows (0: only on demand).
    pub checkpoint_interval_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    /// Lifetime of delegated tokens Writ mints (capped by the grant's expiry).
    pub token_ttl_secs: u64,
    /// External issuers whose users may authorize agents.
    pub oidc: Vec<OidcIssuerConfig>,
    /// Local users may sign in to the console with a password. `false` where people must sign
    /// in through an identity provider (its MFA and account controls) or with an API key: the
    /// password form, the account page's password form and `POST /v1/users/me/password` are
    /// then gone, and stored passwords are ignored.
    pub passwords: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcIssuerConfig {
    pub issuer: String,
    pub audience: String,
    /// Default: `<issuer>/.well-known/jwks.json` from discovery.
    pub jwks_url: Option<String>,
    #[serde(default = "default_user_claim")]
    pub user_claim: String,
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// Sign-in to the web console with this issuer (authorization code flow with PKCE).
    pub console: Option<OidcConsoleConfig>,
}

/// `[identity.oidc.console]`: how the web console signs people in with an issuer. The client
/// secret, when the issuer needs one, is never in the file: it is the vault credential
/// `client_secret_credential` or the environment variable `client_secret_env`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConsoleConfig {
    /// Writ's client id at the issuer; ID tokens for the console must name it in `aud`.
    pub client_id: String,
    /// What the sign-in page calls the issuer: "Sign in with <name>".
    pub name: String,
    /// Default: from `<issuer>/.well-known/openid-configuration`, read at start.
    pub authorization_endpoint: Option<String>,
    /// Default: from `<issuer>/.well-known/openid-configuration`, read at start.
    pub token_endpoint: Option<String>,
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// A vault credential (`writ vault put NAME`) holding the client secret.
    pub client_secret_credential: Option<String>,
    /// An environment variable holding the client secret.
    pub client_secret_env: Option<String>,
}

fn default_scopes() -> Vec<String> {
    ["openid", "email", "profile"].map(str::to_owned).to_vec()
}

/// Whether `url` is `https://…`, or `http://` on loopback (tests, sidecars).
pub(crate) fn secure_url(url: &str) -> bool {
    let rest = url.strip_prefix("https://").or_else(|| {
        url.strip_prefix("http://").filter(|r| {
            ["127.0.0.1", "[::1]", "localhost"].iter().any(|h| {
                r.strip_prefix(h)
                    .is_some_and(|t| t.is_empty() || t.starts_with([':', '/']))
            })
        })
    });
    rest.is_some_and(|r| !r.is_empty() && !r.contains(['#', ' ', '@']) && !r.starts_with('/'))
}

impl OidcConsoleConfig {
    fn check(&self, issuer: &str) -> Result<(), String> {
        let at = format!("identity.oidc (issuer {issuer}).console");
        let printable =
            |t: &str| !t.is_empty() && t.len() <= 200 && !t.chars().any(char::is_control);
        if !printable(&self.client_id) || self.client_id.trim() != self.client_id {
            return Err(format!(
                "{at}.client_id must be set, without spaces around it"
            ));
        }
        if !printable(self.name.trim()) {
            return Err(format!(
                "{at}.name must be set: the sign-in page shows \"Sign in with <name>\""
            ));
        }
        for (key, url) in [
            ("authorization_endpoint", &self.authorization_endpoint),
            ("token_endpoint", &self.token_endpoint),
        ] {
            if let Some(url) = url
                && !secure_url(url)
            {
                return Err(format!(
                    "{at}.{key}: {url:?} must be an https:// URL (http:// only on loopback)"
                ));
            }
        }
        if !self.scopes.iter().any(|s| s == "openid") {
            return Err(format!("{at}.scopes must include \"openid\""));
        }
        if let Some(s) = self.scopes.iter().find(|s| {
            s.is_empty()
                || !s
                    .chars()
                    .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\')
        }) {
            return Err(format!("{at}.scopes: {s:?} is not a scope"));
        }
        match (&self.client_secret_credential, &self.client_secret_env) {
            (Some(_), Some(_)) => {
                return Err(format!(
                    "{at}: give client_secret_credential or client_secret_env, not both"
                ));
            }
            (Some(name), None) => {
                writ_vault::CredentialName::new(name.as_str())
                    .map_err(|e| format!("{at}.client_secret_credential: {e}"))?;
            }
            (None, Some(var)) => {
                let valid =
                    !var.is_empty() && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !valid || env_key(var).is_some() {
                    return Err(format!(
                        "{at}.client_secret_env: {var:?} must be a variable name (letters, digits, '_') that is not a WRIT_<section>_ setting"
                    ));
                }
            }
            (None, None) => {}
        }
        Ok(())
    }
}

fn default_user_claim() -> String {
    "sub".into()
}

fn default_groups_claim() -> String {
    "groups".into()
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VaultConfig {
    /// Where the master key comes from: `generate` (a 0600 file in the data directory, created
    /// on first start), `env` (`WRIT_MASTER_KEY`), or `file:<path>`.
    pub master_key: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub max_body_bytes: usize,
    pub max_args_bytes: usize,
    /// Actions per agent per minute (0: unlimited).
    pub actions_per_agent_per_minute: u32,
    /// Longest `?wait=` a client may ask for.
    pub max_wait_secs: u64,
}

/// One connector under `[connectors.<name>]` (one value per connector, read at start: its size
/// does not matter).
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
#[allow(clippy::large_enum_variant)]
pub enum ConnectorConfig {
    Http(HttpConnectorConfig),
    /// An upstream MCP server whose tools become operations.
    Mcp(McpConnectorConfig),
}

impl PartialEq for ConnectorConfig {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (ConnectorConfig::Http(a), ConnectorConfig::Http(b)) => {
                a.base_url == b.base_url && a.operations.keys().eq(b.operations.keys())
            }
            (ConnectorConfig::Mcp(a), ConnectorConfig::Mcp(b)) => a == b,
            _ => false,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: None,
            allowed_origins: Vec::new(),
            header_timeout_ms: 10_000,
            body_timeout_ms: 30_000,
            idle_timeout_ms: 60_000,
            max_connections: 512,
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            data_dir: PathBuf::from("./writ-data"),
            database_url: None,
        }
    }
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            dir: None,
            shadow_dir: None,
            watch: true,
        }
    }
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            origin: "writ.local/audit".into(),
            checkpoint_interval_secs: 60,
        }
    }
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            token_ttl_secs: 900,
            oidc: Vec::new(),
            passwords: true,
        }
    }
}

impl Default for VaultConfig {
    fn default() -> Self {
        VaultConfig {
            master_key: "generate".into(),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_body_bytes: 1024 * 1024,
            max_args_bytes: 256 * 1024,
            actions_per_agent_per_minute: 600,
            max_wait_secs: 60,
        }
    }
}

/// The sections an environment variable may name, longest first so that a section whose name
/// starts another's is matched whole.
const SECTIONS: [&str; 7] = [
    "identity", "storage", "server", "policy", "limits", "audit", "vault",
];

/// Short forms shared with the CLI.
const ALIASES: [(&str, &str, &str); 2] = [
    ("WRIT_DATA_DIR", "storage", "data_dir"),
    ("WRIT_DATABASE_URL", "storage", "database_url"),
];

impl Config {
    /// Reads `path` (if given; a missing explicit file is an error) and then the environment.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let (text, origin) = match path {
            Some(p) => (
                std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_owned(),
                    source,
                })?,
                p.display().to_string(),
            ),
            None => (String::new(), "defaults".to_owned()),
        };
        Config::from_toml(&text, &origin, env)
    }

    /// Parses TOML text, applies environment overrides, and checks the result.
    pub fn from_toml(
        text: &str,
        origin: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| invalid(origin, e.to_string()))?;
        let mut overridden = Vec::new();
        for (name, value) in env {
            let Some((section, key)) = env_key(&name) else {
                continue;
            };
            let entry = table
                .entry(section.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let toml::Value::Table(section_table) = entry else {
                return Err(invalid(origin, format!("`{section}` must be a table")));
            };
            section_table.insert(key, env_value(&value));
            overridden.push(name);
        }
        let config: Config =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| {
                    let from = if overridden.is_empty() {
                        origin.to_owned()
                    } else {
                        format!("{origin} with {}", overridden.join(", "))
                    };
                    invalid(&from, e.to_string())
                })?;
        config.check(origin)?;
        Ok(config)
    }

    fn check(&self, origin: &str) -> Result<(), ConfigError> {
        if let Some(url) = &self.storage.database_url {
            let ok = url.starts_with("postgres://")
                || url.starts_with("postgresql://")
                || url.strip_prefix("sqlite://").is_some_and(|p| !p.is_empty());
            if !ok {
                return Err(invalid(
                    origin,
                    "storage.database_url must be postgres://… or sqlite://PATH (the URL is not shown: it may hold a password)",
                ));
            }
        }
        if self.audit.origin.is_empty()
            || self
                .audit
                .origin
                .chars()
                .any(|c| c.is_whitespace() || c == '+')
        {
            return Err(invalid(
                origin,
                "audit.origin must be non-empty, without spaces or '+'",
            ));
        }
        let source = self.vault.master_key.as_str();
        if !(matches!(source, "generate" | "env")
            || source.strip_prefix("file:").is_some_and(|p| !p.is_empty()))
        {
            return Err(invalid(
                origin,
                "vault.master_key must be \"generate\", \"env\" or \"file:<path>\"",
            ));
        }
        let server = &self.server;
        if [
            server.header_timeout_ms,
            server.body_timeout_ms,
            server.idle_timeout_ms,
        ]
        .iter()
        .any(|&ms| !(10..=3_600_000).contains(&ms))
        {
            return Err(invalid(
                origin,
                "server.header_timeout_ms, body_timeout_ms and idle_timeout_ms must be between 10 and 3600000",
            ));
        }
        if server.max_connections == 0 {
            return Err(invalid(origin, "server.max_connections must be positive"));
        }
        if self.limits.max_body_bytes == 0 || self.limits.max_args_bytes == 0 {
            return Err(invalid(origin, "limits must be positive"));
        }
        if self.limits.max_args_bytes > self.limits.max_body_bytes {
            return Err(invalid(
                origin,
                "limits.max_args_bytes cannot exceed limits.max_body_bytes",
            ));
        }
        if self.identity.token_ttl_secs == 0 || self.identity.token_ttl_secs > 24 * 3600 {
            return Err(invalid(
                origin,
                "identity.token_ttl_secs must be between 1 and 86400",
            ));
        }
        for issuer in &self.identity.oidc {
            if let Some(console) = &issuer.console {
                console
                    .check(&issuer.issuer)
                    .map_err(|m| invalid(origin, m))?;
            }
        }
        for o in &self.server.allowed_origins {
            let rest = o
                .strip_prefix("https://")
                .or_else(|| o.strip_prefix("http://"));
            if !rest.is_some_and(|r| !r.is_empty() && !r.contains(['/', '?', '#', '@', ' '])) {
                return Err(invalid(
                    origin,
                    format!(
                        "server.allowed_origins: {o:?} is not an origin; write it as https://host or https://host:port"
                    ),
                ));
            }
        }
        for (name, connector) in &self.connectors {
            let valid =
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(invalid(
                    origin,
                    format!("connector name {name:?}: letters, digits and '_' only"),
                ));
            }
            match connector {
                ConnectorConfig::Http(http) => {
                    writ_connectors::HttpConnector::new(name, http.clone())
                        .map_err(|e| invalid(origin, e.to_string()))?;
                }
                ConnectorConfig::Mcp(mcp) => {
                    writ_connectors::mcp::McpConnector::check(name, mcp)
                        .map_err(|e| invalid(origin, e.to_string()))?;
                }
            }
        }
        crate::tool_names::check(&self.connectors).map_err(|why| invalid(origin, why))
    }
}

/// `WRIT_SERVER_LISTEN` → (`server`, `listen`); None for variables that are not settings.
fn env_key(name: &str) -> Option<(String, String)> {
    if let Some((_, section, key)) = ALIASES.iter().find(|(alias, _, _)| *alias == name) {
        return Some(((*section).to_owned(), (*key).to_owned()));
    }
    let rest = name.strip_prefix("WRIT_")?.to_ascii_lowercase();
    SECTIONS.iter().find_map(|section| {
        let key = rest.strip_prefix(section)?.strip_prefix('_')?;
        (!key.is_empty()).then(|| ((*section).to_owned(), key.to_owned()))
    })
}

/// An environment value as TOML: integers and booleans as such, everything else a string.
fn env_value(value: &str) -> toml::Value {
    if let Ok(i) = value.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    match value {
        "true" => toml::Value::Boolean(true),
        "false" => toml::Value::Boolean(false),
        _ => toml::Value::String(value.to_owned()),
    }
}

/// The commented `writ.toml` that `writ init` writes.
pub const TEMPLATE: &str = include_str!("writ.toml.template");

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn no_file_gives_a_working_default() {
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.storage.data_dir, PathBuf::from("./writ-data"));
    }

    #[test]
    fn allowed_origins_must_be_origins() {
        let ok = Config::from_toml(
            "[server]\nallowed_origins = [\"https://agents.example.com\", \"http://localhost:3000\"]",
            "t",
            env(&[]),
        )
        .unwrap();
        assert_eq!(ok.server.allowed_origins.len(), 2);
        for bad in [
            "https://a.example/path",
            "a.example",
            "https://",
            "ftp://a.example",
        ] {
            let text = format!("[server]\nallowed_origins = [{bad:?}]");
            let err = Config::from_toml(&text, "t", env(&[]))
                .unwrap_err()
                .to_string();
            assert!(err.contains("not an origin"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_template_is_a_valid_configuration() {
        let c = Config::from_toml(TEMPLATE, "template", env(&[])).unwrap();
        assert_eq!(c.connectors.len(), 1);
        assert!(c.connectors.contains_key("github"));
    }

    #[test]
    fn environment_overrides_the_file() {
        let text = "[server]\nlisten = \"0.0.0.0:9000\"\n[limits]\nmax_wait_secs = 5\n";
        let c = Config::from_toml(
            text,
            "writ.toml",
            env(&[
                ("WRIT_SERVER_LISTEN", "127.0.0.1:7000"),
                ("WRIT_LIMITS_MAX_WAIT_SECS", "30"),
                ("WRIT_DATABASE_URL", "postgres://u@h/db"),
                ("WRIT_POLICY_WATCH", "false"),
                ("WRIT_LOG", "debug"),
                ("WRIT_TEST_POSTGRES_URL", "postgres://x"),
                ("PATH", "/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:7000");
        assert_eq!(c.limits.max_wait_secs, 30);
        assert_eq!(c.storage.database_url.as_deref(), Some("postgres://u@h/db"));
        assert!(!c.policy.watch);
    }

    #[test]
    fn mistakes_are_named_not_ignored() {
        let cases = [
            ("[server]\nlisten = \"nope\"\n", vec![]),
            ("[server]\nlistne = \"127.0.0.1:1\"\n", vec![]),
            ("[sever]\n", vec![]),
            ("", vec![("WRIT_SERVER_LISTNE", "127.0.0.1:1")]),
            ("", vec![("WRIT_STORAGE_DATABASE_URL", "mysql://x")]),
            ("[vault]\nmaster_key = \"plain-text-key\"\n", vec![]),
            ("[audit]\norigin = \"has space\"\n", vec![]),
            (
                "[limits]\nmax_args_bytes = 10\nmax_body_bytes = 5\n",
                vec![],
            ),
            (
                "[connectors.x]\nkind = \"http\"\nbase_url = \"ftp://x\"\noperations = {}\n",
                vec![],
            ),
            ("[connectors.x]\nkind = \"smtp\"\n", vec![]),
            ("not toml at all [", vec![]),
        ];
        for (text, vars) in cases {
            let err = Config::from_toml(text, "writ.toml", env(&vars));
            assert!(err.is_err(), "{text:?} {vars:?}");
        }
        let err = Config::from_toml(
            "",
            "writ.toml",
            env(&[("WRIT_STORAGE_DATABASE_URL", "mysql://u:hunter2@h")]),
        )
        .unwrap_err()
        .to_string();
        assert!(!err.contains("hunter2"), "{err}");
        let missing = Config::load(Some(Path::new("/nonexistent/writ.toml")), env(&[]));
        assert!(matches!(missing, Err(ConfigError::Read { .. })));
    }

    #[test]
    fn mcp_upstreams() {
        let c = Config::from_toml(
            "[connectors.files]\nkind = \"mcp\"\ncommand = \"mcp-server-filesystem\"\nargs = [\"/srv\"]\nenv = { TOKEN = { credential = \"fs-token\" }, MODE = \"ro\" }\ntools = [\"read_file\"]\n\n[connectors.remote]\nkind = \"mcp\"\nurl = \"https://mcp.example.com/mcp\"\nheaders = { Authorization = { credential = \"t\", prefix = \"Bearer \" } }\n",
            "writ.toml",
            env(&[]),
        )
        .unwrap();
        let Some(ConnectorConfig::Mcp(files)) = c.connectors.get("files") else {
            panic!("files is not an MCP connector");
        };
        assert_eq!(files.args, vec!["/srv"]);
        assert_eq!(files.timeout_ms, 30_000);
        assert!(matches!(
            files.env.get("TOKEN"),
            Some(writ_connectors::mcp::Setting::Credential(c)) if c.credential == "fs-token"
        ));
        assert!(matches!(
            files.env.get("MODE"),
            Some(writ_connectors::mcp::Setting::Literal(v)) if v == "ro"
        ));
        let Some(ConnectorConfig::Mcp(remote)) = c.connectors.get("remote") else {
            panic!("remote is not an MCP connector");
        };
        assert_eq!(remote.url.as_deref(), Some("https://mcp.example.com/mcp"));

        for (text, says) in [
            ("command = \"a\"\nurl = \"http://x/mcp\"", "not both"),
            ("args = []", "give `command`"),
            ("command = \" \"", "empty"),
            ("url = \"ftp://x\"", "http://"),
            (
                "command = \"a\"\nheaders = { A = \"b\" }",
                "`headers` are for an HTTP server",
            ),
            (
                "url = \"http://x/mcp\"\nenv = { A = \"b\" }",
                "are for a stdio server",
            ),
            ("command = \"a\"\ntools = [\"bad name\"]", "tool names"),
            ("command = \"a\"\ntimeout_ms = 0", "positive"),
            ("command = \"a\"\nsurprise = 1", "surprise"),
            (
                "url = \"http://x/mcp\"\nheaders = { \"bad header\" = \"v\" }",
                "header name",
            ),
        ] {
            let toml = format!("[connectors.u]\nkind = \"mcp\"\n{text}\n");
            let err = Config::from_toml(&toml, "writ.toml", env(&[]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{text:?}: {err}");
        }
    }

    #[test]
    fn oidc_console_sign_in() {
        let base = "[[identity.oidc]]\nissuer = \"https://idp.example\"\naudience = \"writ\"\n[identity.oidc.console]\n";
        let c = Config::from_toml(
            &format!("{base}client_id = \"writ-console\"\nname = \"Example SSO\"\nclient_secret_env = \"OIDC_SECRET\"\n"),
            "writ.toml",
            env(&[]),
        )
        .unwrap();
        let console = c.identity.oidc[0].console.as_ref().unwrap();
        assert_eq!(console.scopes, vec!["openid", "email", "profile"]);
        assert_eq!(console.authorization_endpoint, None);
        for (text, says) in [
            ("name = \"X\"", "client_id"),
            ("client_id = \"c\"", "name"),
            ("client_id = \" c\"\nname = \"X\"", "client_id"),
            (
                "client_id = \"c\"\nname = \"X\"\nclient_secret = \"s\"",
                "client_secret",
            ),
            (
                "client_id = \"c\"\nname = \"X\"\nscopes = [\"email\"]",
                "openid",
            ),
            (
                "client_id = \"c\"\nname = \"X\"\nscopes = [\"openid\", \"a b\"]",
                "not a scope",
            ),
            (
                "client_id = \"c\"\nname = \"X\"\ntoken_endpoint = \"http://idp.example/t\"",
                "https://",
            ),
            (
                "client_id = \"c\"\nname = \"X\"\nauthorization_endpoint = \"http://127.0.0.1.evil/a\"",
                "https://",
            ),
            (
                "client_id = \"c\"\nname = \"X\"\nclient_secret_env = \"A\"\nclient_secret_credential = \"b\"",
                "not both",
            ),
            (
                "client_id = \"c\"\nname = \"X\"\nclient_secret_env = \"WRIT_IDENTITY_SECRET\"",
                "WRIT_<section>_",
            ),
            (
                "client_id = \"c\"\nname = \"X\"\nclient_secret_env = \"A-B\"",
                "variable name",
            ),
            (
                "client_id = \"c\"\nname = \"X\"\nclient_secret_credential = \"bad name!\"",
                "client_secret_credential",
            ),
        ] {
            let err = Config::from_toml(&format!("{base}{text}\n"), "writ.toml", env(&[]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{text:?}: {err}");
        }
        assert!(secure_url("http://127.0.0.1:8080/auth"));
        assert!(secure_url("http://localhost/auth"));
        assert!(secure_url("https://idp.example/auth?x=1"));
        assert!(!secure_url("http://localhost.evil/auth"));
        assert!(!secure_url("https://user@idp.example/"));
    }

    #[test]
    fn env_keys() {
        assert_eq!(
            env_key("WRIT_SERVER_PUBLIC_URL"),
            Some(("server".into(), "public_url".into()))
        );
        assert_eq!(
            env_key("WRIT_DATA_DIR"),
            Some(("storage".into(), "data_dir".into()))
        );
        assert_eq!(env_key("WRIT_SERVER_"), None);
        assert_eq!(env_key("WRIT_URL"), None);
        assert_eq!(env_key("WRITSERVER_LISTEN"), None);
    }
}
