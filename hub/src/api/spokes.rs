//! `/v1/spokes…`: the operator adds, lists and revokes spokes (admin
//! token); a new spoke enrols with its one-time join token. `/v1/fleets…`:
//! the operator makes, lists and revokes fleet tokens, each enrolling any
//! number of new spokes named `<prefix>-…`.

use ferry_common::body::Body;
use ferry_common::contract::{EnrolAnswer, EnrolRequest, TokenKind};
use ferry_common::problem::{ErrorCode, Problem};
use http::{Method, Request, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::auth::require_admin;
use super::http_util::{json, no_content, read_json};
use super::routes::Route;
use super::{ApiResult, AppState, SpokeSupport, store_problem};
use crate::store::{EnrolRefusal, valid_spoke_name};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddSpoke {
    name: String,
    /// Lifetime of the join token; default from `tunnel.join_token_ttl_secs`.
    #[serde(default, deserialize_with = "whole_seconds")]
    token_ttl_secs: Option<u64>,
    /// Networks its public addresses may lie in; given (or `public_hosts`
    /// given), they replace what an existing spoke was allowed.
    #[serde(default, deserialize_with = "present")]
    public_addrs: Option<Vec<String>>,
    /// Host names its probe URL may use.
    #[serde(default, deserialize_with = "present")]
    public_hosts: Option<Vec<String>>,
}

/// A member that, when present, holds a value: `null` is refused rather
/// than taken for absent.
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddFleet {
    prefix: String,
    /// Lifetime of the token; default [`FLEET_TTL_SECS`].
    #[serde(default, deserialize_with = "whole_seconds")]
    token_ttl_secs: Option<u64>,
    #[serde(default, deserialize_with = "present")]
    public_addrs: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    public_hosts: Option<Vec<String>>,
}

/// A fleet token's lifetime unless asked otherwise: 90 days.
pub const FLEET_TTL_SECS: u64 = 90 * 24 * 3600;

/// The longest a fleet token may live: 366 days.
pub const FLEET_TTL_MAX_SECS: u64 = 366 * 24 * 3600;

/// Checks a fleet token's prefix: its spokes are named `<prefix>-…`.
pub fn check_fleet_prefix(prefix: &str) -> Result<(), Problem> {
    if prefix.len() <= 40 && valid_spoke_name(&format!("{prefix}-x")) {
        Ok(())
    } else {
        Err(Problem::new(
            ErrorCode::InvalidField,
            "'prefix' must be 1 to 40 of a-z, 0-9 and '-', starting with a letter or digit",
        ))
    }
}

/// What a spoke (or a fleet's spokes) may announce, from a request's
/// `public_addrs` and `public_hosts`: `None` when neither was given.
fn allowance(
    addrs: Option<&[String]>,
    hosts: Option<&[String]>,
) -> Result<Option<crate::tunnel::allowed::AllowedPublic>, Problem> {
    if addrs.is_none() && hosts.is_none() {
        return Ok(None);
    }
    crate::tunnel::allowed::AllowedPublic::parse(
        addrs.unwrap_or_default(),
        hosts.unwrap_or_default(),
    )
    .map(Some)
    .map_err(|e| Problem::new(ErrorCode::InvalidField, e.to_string()))
}

fn whole_seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    super::http_util::whole_seconds(d, "token_ttl_secs")
}

fn support(state: &AppState) -> Result<&SpokeSupport, Problem> {
    state.spokes.as_ref().ok_or_else(|| {
        Problem::new(
            ErrorCode::TunnelDisabled,
            "this hub has no [tunnel] section",
        )
    })
}

/// Checks a name for a new spoke.
pub fn check_spoke_name(name: &str) -> Result<(), Problem> {
    if valid_spoke_name(name) {
        Ok(())
    } else {
        Err(Problem::new(
            ErrorCode::InvalidField,
            format!("'name' {}", ferry_common::proto::SPOKE_NAME_RULE),
        ))
    }
}

