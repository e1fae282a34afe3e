//! The HTTP connector: operations declared in configuration, executed with a vault credential.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use reqwest::header::{AUTHORIZATION, HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::{Map, Value};
use writ_vault::Secret;

use crate::scrub::{Scrubber, Sent};
use crate::template::{fill, placeholders, redact_pointers};
use crate::{Call, Connector, ConnectorError, OperationInfo, Outcome, ResourceRef};

fn default_timeout_ms() -> u64 {
    10_000
}

fn default_max_response_bytes() -> usize {
    1024 * 1024
}

fn any_object() -> Value {
    serde_json::json!({"type": "object"})
}

/// One HTTP connector as written in `writ.toml` under `[connectors.<name>]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConnectorConfig {
    /// `https://api.example.com`; arguments never change the scheme, host or port.
    pub base_url: String,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: usize,
    /// Fixed, non-secret headers sent with every call (secrets belong in the vault).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub operations: BTreeMap<String, HttpOperationConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

/// Where the arguments that are not in the path or the query go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BodyMode {
    /// A JSON object body (the default for POST, PUT and PATCH).
    Json,
    /// Query parameters (the default for GET and DELETE).
    Query,
    /// Nowhere: extra arguments are refused.
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpOperationConfig {
    #[serde(default)]
    pub description: String,
    pub method: HttpMethod,
    /// `/repos/{owner}/{repo}/pulls/{pull_number}/merge`: each `{arg}` fills one path segment.
    pub path: String,
    /// Arguments sent as query parameters.
    #[serde(default)]
    pub query: Vec<String>,
    pub body: Option<BodyMode>,
    /// JSON Schema of the arguments (default: any object).
    #[serde(default = "any_object")]
    pub args_schema: Value,
    pub resource: Option<ResourceSpec>,
    pub credential: Option<CredentialSpec>,
    /// JSON pointers replaced by `"[redacted]"` in the response before anyone sees it.
    #[serde(default)]
    pub redact: Vec<String>,
    pub timeout_ms: Option<u64>,
}

/// The policy resource of an operation: `type = "Repo"`, `id = "{owner}/{repo}"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceSpec {
    #[serde(rename = "type")]
    pub entity_type: String,
    pub id: String,
    /// Attributes of the resource entity: strings are templates filled from the arguments
    /// (`owner = "{owner}"`), other values are taken as they are.
    #[serde(default)]
    pub attributes: serde_json::Map<String, Value>,
}

/// Which vault credential an operation uses and how it is put on the request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialSpec {
    /// The vault entry's name.
    pub name: String,
    pub inject: Injection,
    /// For `inject = "header"`: the header name.
    pub header: Option<String>,
    /// For `inject = "header"`: text before the secret, such as `"token "`.
    #[serde(default)]
    pub prefix: String,
    /// For `inject = "basic"`: the user name; the secret is the password.
    pub username: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Injection {
    /// `Authorization: Bearer <secret>`.
    Bearer,
    /// `<header>: <prefix><secret>`.
    Header,
    /// `Authorization: Basic base64(<username>:<secret>)`.
    Basic,
}

struct Operation {
    name: String,
    config: HttpOperationConfig,
    body: BodyMode,
    path_args: Vec<String>,
    schema: jsonschema::Validator,
    header: Option<HeaderName>,
    timeout: Duration,
}

/// An HTTP API as a connector.
pub struct HttpConnector {
    name: String,
    base_url: String,
    client: reqwest::Client,
    headers: Vec<(HeaderName, HeaderValue)>,
    max_response_bytes: usize,
    operations: BTreeMap<String, Operation>,
}

/// What [`Outcome::redacted`] says when the upstream echoed the credential.
pub(crate) const ECHOED: &str = "(credential echoed by the upstream)";

