//! The HTTP API: authentication of each request, then a thin layer over
//! [`writ_gateway::pipeline`].
//! Every error is JSON `{"error": code, "message": text}` with the right status; messages never
//! hold a token, key or credential.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};
use writ_core::{ActionId, EntryKind, NewEntry, Timestamp};
use writ_gateway::auth::passwords::{self, Authority, PasswordChangeError};
use writ_identity::apikey::{KeyKind, parse_presented};
use writ_identity::password::Password;
use writ_identity::{AgentId, GrantId, GrantSpec, UserId};
use writ_store::identity::{AgentRecord, ApiKeyRecord, GrantFilter, KeySubject, UserRecord};
use writ_store::{ActionFilter, ActionRow, ActionState, ApprovalRow, ApprovalState, EntryFilter};

use writ_gateway::Gateway;
use writ_gateway::pipeline::{self, ActionRequest, Caller, DecisionRequest, Outcome};

use crate::error::ApiError;

/// The OpenAPI 3.1 description of this API, served at `/openapi.json`.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Every route of the API.
pub fn router(gw: Arc<Gateway>) -> Router {
    let body_limit = gw.limits.max_body_bytes;
    Router::new()
        .route("/v1/actions", post(create_action).get(list_actions))
        .route("/v1/actions/{id}", get(show_action))
        .route("/v1/approvals", get(list_approvals))
        .route("/v1/approvals/{id}", get(show_approval))
        .route("/v1/approvals/{id}/decision", post(decide))
        .route("/v1/grants", post(create_grant).get(list_grants))
        .route("/v1/grants/{id}/revoke", post(revoke_grant))
        .route("/v1/admin/users", post(create_user).get(list_users))
        .route("/v1/users/me/password", post(set_own_password))
        .route("/v1/admin/users/{id}/password", delete(clear_user_password))
        .route("/v1/admin/agents", post(create_agent).get(list_agents))
        .route("/v1/admin/agents/{id}/disable", post(disable_agent))
        .route("/v1/admin/agents/{id}/enable", post(enable_agent))
        .route("/v1/admin/agents/{id}/keys", post(rotate_agent_key))
        .route("/v1/admin/vault", get(list_vault))
        .route("/v1/admin/policy", get(policy_status))
        .route("/v1/admin/policy/reload", post(policy_reload))
        .route(
            "/v1/audit/checkpoint",
            get(latest_checkpoint).post(make_checkpoint),
        )
        .route("/v1/audit/entries/{seq}", get(audit_entry))
        .route("/oauth/token", post(token))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/.well-known/oauth-authorization-server", get(as_metadata))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(gw.clone())
        .merge(crate::console::router(gw.clone()))
        .merge(crate::mcp::router(gw))
}

type ApiResult = Result<Response, ApiError>;

fn ok(status: u16, body: Value) -> ApiResult {
    Ok((
        StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
        axum::Json(body),
    )
        .into_response())
}

/// A request body within `[limits] max_body_bytes`. Over the limit the request is refused with
/// the API's JSON error (`413 body_too_large`) rather than axum's plain-text rejection.
struct RawBody(Bytes);

/// A `/v1` request body: [`RawBody`] sent as `application/json` (UTF-8). Any other content type,
/// or a body without one, is refused with `415 unsupported_media_type` before it is read, so
/// that a browser's form or a `text/plain` "simple request" can never reach the API.
struct JsonBody(Bytes);

impl FromRequest<Arc<Gateway>> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, gw: &Arc<Gateway>) -> Result<Self, ApiError> {
        let content_type = req.headers().get(header::CONTENT_TYPE).cloned();
        if let Some(value) = &content_type
            && !is_json(value)
        {
            gw.metrics.refused("unsupported_media_type");
            return Err(unsupported_media_type(
                value.to_str().unwrap_or("(not text)"),
            ));
        }
        let RawBody(bytes) = RawBody::from_request(req, gw).await?;
        if content_type.is_none() && !bytes.is_empty() {
            gw.metrics.refused("unsupported_media_type");
            return Err(unsupported_media_type("none"));
        }
        Ok(JsonBody(bytes))
    }
}

fn unsupported_media_type(got: &str) -> ApiError {
    let got: String = got.chars().take(100).collect();
    ApiError::new(
        415,
        "unsupported_media_type",
        format!(
            "the request body must be sent as `Content-Type: application/json` (UTF-8), not {got:?}"
        ),
    )
}

/// `application/json`, with at most a `charset=utf-8` parameter (any case, optionally quoted).
fn is_json(value: &HeaderValue) -> bool {
    let Ok(text) = value.to_str() else {
        return false;
    };
    let mut parts = text.split(';');
    let media = parts.next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("application/json") {
        return false;
    }
    parts.all(|p| match p.trim().split_once('=') {
        Some((name, v)) => {
            name.trim().eq_ignore_ascii_case("charset")
                && v.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
        }
        None => p.trim().is_empty(),
    })
}

impl FromRequest<Arc<Gateway>> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, gw: &Arc<Gateway>) -> Result<Self, ApiError> {
        match Bytes::from_request(req, gw).await {
            Ok(bytes) => Ok(RawBody(bytes)),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                gw.metrics.refused("body_too_large");
                Err(ApiError::new(
                    413,
                    "body_too_large",
                    format!(
                        "the request body is too large; the limit is {} bytes",
                        gw.limits.max_body_bytes
                    ),
                ))
            }
            Err(e) if crate::server::body_timed_out(&e) => {
                gw.metrics.refused("body_timeout");
                Err(ApiError::new(
                    408,
                    "request_timeout",
                    "the request body did not arrive in time; send it at once",
                ))
            }
            Err(e) => Err(ApiError::bad_request(format!(
                "the request body could not be read: {}",
                e.body_text()
            ))),
        }
    }
}

/// Parses a JSON body strictly, with an error that says what is wrong.
fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request("the request needs a JSON body"));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

// ---------------------------------------------------------------------------------------------
// Authentication

/// Who presented the request's bearer credential.
pub(crate) enum Who {
    Agent(AgentId),
    User(UserRecord),
    Delegated(Arc<writ_identity::DelegatedClaims>),
}