pub async fn handle(state: &AppState, route: Route, req: Request<Body>) -> ApiResult {
    if route == Route::SpokeEnrol {
        // The join token in the body is the credential.
        return enrol(state, support(state)?, req).await;
    }
    // Credentials first: without them, nobody learns whether this hub
    // takes spokes.
    require_admin(state, &req)?;
    let support = support(state)?;
    let store_err = |e| store_problem(state, e);
    match (route, req.method().clone()) {
        (Route::Spokes, Method::POST) => {
            let body: AddSpoke = read_json(req, state.max_json_body_bytes()).await?;
            check_spoke_name(&body.name)?;
            let allowed = allowance(body.public_addrs.as_deref(), body.public_hosts.as_deref())?;
            let ttl = body
                .token_ttl_secs
                .unwrap_or(support.token_ttl_secs)
                .clamp(1, 7 * 24 * 3600);
            let (token, expires_at) = state
                .store
                .add_spoke(&body.name, ttl as i64 * 1000, allowed.as_ref())
                .await
                .map_err(store_err)?;
            tracing::info!(spoke.id = %body.name, "issued a join token");
            Ok(json(
                StatusCode::CREATED,
                &json!({ "name": body.name, "join_token": token, "expires_at": expires_at }),
            ))
        }
        (Route::Spokes, _) => {
            let rows = state.store.list_spokes().await.map_err(store_err)?;
            let live = support.registry.snapshot();
            let spokes: Vec<_> = rows
                .into_iter()
                .map(|r| {
                    let mut v = serde_json::to_value(&r).expect("rows serialise");
                    let tunnel = live.get(&r.name);
                    v["tunnel"] = serde_json::to_value(tunnel).expect("state serialises");
                    v["steering"] = json!(state.steering.status_of_connected(
                        &r.name,
                        &support.registry,
                        tunnel.is_some()
                    ));
                    v
                })
                .collect();
            Ok(json(StatusCode::OK, &json!({ "spokes": spokes })))
        }
        (Route::Spoke(name), Method::DELETE) => {
            if !state.store.revoke_spoke(&name).await.map_err(store_err)? {
                return Err(Problem::new(
                    ErrorCode::SpokeNotFound,
                    format!("no spoke '{name}'"),
                ));
            }
            let was_connected = support.registry.disconnect(&name, "revoked");
            tracing::info!(spoke.id = %name, was_connected, "revoked a spoke");
            Ok(no_content())
        }
        (Route::Spoke(name), _) => {
            let rows = state.store.list_spokes().await.map_err(store_err)?;
            let row = rows.into_iter().find(|r| r.name == name).ok_or_else(|| {
                Problem::new(ErrorCode::SpokeNotFound, format!("no spoke '{name}'"))
            })?;
            let mut v = serde_json::to_value(&row).expect("rows serialise");
            let live = support.registry.snapshot();
            let tunnel = live.get(&name);
            v["tunnel"] = serde_json::to_value(tunnel).expect("state serialises");
            v["steering"] = json!(state.steering.status_of_connected(
                &name,
                &support.registry,
                tunnel.is_some()
            ));
            Ok(json(StatusCode::OK, &v))
        }
        (Route::Hubs, _) => hubs(state, support).await,
        (Route::Fleets, Method::POST) => {
            let body: AddFleet = read_json(req, state.max_json_body_bytes()).await?;
            check_fleet_prefix(&body.prefix)?;
            let allowed = allowance(body.public_addrs.as_deref(), body.public_hosts.as_deref())?
                .unwrap_or_default();
            let ttl = body
                .token_ttl_secs
                .unwrap_or(FLEET_TTL_SECS)
                .clamp(1, FLEET_TTL_MAX_SECS);
            let (id, token, expires_at) = state
                .store
                .add_fleet(&body.prefix, ttl as i64 * 1000, &allowed)
                .await
                .map_err(store_err)?;
            tracing::info!(fleet.id = %id, prefix = %body.prefix, "issued a fleet token");
            Ok(json(
                StatusCode::CREATED,
                &json!({
                    "id": id,
                    "prefix": body.prefix,
                    "fleet_token": token,
                    "expires_at": expires_at,
                    "allowed_public": allowed,
                }),
            ))
        }
        (Route::Fleets, _) => {
            let now = crate::store::now_ms();
            let fleets: Vec<_> = state
                .store
                .list_fleets()
                .await
                .map_err(store_err)?
                .into_iter()
                .map(|f| {
                    let mut v = serde_json::to_value(&f).expect("rows serialise");
                    v["state"] = json!(f.state(now));
                    v
                })
                .collect();
            Ok(json(StatusCode::OK, &json!({ "fleets": fleets })))
        }
        (Route::Fleet(id), _) => {
            if !state.store.revoke_fleet(&id).await.map_err(store_err)? {
                return Err(Problem::new(
                    ErrorCode::FleetNotFound,
                    format!("no fleet token '{id}'"),
                ));
            }
            tracing::info!(fleet.id = %id, "revoked a fleet token");
            Ok(no_content())
        }
        _ => Err(Problem::new(ErrorCode::RouteNotFound, "no such route")),
    }
}