impl Operation {
    /// How the operation puts `secret` on the request (the bytes of a secret given to an
    /// operation that declares no credential are looked for as they are).
    fn sent<'a>(&'a self, secret: &'a [u8]) -> Sent<'a> {
        match &self.config.credential {
            Some(CredentialSpec {
                inject: Injection::Basic,
                username,
                ..
            }) => Sent::Basic {
                username: username.as_deref().unwrap_or_default(),
                secret,
            },
            Some(CredentialSpec {
                inject: Injection::Bearer,
                ..
            }) => Sent::Prefixed {
                prefix: "Bearer ",
                secret,
            },
            Some(CredentialSpec {
                inject: Injection::Header,
                prefix,
                ..
            }) => Sent::Prefixed { prefix, secret },
            None => Sent::Prefixed { prefix: "", secret },
        }
    }
}

fn config_error(connector: &str, what: impl std::fmt::Display) -> ConnectorError {
    ConnectorError::Config(format!("connector {connector:?}: {what}"))
}

impl HttpConnector {
    /// Checks the whole configuration up front: a connector that starts is one that can run.
    pub fn new(name: &str, config: HttpConnectorConfig) -> Result<HttpConnector, ConnectorError> {
        let err = |what: String| config_error(name, what);
        let url = reqwest::Url::parse(&config.base_url)
            .map_err(|e| err(format!("base_url {:?} is not a URL: {e}", config.base_url)))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(err(
                "base_url must be an http:// or https:// URL with a host".into(),
            ));
        }
        if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
            return Err(err(
                "base_url must not carry a query, a fragment or credentials".into(),
            ));
        }
        if config.max_response_bytes == 0 || config.timeout_ms == 0 {
            return Err(err(
                "max_response_bytes and timeout_ms must be positive".into()
            ));
        }
        let mut headers = Vec::new();
        for (k, v) in &config.headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| err(format!("invalid header name {k:?}")))?;
            let value = HeaderValue::from_str(v)
                .map_err(|_| err(format!("invalid value for header {k:?}")))?;
            headers.push((name, value));
        }
        let mut operations = BTreeMap::new();
        for (op_name, op) in config.operations {
            let op_err = |what: String| err(format!("operation {op_name:?}: {what}"));
            if !op_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
                || op_name.is_empty()
            {
                return Err(op_err("names are letters, digits and '_'".into()));
            }
            if !op.path.starts_with('/') {
                return Err(op_err(format!("path {:?} must start with '/'", op.path)));
            }
            let path_args = placeholders(&op.path).map_err(op_err)?;
            if let Some(resource) = &op.resource {
                placeholders(&resource.id).map_err(op_err)?;
            }
            let schema = jsonschema::validator_for(&op.args_schema)
                .map_err(|e| op_err(format!("args_schema is not a valid JSON Schema: {e}")))?;
            let header = match &op.credential {
                None => None,
                Some(c) => match c.inject {
                    Injection::Header => {
                        let h = c
                            .header
                            .as_deref()
                            .ok_or_else(|| op_err("inject = \"header\" needs `header`".into()))?;
                        Some(
                            HeaderName::from_bytes(h.as_bytes())
                                .map_err(|_| op_err(format!("invalid header name {h:?}")))?,
                        )
                    }
                    Injection::Basic if c.username.as_deref().is_none_or(|u| u.contains(':')) => {
                        return Err(op_err(
                            "inject = \"basic\" needs a `username` without ':'".into(),
                        ));
                    }
                    _ => None,
                },
            };
            if op.redact.iter().any(|p| !p.starts_with('/')) {
                return Err(op_err(
                    "redact entries are JSON pointers starting with '/'".into(),
                ));
            }
            let body = op.body.unwrap_or(match op.method {
                HttpMethod::Get | HttpMethod::Delete => BodyMode::Query,
                _ => BodyMode::Json,
            });
            let timeout = Duration::from_millis(op.timeout_ms.unwrap_or(config.timeout_ms).max(1));
            operations.insert(
                op_name.clone(),
                Operation {
                    name: op_name,
                    config: op,
                    body,
                    path_args,
                    schema,
                    header,
                    timeout,
                },
            );
        }
        // No redirects: a redirect could carry the injected credential to another host.
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_millis(config.timeout_ms))
            .build()
            .map_err(|e| err(format!("cannot build the HTTP client: {e}")))?;
        Ok(HttpConnector {
            name: name.to_owned(),
            base_url: config.base_url.trim_end_matches('/').to_owned(),
            client,
            headers,
            max_response_bytes: config.max_response_bytes,
            operations,
        })
    }

    fn operation(&self, name: &str) -> Result<&Operation, ConnectorError> {
        self.operations
            .get(name)
            .ok_or_else(|| ConnectorError::UnknownOperation(name.to_owned()))
    }

    fn build_request(
        &self,
        op: &Operation,
        args: &Value,
        credential: Option<&Secret>,
    ) -> Result<reqwest::RequestBuilder, ConnectorError> {
        let invalid = |what: String| ConnectorError::InvalidArguments(vec![what]);
        let object = args
            .as_object()
            .ok_or_else(|| invalid("arguments must be a JSON object".into()))?;
        let path = fill(&op.config.path, args, true).map_err(invalid)?;
        let url = format!("{}{path}", self.base_url);
        let method = match op.config.method {
            HttpMethod::Get => reqwest::Method::GET,
            HttpMethod::Post => reqwest::Method::POST,
            HttpMethod::Put => reqwest::Method::PUT,
            HttpMethod::Patch => reqwest::Method::PATCH,
            HttpMethod::Delete => reqwest::Method::DELETE,
        };
        let mut query: Vec<(String, String)> = Vec::new();
        let mut body = Map::new();
        for (key, value) in object {
            if op.path_args.contains(key) {
                continue;
            }
            let to_query = op.config.query.contains(key) || op.body == BodyMode::Query;
            if to_query {
                let text = match value {
                    Value::String(s) => s.clone(),
                    Value::Null => continue,
                    other => other.to_string(),
                };
                query.push((key.clone(), text));
            } else if op.body == BodyMode::Json {
                body.insert(key.clone(), value.clone());
            } else {
                return Err(invalid(format!(
                    "argument {key:?} has nowhere to go in this operation"
                )));
            }
        }
        let mut request = self.client.request(method, url).timeout(op.timeout);
        for (name, value) in &self.headers {
            request = request.header(name, value.clone());
        }
        if !query.is_empty() {
            request = request.query(&query);
        }
        if op.body == BodyMode::Json {
            request = request.json(&Value::Object(body));
        }
        if let Some(spec) = &op.config.credential {
            let secret = credential.ok_or_else(|| ConnectorError::MissingCredential {
                operation: format!("{}.{}", self.name, op.name),
                credential: spec.name.clone(),
            })?;
            let unusable = || {
                ConnectorError::Config(format!(
                    "credential {:?} cannot be sent in an HTTP header (it has bytes a header cannot carry)",
                    spec.name
                ))
            };
            let name = match spec.inject {
                Injection::Bearer | Injection::Basic => AUTHORIZATION,
                Injection::Header => op.header.clone().ok_or_else(unusable)?,
            };
            let mut bytes = op.sent(secret.expose()).wire();
            let value = HeaderValue::from_bytes(&bytes);
            bytes.fill(0);
            let mut value = value.map_err(|_| unusable())?;
            value.set_sensitive(true);
            request = request.header(name, value);
        }
        Ok(request)
    }
}