pub(crate) async fn authenticate(gw: &Gateway, headers: &HeaderMap) -> Result<Who, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            gw.metrics.refused("unauthenticated");
            ApiError::unauthenticated(
                "this endpoint needs `Authorization: Bearer <token>`: a delegated token, an agent API key or a user API key",
            )
        })?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .ok_or_else(|| {
            ApiError::unauthenticated("the Authorization header must use the Bearer scheme")
        })?;
    let refused = |why: &str| {
        gw.metrics.refused("unauthenticated");
        ApiError::unauthenticated(format!("the bearer token was refused: {why}"))
    };
    if let Ok((kind, hash)) = parse_presented(token) {
        let record = gw.db.api_key(&hash).await?;
        return match (kind, record) {
            (
                KeyKind::Agent,
                Some(ApiKeyRecord {
                    subject: KeySubject::Agent(agent),
                    ..
                }),
            ) => {
                live_agent(gw, &agent, None).await?;
                Ok(Who::Agent(agent))
            }
            (
                KeyKind::User,
                Some(ApiKeyRecord {
                    subject: KeySubject::User(user),
                    ..
                }),
            ) => match gw.db.user(&user).await? {
                Some(record) => Ok(Who::User(record)),
                None => Err(refused("its user no longer exists")),
            },
            _ => Err(refused("unknown or revoked API key")),
        };
    }
    // A delegated token: the agent it names (`act.sub`) is the presenter.
    let agent =
        claimed_actor(token).ok_or_else(|| refused("not an API key or a delegated token"))?;
    let claims = gw
        .verify_token(token, &agent, Timestamp::now())
        .map_err(|e| refused(&e.to_string()))?;
    live_agent(gw, &agent, Some(claims.key_generation)).await?;
    Ok(Who::Delegated(claims))
}

/// Refuses an agent that is disabled or gone, and a delegated token minted under an earlier
/// generation of the agent's credentials (its key was rotated since). Read from the store on
/// every request, so a disabling or a rotation on any replica takes effect at the next one.
async fn live_agent(
    gw: &Gateway,
    agent: &AgentId,
    generation: Option<u64>,
) -> Result<(), ApiError> {
    let refused = |code: &'static str, why: String| {
        gw.metrics.refused("unauthenticated");
        ApiError::new(401, code, why)
    };
    match gw.db.agent(agent).await? {
        None => Err(refused(
            "unauthenticated",
            format!("the bearer token was refused: agent {agent} does not exist"),
        )),
        Some(r) if r.disabled_at.is_some() => Err(refused(
            "agent_disabled",
            format!("agent {agent} is disabled; its owner or an admin can enable it again"),
        )),
        Some(r) if generation.is_some_and(|g| g != r.key_generation) => Err(refused(
            "unauthenticated",
            format!(
                "the bearer token was refused: it was minted with a credential agent {agent} no longer holds (its key was rotated); exchange a new token"
            ),
        )),
        Some(_) => Ok(()),
    }
}

/// The `act.sub` a JWT claims, read before verification only to know whom to verify it for.
fn claimed_actor(token: &str) -> Option<AgentId> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    AgentId::new(claims.get("act")?.get("sub")?.as_str()?).ok()
}

async fn user_only(gw: &Gateway, headers: &HeaderMap) -> Result<UserRecord, ApiError> {
    match authenticate(gw, headers).await? {
        Who::User(u) => Ok(u),
        _ => Err(ApiError::forbidden(
            "this endpoint is for users: present a user API key",
        )),
    }
}

async fn admin_only(gw: &Gateway, headers: &HeaderMap) -> Result<UserRecord, ApiError> {
    let user = user_only(gw, headers).await?;
    if !user.admin {
        return Err(ApiError::forbidden(format!(
            "user {} is not an admin",
            user.id
        )));
    }
    Ok(user)
}

/// The caller of an action: from a delegated token, or an agent key plus the body's grant id.
pub(crate) async fn caller(
    gw: &Gateway,
    who: Who,
    grant_id: Option<&str>,
) -> Result<Caller, ApiError> {
    let now = Timestamp::now();
    match who {
        Who::Delegated(claims) => {
            let detail = claims
                .grant()
                .map_err(|e| ApiError::unauthenticated(e.to_string()))?;
            if let Some(g) = grant_id
                && g != detail.grant_id.as_str()
            {
                return Err(ApiError::forbidden(format!(
                    "the token carries grant {}, not {g}",
                    detail.grant_id
                )));
            }
            let grant = gw.db.grant(&detail.grant_id).await?.ok_or_else(|| {
                ApiError::forbidden(format!("grant {} does not exist", detail.grant_id))
            })?;
            writ_identity::token::check_grant(&claims, &grant.grant, now)
                .map_err(|e| ApiError::forbidden(e.to_string()))?;
            Ok(Caller {
                agent: claims.act.sub.clone(),
                user: claims.sub.clone(),
                grant: detail.grant_id.clone(),
                auth: "delegated_token",
                token_id: Some(claims.jti.clone()),
                stored_grant: Some(grant),
            })
        }
        Who::Agent(agent) => {
            let grant_id = grant_id.ok_or_else(|| {
                ApiError::bad_request(
                    "with an agent API key, name the grant the action is made under: \"grant_id\"",
                )
            })?;
            let grant_id =
                GrantId::new(grant_id).map_err(|e| ApiError::bad_request(e.to_string()))?;
            let grant =
                gw.db.grant(&grant_id).await?.ok_or_else(|| {
                    ApiError::forbidden(format!("grant {grant_id} does not exist"))
                })?;
            if grant.grant.spec.agent != agent {
                return Err(ApiError::forbidden(format!(
                    "grant {grant_id} was given to agent {}, not to agent {agent}",
                    grant.grant.spec.agent
                )));
            }
            Ok(Caller {
                agent,
                user: grant.grant.spec.user.clone(),
                grant: grant_id,
                auth: "agent_key",
                token_id: None,
                stored_grant: Some(grant),
            })
        }
        Who::User(u) => Err(ApiError::forbidden(format!(
            "user {} cannot submit actions; agents do, with an agent API key or a delegated token",
            u.id
        ))),
    }
}

// ---------------------------------------------------------------------------------------------
// Actions

#[derive(Deserialize)]
struct WaitQuery {
    wait: Option<String>,
}

fn parse_wait(gw: &Gateway, wait: Option<&str>) -> Result<Duration, ApiError> {
    let Some(text) = wait else {
        return Ok(Duration::ZERO);
    };
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = number
        .parse()
        .map_err(|_| ApiError::bad_request(format!("wait={text:?}: use seconds, like wait=30s")))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n.saturating_mul(60),
        _ => {
            return Err(ApiError::bad_request(format!(
                "wait={text:?}: use seconds, like wait=30s"
            )));
        }
    };
    Ok(Duration::from_secs(secs.min(gw.limits.max_wait_secs)))
}