/// `GET /v1/hubs`: the hubs sharing this hub's store (this one first),
/// each with the spokes it hears and their tunnels' round trips, and this
/// hub's view of the store. This hub's spokes come from its own tunnels;
/// the others' from what they shared for steering (PostgreSQL stores), as
/// of up to a second ago.
async fn hubs(state: &AppState, support: &SpokeSupport) -> ApiResult {
    let store_err = |e| store_problem(state, e);
    let me = support.hubs.id();
    let now = crate::store::now_ms();
    let since = now - crate::tunnel::HUB_GONE_AFTER_MS;
    let mut rows = state
        .store
        .live_hubs(crate::tunnel::HUB_GONE_AFTER_MS)
        .await
        .map_err(store_err)?;
    let heard = state
        .store
        .presence_by_hub(since)
        .await
        .map_err(store_err)?;
    // This hub first, listed even before its row is readable (or when it
    // cannot tell where its tunnels are): where they are is what it
    // announces, its row only says when it last did.
    let this = rows.iter().position(|h| h.id == me).map(|i| rows.remove(i));
    let addrs = support.hubs.me();
    let mut own = support.registry.steering_view();
    own.sort_by(|a, b| a.name.cmp(&b.name));
    let own: Vec<_> = own
        .into_iter()
        .map(|l| json!({ "name": l.name, "rtt_ms": l.rtt_ms }))
        .collect();
    let mut hubs = vec![json!({
        "id": me,
        "this": true,
        "tunnel_addr": addrs.map(|a| a.tunnel_addr.to_string()),
        "tunnel_tcp_addr": addrs.map(|a| a.tunnel_tcp_addr.to_string()),
        "last_seen": this.as_ref().map_or(now, |h| h.last_seen),
        "spokes": own,
        "store": {
            "backend": state.store.backend().to_string(),
            "primary_up": state.store.writable(),
            "replica_up": state.store.replica_answering(),
        },
    })];
    for h in rows {
        let spokes: Vec<_> = heard
            .iter()
            .filter(|(hub, _)| *hub == h.id)
            .map(|(_, p)| json!({ "name": p.spoke, "rtt_ms": p.rtt_ms }))
            .collect();
        hubs.push(json!({
            "id": h.id,
            "this": false,
            "tunnel_addr": h.tunnel_addr,
            "tunnel_tcp_addr": h.tunnel_tcp_addr,
            "last_seen": h.last_seen,
            "spokes": spokes,
        }));
    }
    Ok(json(StatusCode::OK, &json!({ "hubs": hubs })))
}

async fn enrol(state: &AppState, support: &SpokeSupport, req: Request<Body>) -> ApiResult {
    let body: EnrolRequest = read_json(req, state.max_json_body_bytes()).await?;
    let refused = |why: &str| Problem::new(ErrorCode::InvalidJoinToken, why);
    let explain = |why: EnrolRefusal| match why {
        EnrolRefusal::Unknown => refused("the token is unknown, was already used, or was revoked"),
        EnrolRefusal::Expired => refused("the token has expired; make a new one"),
        EnrolRefusal::Revoked => refused("the spoke was revoked"),
        EnrolRefusal::NotInFleet => {
            refused("the fleet token enrols only spokes named '<its prefix>-…'")
        }
        EnrolRefusal::Taken => Problem::new(
            ErrorCode::AlreadyExists,
            "a spoke of that name is enrolled already: a fleet token only adds spokes",
        ),
    };
    let fleet = TokenKind::of(&body.token) == Some(TokenKind::Fleet);
    let name = if fleet {
        let Some(name) = body.name.clone() else {
            return Err(Problem::new(
                ErrorCode::InvalidField,
                "'name' is required with a fleet token",
            ));
        };
        check_spoke_name(&name)?;
        state
            .store
            .check_fleet_token(&body.token, &name)
            .await
            .map_err(|e| store_problem(state, e))?
            .map_err(explain)?;
        name
    } else {
        let name = state
            .store
            .check_join_token(&body.token)
            .await
            .map_err(|e| store_problem(state, e))?
            .map_err(explain)?;
        if body.name.as_ref().is_some_and(|n| *n != name) {
            return Err(refused("the join token is for another spoke"));
        }
        name
    };
    let key = body
        .verified_key()
        .map_err(|e| Problem::new(ErrorCode::InvalidField, e.to_string()))?;
    let cert = support
        .ca
        .issue_spoke(&name, &key, support.spoke_cert_lifetime)
        .map_err(|e| Problem::new(ErrorCode::InvalidField, e.to_string()))?;
    if fleet {
        state
            .store
            .enrol_with_fleet(&body.token, &name, cert.der())
            .await
            .map_err(|e| store_problem(state, e))?
            .map_err(explain)?;
    } else if !state
        .store
        .complete_enrolment(&body.token, cert.der())
        .await
        .map_err(|e| store_problem(state, e))?
    {
        return Err(refused("the join token was used meanwhile"));
    }
    tracing::info!(spoke.id = %name, fleet, "enrolled a spoke");
    let new_cert = ring::digest::digest(&ring::digest::SHA256, cert.der());
    if support
        .registry
        .disconnect_other_certificate(&name, &[new_cert.as_ref()])
    {
        tracing::info!(spoke.id = %name, "closed the tunnel of the spoke's earlier certificate");
    }
    let answer = EnrolAnswer {
        name,
        certificate: cert.pem(),
        ca: support.ca.cert_pem().to_owned(),
        server_name: support.server_name.clone(),
        hubs: support.hubs.current(),
    };
    Ok(json(StatusCode::CREATED, &answer))
}