#[async_trait]
impl Connector for HttpConnector {
    fn name(&self) -> &str {
        &self.name
    }

    fn operations(&self) -> Vec<OperationInfo> {
        self.operations
            .values()
            .map(|op| OperationInfo {
                name: op.name.clone(),
                description: op.config.description.clone(),
                args_schema: op.config.args_schema.clone(),
                credential: op.config.credential.as_ref().map(|c| c.name.clone()),
                hints: None,
                definition: None,
            })
            .collect()
    }

    fn validate(&self, operation: &str, args: &Value) -> Result<(), ConnectorError> {
        let op = self.operation(operation)?;
        let mut problems: Vec<String> = op
            .schema
            .iter_errors(args)
            .take(10)
            .map(|e| {
                let at = e.instance_path().to_string();
                let message: String = e.to_string().chars().take(200).collect();
                if at.is_empty() {
                    message
                } else {
                    format!("{at}: {message}")
                }
            })
            .collect();
        if problems.is_empty() {
            for name in &op.path_args {
                if let Err(e) = fill(&format!("{{{name}}}"), args, true) {
                    problems.push(e);
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConnectorError::InvalidArguments(problems))
        }
    }

    fn resource(&self, operation: &str, args: &Value) -> Result<ResourceRef, ConnectorError> {
        let op = self.operation(operation)?;
        match &op.config.resource {
            Some(spec) => {
                let invalid = |e| ConnectorError::InvalidArguments(vec![e]);
                let mut attributes = serde_json::Map::new();
                for (name, value) in &spec.attributes {
                    let value = match value {
                        Value::String(template) => {
                            Value::String(fill(template, args, false).map_err(invalid)?)
                        }
                        other => other.clone(),
                    };
                    attributes.insert(name.clone(), value);
                }
                Ok(ResourceRef {
                    entity_type: spec.entity_type.clone(),
                    id: fill(&spec.id, args, false).map_err(invalid)?,
                    attributes,
                })
            }
            // Without a declared resource the action is about the connector itself.
            None => Ok(ResourceRef {
                entity_type: "Connector".into(),
                id: self.name.clone(),
                attributes: serde_json::Map::new(),
            }),
        }
    }

    async fn execute(&self, call: Call<'_>) -> Result<Outcome, ConnectorError> {
        let op = self.operation(call.operation)?;
        self.validate(call.operation, call.args)?;
        let request = self.build_request(op, call.args, call.credential)?;
        let scrubber = match call.credential {
            Some(secret) => Scrubber::new(&[op.sent(secret.expose())]).map_err(|e| {
                ConnectorError::Config(format!("operation {}.{}: {e}", self.name, op.name))
            })?,
            None => Scrubber::none(),
        };
        let started = Instant::now();
        let mut response = request.send().await.map_err(|e| {
            if e.is_timeout() {
                ConnectorError::Timeout(op.timeout)
            } else {
                ConnectorError::Transport(describe(&e))
            }
        })?;
        let status = response.status();
        let limit = self.max_response_bytes;
        if response.content_length().is_some_and(|n| n > limit as u64) {
            return Err(ConnectorError::ResponseTooLarge { limit });
        }
        let mut raw = Vec::new();
        loop {
            let chunk = response.chunk().await.map_err(|e| {
                if e.is_timeout() {
                    ConnectorError::Timeout(op.timeout)
                } else {
                    ConnectorError::Transport(describe(&e))
                }
            })?;
            let Some(chunk) = chunk else { break };
            if raw.len() + chunk.len() > limit {
                return Err(ConnectorError::ResponseTooLarge { limit });
            }
            raw.extend_from_slice(&chunk);
        }
        let elapsed = started.elapsed();
        let mut redacted = Vec::new();
        // An upstream that echoes the credential must not hand it to the agent or the log.
        let (mut body, echoed) = scrubber.response(&raw);
        if echoed {
            redacted.push(ECHOED.to_owned());
        }
        redacted.extend(redact_pointers(&mut body, &op.config.redact));
        Ok(Outcome {
            success: status.is_success(),
            status: Some(status.as_u16()),
            body,
            redacted,
            elapsed,
            credential: None,
        })
    }
}

/// A transport error in words, without the URL's query (which carries arguments).
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_connect() {
        "connection failed"
    } else if e.is_request() {
        "the request could not be sent"
    } else if e.is_body() || e.is_decode() {
        "the response body could not be read"
    } else {
        "HTTP error"
    };
    match e.url() {
        Some(url) => format!(
            "{kind} ({}://{}{})",
            url.scheme(),
            url.host_str().unwrap_or(""),
            url.path()
        ),
        None => kind.to_owned(),
    }
}