async fn create_action(
    State(gw): State<Arc<Gateway>>,
    Query(q): Query<WaitQuery>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> ApiResult {
    let wait = parse_wait(&gw, q.wait.as_deref())?;
    let who = authenticate(&gw, &headers).await?;
    let req: ActionRequest = parse(&body)?;
    let caller = caller(&gw, who, req.grant_id.as_deref()).await?;
    let mut outcome = pipeline::submit(&gw, &caller, req).await?;
    if !outcome.action.state.is_final()
        && !wait.is_zero()
        && let Some(action) = pipeline::wait_for(&gw, &outcome.action.id, wait).await?
    {
        outcome.approval = gw.db.approval_for_action(&action.id).await?;
        outcome.action = action;
    }
    ok(outcome.status(), action_view(&gw, &outcome))
}

/// The answer to an agent: state, verdict and reasons, result, approval, audit entries.
pub fn action_view(gw: &Gateway, outcome: &Outcome) -> Value {
    let a = &outcome.action;
    let verdict = a
        .result
        .as_ref()
        .and_then(|r| r.get("verdict"))
        .cloned()
        .unwrap_or(Value::Null);
    let mut v = json!({
        "action_id": a.id.as_str(),
        "status": a.state.as_str(),
        "connector": a.connector,
        "operation": a.operation,
        "agent": a.agent,
        "user": a.user,
        "grant": a.grant,
        "action_hash": a.action_hash,
        "verdict": verdict.get("verdict"),
        "reasons": verdict.get("reasons"),
        "policy_ids": verdict.get("policy_ids"),
        "bundle_version": verdict.get("bundle_version"),
        "audit": {"seqs": outcome.seqs},
        "created_at": a.created.to_string(),
        "updated_at": a.updated.to_string(),
    });
    if outcome.replayed {
        v["replayed"] = json!(true);
    }
    if let Some(result) = &a.result {
        if let Some(out) = result.get("outcome") {
            v["result"] = out.clone();
        }
        if let Some(err) = result.get("error") {
            v["error"] = err.clone();
        }
    }
    if let Some(approval) = &outcome.approval {
        v["approval"] = approval_summary(approval);
    }
    if !a.state.is_final() {
        v["wait_url"] = json!(format!("{}/v1/actions/{}?wait=30s", gw.public_url, a.id));
    }
    v
}

fn approval_summary(a: &ApprovalRow) -> Value {
    json!({
        "id": a.id,
        "state": a.state.as_str(),
        "approvers": a.approvers,
        "quorum": a.quorum,
        "expires_at": a.expires.to_string(),
        "reason": a.reason,
        "action_hash": a.action_hash,
    })
}

/// May `who` read this action? Its agent, its user, an approver of it, or an admin.
pub(crate) async fn may_read(
    gw: &Gateway,
    who: &Who,
    action: &ActionRow,
) -> Result<bool, ApiError> {
    Ok(match who {
        Who::Agent(agent) => agent.as_str() == action.agent,
        Who::Delegated(c) => c.act.sub.as_str() == action.agent,
        Who::User(u) => {
            u.admin
                || u.id.as_str() == action.user
                || match gw.db.approval_for_action(&action.id).await? {
                    Some(ap) => pipeline::may_approve(&ap.approvers, u.id.as_str(), &u.groups),
                    None => false,
                }
        }
    })
}

async fn show_action(
    State(gw): State<Arc<Gateway>>,
    Path(id): Path<String>,
    Query(q): Query<WaitQuery>,
    headers: HeaderMap,
) -> ApiResult {
    let who = authenticate(&gw, &headers).await?;
    let wait = parse_wait(&gw, q.wait.as_deref())?;
    let (status, view) = action_record(&gw, &who, &id, wait).await?;
    ok(status, view)
}

/// The whole record of one action as `who` may read it (else 404): the action, its approval
/// and decisions, every audit entry with its canonical bytes and inclusion proof, the signed
/// checkpoint the proofs lead to and the log's verifier key. The API and the console both
/// answer with this.
pub(crate) async fn action_record(
    gw: &Arc<Gateway>,
    who: &Who,
    id: &str,
    wait: Duration,
) -> Result<(u16, Value), ApiError> {
    let id = ActionId::new(id).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let not_found = || ApiError::not_found(format!("action {id} does not exist"));
    let action = gw.db.action(&id).await?.ok_or_else(not_found)?;
    if !may_read(gw, who, &action).await? {
        return Err(not_found());
    }
    let action = if !action.state.is_final() && !wait.is_zero() {
        pipeline::wait_for(gw, &id, wait)
            .await?
            .ok_or_else(not_found)?
    } else {
        action
    };
    let approval = gw.db.approval_for_action(&id).await?;
    let entries = gw
        .db
        .query(&EntryFilter {
            action_id: Some(id.as_str().to_owned()),
            limit: 1000,
            ..Default::default()
        })
        .await?;
    // Proofs against a signed checkpoint that covers every entry of the action.
    let mut checkpoint = gw.db.latest_checkpoint().await?;
    let needed = entries.last().map_or(0, |e| e.seq + 1);
    if checkpoint.as_ref().is_none_or(|c| c.tree_size < needed) {
        checkpoint = gw.checkpoint().await?;
    }
    let mut timeline = Vec::with_capacity(entries.len());
    for e in &entries {
        let decoded = e
            .decode()
            .map_err(|err| ApiError::internal(format!("entry {} is unreadable: {err}", e.seq)))?;
        let proof = match &checkpoint {
            Some(c) if c.tree_size > e.seq => Some(
                gw.db
                    .inclusion_proof(e.seq, c.tree_size)
                    .await?
                    .iter()
                    .map(|h| h.to_hex())
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        };
        timeline.push(json!({
            "seq": e.seq,
            "time": decoded.time.to_string(),
            "kind": decoded.kind.as_str(),
            "actor": decoded.actor,
            "payload": decoded.payload,
            "leaf_hash": e.leaf_hash.to_hex(),
            "canonical": String::from_utf8_lossy(&e.entry),
            "inclusion_proof": proof,
        }));
    }
    let decisions = match &approval {
        Some(a) => gw.db.decisions(&a.id).await?,
        None => Vec::new(),
    };
    let outcome = Outcome {
        action: action.clone(),
        approval: approval.clone(),
        seqs: entries.iter().map(|e| e.seq).collect(),
        replayed: false,
    };
    let mut view = action_view(gw, &outcome);
    view["request"] = action.request.clone();
    if let Some(a) = view.get_mut("approval") {
        a["decisions"] = json!(decisions.iter().map(|d| json!({
            "approver": d.approver, "decision": d.decision.as_str(), "comment": d.comment, "time": d.time.to_string()
        })).collect::<Vec<_>>());
    }
    view["entries"] = json!(timeline);
    view["checkpoint"] = match &checkpoint {
        Some(c) => json!({"size": c.tree_size, "root_hash": c.root_hash.to_hex(), "note": c.note}),
        None => Value::Null,
    };
    view["verifier_key"] = json!(gw.verifier_key());
    Ok((outcome.status(), view))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct ActionQuery {
    pub agent: Option<String>,
    pub user: Option<String>,
    pub connector: Option<String>,
    /// A state (`succeeded`, `denied`, ...) or a verdict (`allow`, `deny`, `approval`).
    pub state: Option<String>,
    pub verdict: Option<String>,
    pub since: Option<String>,
    pub before: Option<String>,
    pub limit: Option<u32>,
}

async fn list_actions(
    State(gw): State<Arc<Gateway>>,
    Query(q): Query<ActionQuery>,
    headers: HeaderMap,
) -> ApiResult {
    let who = authenticate(&gw, &headers).await?;
    let filter = action_filter(&q, &who)?;
    let rows = gw.db.actions(&filter).await?;
    let items: Vec<Value> = rows
        .iter()
        .map(|a| {
            action_view(
                &gw,
                &Outcome {
                    action: a.clone(),
                    approval: None,
                    seqs: Vec::new(),
                    replayed: false,
                },
            )
        })
        .collect();
    ok(200, json!({"actions": items}))
}

/// The store filter for an action search by `who`: the query's fields, with agents and
/// non-admin users restricted to their own actions. The API and the console's audit explorer
/// both search with this.
pub(crate) fn action_filter(q: &ActionQuery, who: &Who) -> Result<ActionFilter, ApiError> {
    let time = |t: &Option<String>, what: &str| {
        t.as_deref()
            .map(|s| {
                s.parse::<Timestamp>()
                    .map_err(|e| ApiError::bad_request(format!("{what}={s:?}: {e}")))
            })
            .transpose()
    };
    let mut states = Vec::new();
    if let Some(s) = &q.state {
        states.push(ActionState::parse(s).ok_or_else(|| {
            ApiError::bad_request(format!(
                "state={s:?}: one of {}",
                ActionState::ALL
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?);
    }
    if let Some(v) = &q.verdict {
        states.extend(match v.as_str() {
            "allow" => vec![
                ActionState::Succeeded,
                ActionState::Failed,
                ActionState::Executing,
                ActionState::OutcomeUnknown,
            ],
            "deny" => vec![ActionState::Denied, ActionState::Rejected],
            "approval" | "require_approval" => {
                vec![ActionState::PendingApproval, ActionState::Expired]
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "verdict={other:?}: one of allow, deny, approval"
                )));
            }
        });
    }
    let mut filter = ActionFilter {
        agent: q.agent.clone(),
        user: q.user.clone(),
        connector: q.connector.clone(),
        states,
        since: time(&q.since, "since")?,
        before: time(&q.before, "before")?,
        limit: q.limit.unwrap_or(100).clamp(1, 1000),
    };
    // Non-admins see their own.
    match &who {
        Who::Agent(a) => filter.agent = Some(a.as_str().to_owned()),
        Who::Delegated(c) => filter.agent = Some(c.act.sub.as_str().to_owned()),
        Who::User(u) if !u.admin => filter.user = Some(u.id.as_str().to_owned()),
        Who::User(_) => {}
    }
    Ok(filter)
}

// ---------------------------------------------------------------------------------------------
// Approvals

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApprovalQuery {
    state: Option<String>,
    limit: Option<u32>,
}

pub(crate) async fn approval_view(gw: &Gateway, a: &ApprovalRow) -> Result<Value, ApiError> {
    let mut v = approval_summary(a);
    v["action_id"] = json!(a.action_id.as_str());
    v["user"] = json!(a.user);
    if let Some(action) = gw.db.action(&a.action_id).await? {
        v["action"] = json!({
            "agent": action.agent,
            "user": action.user,
            "grant": action.grant,
            "connector": action.connector,
            "operation": action.operation,
            "args": action.request.get("args"),
            "intent": action.request.get("intent"),
            "rationale": action.request.get("rationale"),
            "status": action.state.as_str(),
            "policy_ids": action.result.as_ref().and_then(|r| r.pointer("/verdict/policy_ids")),
            "bundle_version": action.result.as_ref().and_then(|r| r.pointer("/verdict/bundle_version")),
        });
        // What the grant allows, so that an approver sees the authority the agent acts under.
        if let Some(id) = action.grant.as_deref().and_then(|g| GrantId::new(g).ok())
            && let Some(g) = gw.db.grant(&id).await?
        {
            v["action"]["grant_scope"] = json!({
                "actions": g.grant.spec.actions,
                "resources": g.grant.spec.resources,
                "expires_at": g.grant.spec.expires_at.to_string(),
                "revoked": g.grant.revoked_at.is_some(),
            });
        }
    }
    v["decisions"] = json!(gw.db.decisions(&a.id).await?.iter().map(|d| json!({
        "approver": d.approver, "decision": d.decision.as_str(), "comment": d.comment, "time": d.time.to_string()
    })).collect::<Vec<_>>());
    Ok(v)
}

async fn list_approvals(
    State(gw): State<Arc<Gateway>>,
    Query(q): Query<ApprovalQuery>,
    headers: HeaderMap,
) -> ApiResult {
    let user = user_only(&gw, &headers).await?;
    let state = match q.state.as_deref() {
        None | Some("all") => None,
        Some(s) => Some(ApprovalState::parse(s).ok_or_else(|| {
            ApiError::bad_request(format!(
                "state={s:?}: one of pending, approved, denied, expired, all"
            ))
        })?),
    };
    let items = visible_approvals(&gw, &user, state, q.limit.unwrap_or(100).clamp(1, 1000)).await?;
    ok(200, json!({"approvals": items}))
}

/// The approvals `user` may see (an admin, the user the agent acts for, or an approver), each
/// with `you_may_decide`: pending, not the user's own agent's action, and `user` an approver.
pub(crate) async fn visible_approvals(
    gw: &Gateway,
    user: &UserRecord,
    state: Option<ApprovalState>,
    limit: u32,
) -> Result<Vec<Value>, ApiError> {
    let mut items = Vec::new();
    for a in visible_approval_rows(gw, user, state, limit).await? {
        items.push(approval_item(gw, user, &a).await?);
    }
    Ok(items)
}

/// The rows of [`visible_approvals`], without their views.
pub(crate) async fn visible_approval_rows(
    gw: &Gateway,
    user: &UserRecord,
    state: Option<ApprovalState>,
    limit: u32,
) -> Result<Vec<ApprovalRow>, ApiError> {
    let mut rows = gw.db.approvals(state, limit).await?;
    rows.retain(|a| {
        user.admin
            || a.user == user.id.as_str()
            || pipeline::may_approve(&a.approvers, user.id.as_str(), &user.groups)
    });
    Ok(rows)
}

/// One approval as `user` sees it in a list: its view and whether they may decide it.
pub(crate) async fn approval_item(
    gw: &Gateway,
    user: &UserRecord,
    a: &ApprovalRow,
) -> Result<Value, ApiError> {
    let mut v = approval_view(gw, a).await?;
    v["you_may_decide"] = json!(
        a.state == ApprovalState::Pending
            && a.user != user.id.as_str()
            && pipeline::may_approve(&a.approvers, user.id.as_str(), &user.groups)
    );
    Ok(v)
}

async fn show_approval(
    State(gw): State<Arc<Gateway>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let user = user_only(&gw, &headers).await?;
    let not_found = || ApiError::not_found(format!("approval {id} does not exist"));
    let a = gw.db.approval(&id).await?.ok_or_else(not_found)?;
    if !(user.admin
        || a.user == user.id.as_str()
        || pipeline::may_approve(&a.approvers, user.id.as_str(), &user.groups))
    {
        return Err(not_found());
    }
    ok(200, approval_view(&gw, &a).await?)
}

async fn decide(
    State(gw): State<Arc<Gateway>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> ApiResult {
    let user = user_only(&gw, &headers).await?;
    let req: DecisionRequest = parse(&body)?;
    let outcome = pipeline::decide(&gw, &user.id, &id, req).await?;
    let mut view = action_view(&gw, &outcome);
    if let Some(a) = &outcome.approval {
        view["approval"] = approval_view(&gw, a).await?;
    }
    ok(200, view)
}

// ---------------------------------------------------------------------------------------------
// Identity: grants, users, agents, tokens

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct GrantRequest {
    #[serde(default)]
    pub user: Option<String>,
    pub agent: String,
    pub actions: Vec<String>,
    #[serde(default)]
    pub resources: Vec<String>,
    #[serde(default)]
    pub constraints: Vec<writ_identity::Constraint>,
    /// Seconds from now (default one day).
    #[serde(default)]
    pub expires_in: Option<u64>,
    #[serde(default)]
    pub max_uses: Option<u64>,
    #[serde(default)]
    pub sum_budget: Option<writ_identity::SumBudget>,
}

pub(crate) async fn admin_entry(gw: &Gateway, actor: &str, payload: Value) -> Result<(), ApiError> {
    let entry = NewEntry::new(
        ActionId::generate(),
        EntryKind::Admin,
        Some(actor.to_owned()),
        payload,
    )?;
    gw.db.append(vec![entry]).await?;
    Ok(())
}

fn grant_json(g: &writ_store::identity::StoredGrant) -> Value {
    let mut v = serde_json::to_value(&g.grant).unwrap_or(Value::Null);
    v["usage"] = json!({"uses": g.usage.uses, "sum": g.usage.sum.to_string()});
    v
}

async fn create_grant(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> ApiResult {
    let user = user_only(&gw, &headers).await?;
    let req: GrantRequest = parse(&body)?;
    let grant = issue_grant(&gw, &user, req).await?;
    ok(
        201,
        grant_json(&writ_store::identity::StoredGrant {
            grant,
            usage: Default::default(),
        }),
    )
}

/// Issues a grant on `user`'s authority (for themselves, or for anyone when an admin), and
/// logs it. The API and the console both grant through this.
pub(crate) async fn issue_grant(
    gw: &Gateway,
    user: &UserRecord,
    req: GrantRequest,
) -> Result<writ_identity::Grant, ApiError> {
    let now = Timestamp::now();
    let for_user = match req.user {
        Some(u) => UserId::new(u).map_err(|e| ApiError::bad_request(e.to_string()))?,
        None => user.id.clone(),
    };
    let agent = AgentId::new(req.agent).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let Some(agent_record) = gw.db.agent(&agent).await? else {
        return Err(ApiError::not_found(format!("agent {agent} does not exist")));
    };
    if gw.db.user(&for_user).await?.is_none() {
        return Err(ApiError::not_found(format!(
            "user {for_user} does not exist"
        )));
    }
    // A user lends their authority only to their own agents: otherwise another user's agent
    // could act for them, and that agent's owner would approve its actions. An admin may grant
    // across owners; the entry records it.
    let cross_owner = agent_record.owner != for_user;
    if cross_owner && !user.admin {
        return Err(ApiError::forbidden(format!(
            "agent {agent} belongs to user {}; a grant may name only an agent its user owns (an admin may grant otherwise)",
            agent_record.owner
        )));
    }
    let secs = req.expires_in.unwrap_or(86_400).clamp(1, 366 * 86_400);
    let expires_at =
        Timestamp::from_micros(now.as_micros() + i64::try_from(secs).unwrap_or(0) * 1_000_000)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let spec = GrantSpec {
        user: for_user,
        agent,
        actions: req.actions,
        resources: req.resources,
        constraints: req.constraints,
        expires_at,
        max_uses: req.max_uses,
        sum_budget: req.sum_budget,
    };
    let principal = writ_identity::Principal::User {
        id: user.id.clone(),
        admin: user.admin,
    };
    let grant = spec.authorize(&principal, now).map_err(|e| match e {
        writ_identity::IdentityError::Forbidden(m) => ApiError::forbidden(m),
        other => ApiError::bad_request(other.to_string()),
    })?;
    check_patterns(gw, &grant.spec.actions)?;
    gw.db.add_grant(&grant).await?;
    let mut event = json!({"event": "grant.created", "grant": grant});
    if cross_owner {
        event["agent_owner"] = json!(agent_record.owner.as_str());
    }
    admin_entry(gw, &format!("user:{}", user.id), event).await?;
    gw.notify_tools_changed();
    Ok(grant)
}

/// Refuses a grant pattern that covers no action of the serving policy bundle's schema: it would
/// grant nothing today, and would silently start granting whatever a later bundle names so.
/// A grant only ever narrows what policy allows: policy decides with the agent's user as its
/// parent, so a user cannot grant more than policy lets that user's agents do.
fn check_patterns(gw: &Gateway, patterns: &[String]) -> Result<(), ApiError> {
    let bundle = gw.policy.current();
    for p in patterns {
        if !bundle
            .actions()
            .any(|a| writ_identity::grant::action_matches(p, a))
        {
            return Err(ApiError::bad_request(format!(
                "action pattern {p:?} matches no action of the policy bundle's schema; name a declared action (connector.operation) or connector.*"
            )));
        }
    }
    Ok(())
}

async fn list_grants(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> ApiResult {
    let user = user_only(&gw, &headers).await?;
    let grants = visible_grants(&gw, &user).await?;
    ok(
        200,
        json!({"grants": grants.iter().map(grant_json).collect::<Vec<_>>()}),
    )
}

/// The grants `user` may see: their own, or every grant for an admin.
pub(crate) async fn visible_grants(
    gw: &Gateway,
    user: &UserRecord,
) -> Result<Vec<writ_store::identity::StoredGrant>, ApiError> {
    let filter = GrantFilter {
        user: (!user.admin).then(|| user.id.clone()),
        agent: None,
    };
    Ok(gw.db.grants(&filter).await?)
}

async fn revoke_grant(
    State(gw): State<Arc<Gateway>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let user = user_only(&gw, &headers).await?;
    let (id, revoked) = withdraw_grant(&gw, &user, &id).await?;
    ok(200, json!({"grant": id.as_str(), "revoked": revoked}))
}

/// Revokes grant `id` if `user` is its user or an admin, and logs it. Returns whether this call
/// revoked it (false when it already was).
pub(crate) async fn withdraw_grant(
    gw: &Gateway,
    user: &UserRecord,
    id: &str,
) -> Result<(GrantId, bool), ApiError> {
    let id = GrantId::new(id).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let grant = gw
        .db
        .grant(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("grant {id} does not exist")))?;
    if !user.admin && grant.grant.spec.user != user.id {
        return Err(ApiError::forbidden(format!(
            "only user {} (or an admin) can revoke grant {id}",
            grant.grant.spec.user
        )));
    }
    let revoked = gw.db.revoke_grant(&id, Timestamp::now()).await?;
    admin_entry(
        gw,
        &format!("user:{}", user.id),
        json!({"event": "grant.revoked", "grant": id.as_str()}),
    )
    .await?;
    gw.notify_tools_changed();
    Ok((id, revoked))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserRequest {
    id: String,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    admin: bool,
    #[serde(default)]
    groups: Vec<String>,
}

async fn issue_key(
    gw: &Gateway,
    subject: KeySubject,
    kind: KeyKind,
) -> Result<(String, String), ApiError> {
    let key =
        writ_identity::apikey::generate(kind).map_err(|e| ApiError::internal(e.to_string()))?;
    gw.db
        .add_api_key(
            &key.hash,
            &ApiKeyRecord {
                key_id: key.key_id.clone(),
                subject,
                created_at: Timestamp::now(),
                revoked_at: None,
            },
        )
        .await?;
    Ok((key.key.to_string(), key.key_id))
}

async fn create_user(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> ApiResult {
    let admin = admin_only(&gw, &headers).await?;
    let req: UserRequest = parse(&body)?;
    let id = UserId::new(req.id).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let record = UserRecord {
        display_name: req.display_name.unwrap_or_else(|| id.as_str().to_owned()),
        id: id.clone(),
        admin: req.admin,
        groups: req.groups,
        created_at: Timestamp::now(),
    };
    gw.db.add_user(&record).await?;
    let (key, key_id) = issue_key(&gw, KeySubject::User(id.clone()), KeyKind::User).await?;
    admin_entry(&gw, &format!("user:{}", admin.id), json!({"event": "user.created", "user": id.as_str(), "admin": record.admin, "groups": record.groups, "key_id": key_id})).await?;
    ok(
        201,
        json!({"user": record, "api_key": key, "key_id": key_id, "note": "the API key is shown once"}),
    )
}

async fn list_users(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> ApiResult {
    admin_only(&gw, &headers).await?;
    ok(200, json!({"users": gw.db.users().await?}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordRequest {
    password: String,
    #[serde(default)]
    current_password: Option<String>,
    /// If given, must be the key's user: a guard against the wrong key.
    #[serde(default)]
    user: Option<String>,
}

/// `POST /v1/users/me/password`: a user sets their own console password (the current one is
/// needed once one is set). Neither password ever reaches a log, an entry or an answer.
async fn set_own_password(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> ApiResult {
    let user = user_only(&gw, &headers).await?;
    if !gw.passwords {
        return Err(ApiError::forbidden(
            "password sign-in is switched off on this server (identity.passwords = false); sign in to the console with an API key or an identity provider",
        ));
    }
    let req: PasswordRequest = parse(&body)?;
    if let Some(claimed) = req.user.as_deref()
        && claimed != user.id.as_str()
    {
        return Err(ApiError::forbidden(format!(
            "this API key is user {}'s, not {claimed}'s: users set only their own password (an admin can clear another user's)",
            user.id
        )));
    }
    let authority = Authority::User {
        current: req.current_password.map(Password::new),
    };
    let new = Password::new(req.password);
    let now = Timestamp::now();
    let set_at = passwords::change(gw.db.as_ref(), &user.id, &new, authority, now)
        .await
        .map_err(password_refusal)?;
    admin_entry(
        &gw,
        &format!("user:{}", user.id),
        json!({"event": "user.password_set", "user": user.id.as_str()}),
    )
    .await?;
    ok(
        200,
        json!({"user": user.id.as_str(), "password_set_at": set_at}),
    )
}

pub(crate) fn password_refusal(e: PasswordChangeError) -> ApiError {
    match e {
        PasswordChangeError::Invalid(_) | PasswordChangeError::CurrentRequired(_) => {
            ApiError::bad_request(e.to_string())
        }
        PasswordChangeError::CurrentWrong => ApiError::forbidden(e.to_string()),
        PasswordChangeError::Locked(until) => {
            let secs = (until.as_micros() - Timestamp::now().as_micros()).max(0) / 1_000_000 + 1;
            let mut refusal = ApiError::new(429, "password_locked", e.to_string());
            refusal.retry_after = u64::try_from(secs).ok();
            refusal
        }
        PasswordChangeError::Hashing(why) => {
            tracing::error!(error = %why, "password hashing failed");
            ApiError::internal("the password could not be hashed; nothing was changed; retry")
        }
        PasswordChangeError::Busy => {
            let mut refusal = ApiError::unavailable(e.to_string());
            refusal.retry_after = Some(1);
            refusal
        }
        PasswordChangeError::Store(e) => e.into(),
    }
}

/// `DELETE /v1/admin/users/{id}/password`: an admin clears a user's password (forgotten
/// password); the user signs in with their API key until they set a new one.
async fn clear_user_password(
    State(gw): State<Arc<Gateway>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let admin = admin_only(&gw, &headers).await?;
    let id = UserId::new(id).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if gw.db.user(&id).await?.is_none() {
        return Err(ApiError::not_found(format!("user {id} does not exist")));
    }
    let cleared = gw.db.clear_password(&id).await?;
    admin_entry(
        &gw,
        &format!("user:{}", admin.id),
        json!({"event": "user.password_cleared", "user": id.as_str(), "cleared": cleared}),
    )
    .await?;
    ok(200, json!({"user": id.as_str(), "cleared": cleared}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentRequest {
    id: String,
    #[serde(default)]
    owner: Option<String>,
}

async fn create_agent(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> ApiResult {
    let user = user_only(&gw, &headers).await?;
    let req: AgentRequest = parse(&body)?;
    let id = AgentId::new(req.id).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let owner = match req.owner {
        Some(o) => UserId::new(o).map_err(|e| ApiError::bad_request(e.to_string()))?,
        None => user.id.clone(),
    };
    if owner != user.id && !user.admin {
        return Err(ApiError::forbidden(
            "only an admin can register an agent for another user",
        ));
    }
    if gw.db.user(&owner).await?.is_none() {
        return Err(ApiError::not_found(format!("user {owner} does not exist")));
    }
    let record = AgentRecord::new(id.clone(), owner, None, Timestamp::now());
    gw.db.add_agent(&record).await?;
    let (key, key_id) = issue_key(&gw, KeySubject::Agent(id.clone()), KeyKind::Agent).await?;
    admin_entry(&gw, &format!("user:{}", user.id), json!({"event": "agent.created", "agent": id.as_str(), "owner": record.owner.as_str(), "key_id": key_id})).await?;
    ok(
        201,
        json!({"agent": record, "api_key": key, "key_id": key_id, "note": "the API key is shown once"}),
    )
}

/// The agent `id` if `user` owns it or is an admin.
async fn own_agent(gw: &Gateway, user: &UserRecord, id: &str) -> Result<AgentRecord, ApiError> {
    let id = AgentId::new(id).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let agent = gw
        .db
        .agent(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("agent {id} does not exist")))?;
    if agent.owner != user.id && !user.admin {
        return Err(ApiError::forbidden(format!(
            "only agent {id}'s owner {} or an admin can change it",
            agent.owner
        )));
    }
    Ok(agent)
}

async fn disable_agent(
    State(gw): State<Arc<Gateway>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let user = user_only(&gw, &headers).await?;
    set_agent_enabled(&gw, &user, &id, false).await?;
    ok(200, json!({"agent": id, "enabled": false}))
}

async fn enable_agent(
    State(gw): State<Arc<Gateway>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let user = user_only(&gw, &headers).await?;
    set_agent_enabled(&gw, &user, &id, true).await?;
    ok(200, json!({"agent": id, "enabled": true}))
}

/// Disables or enables agent `id` on `user`'s authority (its owner or an admin) and logs it. A
/// disabled agent's keys and tokens are refused from the next request on, on every replica.
pub(crate) async fn set_agent_enabled(
    gw: &Gateway,
    user: &UserRecord,
    id: &str,
    enabled: bool,
) -> Result<(), ApiError> {
    let agent = own_agent(gw, user, id).await?;
    let at = (!enabled).then(Timestamp::now);
    gw.db.set_agent_disabled(&agent.id, at).await?;
    let event = if enabled {
        "agent.enabled"
    } else {
        "agent.disabled"
    };
    admin_entry(
        gw,
        &format!("user:{}", user.id),
        json!({"event": event, "agent": agent.id.as_str()}),
    )
    .await?;
    gw.notify_tools_changed();
    Ok(())
}

/// Replaces the agent's credential: every API key of it is revoked and one new key issued, and
/// the tokens minted with the old ones are refused from the next request on.
async fn rotate_agent_key(
    State(gw): State<Arc<Gateway>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let user = user_only(&gw, &headers).await?;
    let agent = own_agent(&gw, &user, &id).await?;
    if agent.public_key.is_some() {
        return Err(ApiError::conflict(format!(
            "agent {} authenticates with a public key; register a new one with `writ agents rotate-key --public-key` on the server's host",
            agent.id
        )));
    }
    let revoked = gw
        .db
        .revoke_api_keys(&KeySubject::Agent(agent.id.clone()), Timestamp::now())
        .await?;
    let (key, key_id) = issue_key(&gw, KeySubject::Agent(agent.id.clone()), KeyKind::Agent).await?;
    admin_entry(
        &gw,
        &format!("user:{}", user.id),
        json!({"event": "agent.key_rotated", "agent": agent.id.as_str(), "revoked_api_keys": revoked, "key_id": key_id}),
    )
    .await?;
    ok(
        201,
        json!({"agent": agent.id.as_str(), "revoked_api_keys": revoked, "api_key": key, "key_id": key_id, "note": "the API key is shown once"}),
    )
}

async fn list_agents(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> ApiResult {
    let user = user_only(&gw, &headers).await?;
    ok(200, json!({"agents": visible_agents(&gw, &user).await?}))
}

/// The agents `user` may see: their own, or every agent for an admin.
pub(crate) async fn visible_agents(
    gw: &Gateway,
    user: &UserRecord,
) -> Result<Vec<AgentRecord>, ApiError> {
    Ok(gw
        .db
        .agents()
        .await?
        .into_iter()
        .filter(|a| user.admin || a.owner == user.id)
        .collect())
}

async fn list_vault(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> ApiResult {
    admin_only(&gw, &headers).await?;
    let versions = gw.db.credential_versions(None).await?;
    ok(
        200,
        json!({"credentials": versions.iter().map(|v| json!({
        "name": v.reference.name.as_str(),
        "version": v.reference.version,
        "scope": v.reference.scope,
        "state": v.state.as_str(),
        "master_key_id": v.master_key_id,
        "created_at": v.created_at.to_string(),
        "retired_at": v.retired_at.map(|t| t.to_string()),
    })).collect::<Vec<_>>()}),
    )
}

async fn token(State(gw): State<Arc<Gateway>>, RawBody(body): RawBody) -> Response {
    let pairs: Vec<(String, String)> = match serde_urlencoded::from_bytes(&body) {
        Ok(p) => p,
        Err(_) => {
            return oauth_error(writ_identity::exchange::OAuthError::invalid_request(
                "the body must be application/x-www-form-urlencoded",
            ));
        }
    };
    let request = match writ_identity::exchange::TokenExchangeRequest::from_form(&pairs) {
        Ok(r) => r,
        Err(e) => return oauth_error(e),
    };
    match writ_gateway::auth::exchange_token(
        gw.db.as_ref(),
        &gw.issuer,
        &request,
        &gw.oidc,
        &gw.token_endpoint(),
        Timestamp::now(),
    )
    .await
    {
        Ok(response) => {
            let mut r = axum::Json(response).into_response();
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(e) => oauth_error(e),
    }
}

fn oauth_error(e: writ_identity::exchange::OAuthError) -> Response {
    let status = match e.error {
        "invalid_client" => StatusCode::UNAUTHORIZED,
        "server_error" => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    };
    (
        status,
        axum::Json(json!({"error": e.error, "error_description": e.error_description})),
    )
        .into_response()
}

async fn jwks(State(gw): State<Arc<Gateway>>) -> Response {
    axum::Json(gw.issuer.jwks()).into_response()
}

async fn as_metadata(State(gw): State<Arc<Gateway>>) -> Response {
    let mut v = writ_identity::token::authorization_server_metadata(&gw.public_url);
    v["token_endpoint"] = json!(gw.token_endpoint());
    v["jwks_uri"] = json!(format!("{}/.well-known/jwks.json", gw.public_url));
    axum::Json(v).into_response()
}

// ---------------------------------------------------------------------------------------------
// Policy and audit

async fn policy_status(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> ApiResult {
    admin_only(&gw, &headers).await?;
    let bundle = gw.policy.current();
    ok(
        200,
        json!({
            "version": bundle.version().to_string(),
            "dir": bundle.dir().map(|d| d.display().to_string()),
            "policies": bundle.policies().iter().map(|p| p.id.clone()).collect::<Vec<_>>(),
            "last_reload_error": gw.policy.last_reload_error(),
            "shadow": gw.policy.candidate().map(|c| c.version().to_string()),
        }),
    )
}

async fn policy_reload(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> ApiResult {
    let admin = admin_only(&gw, &headers).await?;
    let before = gw.policy.version().to_string();
    match gw.policy.reload() {
        Ok(outcome) => {
            let after = gw.policy.version().to_string();
            admin_entry(
                &gw,
                &format!("user:{}", admin.id),
                json!({"event": "policy.reloaded", "from": before, "to": after}),
            )
            .await?;
            ok(
                200,
                json!({"version": after, "previous": before, "outcome": format!("{outcome:?}")}),
            )
        }
        Err(e) => {
            admin_entry(&gw, &format!("user:{}", admin.id), json!({"event": "policy.reload_refused", "serving": before, "error": e.to_string()})).await?;
            Err(ApiError::new(
                422,
                "invalid_bundle",
                format!("the bundle was refused and {before} keeps serving: {e}"),
            ))
        }
    }
}

async fn latest_checkpoint(State(gw): State<Arc<Gateway>>) -> ApiResult {
    let Some(c) = gw.db.latest_checkpoint().await? else {
        return Err(ApiError::not_found("no checkpoint has been signed yet"));
    };
    ok(
        200,
        json!({"size": c.tree_size, "root_hash": c.root_hash.to_hex(), "note": c.note, "verifier_key": gw.verifier_key()}),
    )
}

async fn make_checkpoint(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> ApiResult {
    admin_only(&gw, &headers).await?;
    match gw.checkpoint().await? {
        Some(c) => ok(
            200,
            json!({"size": c.tree_size, "root_hash": c.root_hash.to_hex(), "note": c.note}),
        ),
        None => Err(ApiError::conflict(
            "the log is empty; there is nothing to checkpoint",
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProofQuery {
    size: Option<u64>,
}

async fn audit_entry(
    State(gw): State<Arc<Gateway>>,
    Path(seq): Path<u64>,
    Query(q): Query<ProofQuery>,
    headers: HeaderMap,
) -> ApiResult {
    admin_only(&gw, &headers).await?;
    let entry = gw
        .db
        .entries(seq, 1)
        .await?
        .into_iter()
        .next()
        .filter(|e| e.seq == seq)
        .ok_or_else(|| ApiError::not_found(format!("entry {seq} does not exist")))?;
    let size = match q.size {
        Some(s) => s,
        None => gw
            .db
            .latest_checkpoint()
            .await?
            .map_or(gw.db.size().await?, |c| c.tree_size.max(seq + 1)),
    };
    if size <= seq {
        return Err(ApiError::bad_request(format!(
            "size {size} does not include entry {seq}"
        )));
    }
    let proof = gw.db.inclusion_proof(seq, size).await?;
    ok(
        200,
        json!({
            "seq": seq,
            "canonical": String::from_utf8_lossy(&entry.entry),
            "leaf_hash": entry.leaf_hash.to_hex(),
            "tree_size": size,
            "inclusion_proof": proof.iter().map(|h| h.to_hex()).collect::<Vec<_>>(),
        }),
    )
}

// ---------------------------------------------------------------------------------------------
// Operations

async fn healthz() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

async fn readyz(State(gw): State<Arc<Gateway>>) -> Response {
    let store = gw.db.ping().await;
    let version = gw.policy.version().to_string();
    let ready = store.is_ok();
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "store": if store.is_ok() { "ok" } else { "unreachable" },
        "policy": version,
        // An upstream that is down fails only its own calls; Writ itself stays ready.
        "connectors": gw.connector_status(),
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

async fn metrics(State(gw): State<Arc<Gateway>>) -> Response {
    (
        [(header::CONTENT_TYPE, writ_gateway::metrics::CONTENT_TYPE)],
        gw.metrics.encode(),
    )
        .into_response()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint; see /openapi.json")
}
