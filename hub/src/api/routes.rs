//! Matching request paths to routes.
//!
//! The raw path is split before percent-decoding, so an encoded `/` inside an
//! id cannot change which route matches; object paths (everything after
//! `/files/`, `/list/` or `/folders/`) are decoded as a whole and validated
//! later by `ObjectPath`.

use http::Method;
use percent_encoding::percent_decode_str;
use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};

/// A matched route with its path parameters (percent-decoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/healthz`
    Healthz,
    /// `/readyz`
    Readyz,
    /// `/console` and its files (`/console/…`): the path after `/console`.
    Console(String),
    /// `/v1/accounts`
    Accounts,
    /// `/v1/accounts/{id}`
    Account(String),
    /// `/v1/accounts/{id}/keys`
    AccountKeys(String),
    /// `/v1/accounts/{id}/keys/{key}`
    AccountKey(String, String),
    /// `/v1/accounts/{id}/limits`
    AccountLimits(String),
    /// `/v1/connections`
    Connections,
    /// `/v1/connections/{conn}`
    Connection(String),
    /// `/v1/connections/{conn}/files/{path}`
    File(String, String),
    /// `/v1/connections/{conn}/list/{dir}` (dir may be empty)
    List(String, String),
    /// `/v1/connections/{conn}/folders/{path}`
    Folder(String, String),
    /// `/v1/connections/{conn}/copy`
    Copy(String),
    /// `/v1/connections/{conn}/move`
    Move(String),
    /// `/v1/events`
    Events,
    /// `/v1/spokes`
    Spokes,
    /// `/v1/spokes/enrol`
    SpokeEnrol,
    /// `/v1/spokes/probe-targets`
    ProbeTargets,
    /// `/v1/probe`
    Probe,
    /// `/v1/steering`
    Steering,
    /// `/v1/steering/reports`
    SteeringReports,
    /// `/v1/spokes/{name}`
    Spoke(String),
    /// `/v1/hubs`: the hubs sharing this hub's store.
    Hubs,
    /// `/v1/fleets`: fleet enrolment tokens.
    Fleets,
    /// `/v1/fleets/{id}`: one of them.
    Fleet(String),
    /// `/v1/connections/{conn}/uploads`: resumable uploads' creation.
    Uploads(String),
    /// `/v1/uploads/{id}`: one resumable upload.
    Upload(String),
    /// `/internal/v1/…`: for spokes, through their tunnel only.
    Internal(ferry_common::contract::InternalCall),
    /// `/v1/keys`: the calling account's API keys.
    Keys,
    /// `/v1/keys/{key}`: one of them.
    Key(String),
    /// `/v1/s3-keys`: the account's S3 access keys.
    S3Keys,
    /// `/v1/s3-keys/{id}`: one S3 access key.
    S3Key(String),
    /// `/v1/usage`: what accounts used.
    Usage,
    /// `/v1/webhooks`: the account's webhook endpoints.
    Webhooks,
    /// `/v1/webhooks/{id}`: one endpoint.
    Webhook(String),
    /// `/v1/webhooks/{id}/rotate-secret`
    WebhookRotate(String),
    /// `/v1/webhooks/{id}/deliveries`: its delivery log.
    WebhookDeliveries(String),
    /// `/v1/webhooks/{id}/deliveries/{msg}/redeliver`
    WebhookRedeliver(String, String),
}

/// The route template, as a bounded metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteLabel {
    /// Unmatched paths.
    Unmatched,
    Healthz,
    Readyz,
    Console,
    Accounts,
    Account,
    AccountKeys,
    AccountKey,
    AccountLimits,
    Connections,
    Connection,
    Files,
    List,
    Folders,
    Copy,
    Move,
    Events,
    Spokes,
    SpokeEnrol,
    Spoke,
    Fleets,
    Fleet,
    Hubs,
    ProbeTargets,
    Probe,
    Steering,
    SteeringReports,
    Uploads,
    Upload,
    Internal,
    Keys,
    Key,
    S3Keys,
    S3Key,
    Usage,
    Webhooks,
    Webhook,
    WebhookRotate,
    WebhookDeliveries,
    WebhookRedeliver,
    /// Requests to the S3 door.
    S3,
}

impl RouteLabel {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unmatched => "unmatched",
            Self::Healthz => "healthz",
            Self::Readyz => "readyz",
            Self::Console => "console",
            Self::Accounts => "accounts",
            Self::Account => "account",
            Self::AccountKeys => "account_keys",
            Self::AccountKey => "account_key",
            Self::AccountLimits => "account_limits",
            Self::Connections => "connections",
            Self::Connection => "connection",
            Self::Files => "files",
            Self::List => "list",
            Self::Folders => "folders",
            Self::Copy => "copy",
            Self::Move => "move",
            Self::Events => "events",
            Self::Spokes => "spokes",
            Self::SpokeEnrol => "spoke_enrol",
            Self::Spoke => "spoke",
            Self::Fleets => "fleets",
            Self::Fleet => "fleet",
            Self::Hubs => "hubs",
            Self::ProbeTargets => "probe_targets",
            Self::Probe => "probe",
            Self::Steering => "steering",
            Self::SteeringReports => "steering_reports",
            Self::Uploads => "uploads",
            Self::Upload => "upload",
            Self::Internal => "internal",
            Self::Keys => "keys",
            Self::Key => "key",
            Self::S3Keys => "s3_keys",
            Self::S3Key => "s3_key",
            Self::Usage => "usage",
            Self::Webhooks => "webhooks",
            Self::Webhook => "webhook",
            Self::WebhookRotate => "webhook_rotate",
            Self::WebhookDeliveries => "webhook_deliveries",
            Self::WebhookRedeliver => "webhook_redeliver",
            Self::S3 => "s3",
        }
    }
}

impl EncodeLabelValue for RouteLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        use std::fmt::Write as _;
        encoder.write_str(self.as_str())
    }
}

/// Every route's path template, as `docs/openapi.yaml` names it; a test
/// checks that the documentation lists exactly these, with the methods
/// [`Route::allowed`] gives.
pub const TEMPLATES: &[&str] = &[
    "/healthz",
    "/readyz",
    "/console",
    "/console/{file}",
    "/v1/accounts",
    "/v1/accounts/{account}",
    "/v1/accounts/{account}/keys",
    "/v1/accounts/{account}/keys/{key}",
    "/v1/accounts/{account}/limits",
    "/v1/keys",
    "/v1/keys/{key}",
    "/v1/s3-keys",
    "/v1/s3-keys/{id}",
    "/v1/connections",
    "/v1/connections/{conn}",
    "/v1/connections/{conn}/files/{path}",
    "/v1/connections/{conn}/list",
    "/v1/connections/{conn}/list/{dir}",
    "/v1/connections/{conn}/folders/{path}",
    "/v1/connections/{conn}/copy",
    "/v1/connections/{conn}/move",
    "/v1/events",
    "/v1/spokes",
    "/v1/spokes/enrol",
    "/v1/spokes/probe-targets",
    "/v1/spokes/{name}",
    "/v1/fleets",
    "/v1/hubs",
    "/v1/fleets/{id}",
    "/v1/probe",
    "/v1/steering",
    "/v1/steering/reports",
    "/v1/connections/{conn}/uploads",
    "/v1/uploads/{id}",
    "/v1/usage",
    "/v1/webhooks",
    "/v1/webhooks/{id}",
    "/v1/webhooks/{id}/rotate-secret",
    "/v1/webhooks/{id}/deliveries",
    "/v1/webhooks/{id}/deliveries/{msg}/redeliver",
];

/// What follows a collection's name: nothing (`all`), or `/` and one
/// item's id in one segment (`one(id)`, decoded).
fn collection(
    rest: &str,
    all: Route,
    one: fn(String) -> Route,
) -> Result<Option<Route>, BadEncoding> {
    Ok(match rest {
        "" => Some(all),
        r => match r.strip_prefix('/') {
            Some(id) if !id.is_empty() && !id.contains('/') => Some(one(decode(id)?)),
            _ => None,
        },
    })
}

/// Why a path could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadEncoding;

fn decode(s: &str) -> Result<String, BadEncoding> {
    percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| BadEncoding)
}

impl Route {
    /// Matches a raw request path; `Ok(None)` when no route matches.
    pub fn parse(path: &str) -> Result<Option<Route>, BadEncoding> {
        let Some(rest) = path.strip_prefix('/') else {
            return Ok(None);
        };
        match rest {
            "healthz" => return Ok(Some(Route::Healthz)),
            "readyz" => return Ok(Some(Route::Readyz)),
            _ => {}
        }
        if rest == "console" {
            return Ok(Some(Route::Console(String::new())));
        }
        if let Some(file) = rest.strip_prefix("console/") {
            return Ok(Some(Route::Console(file.to_owned())));
        }
        if let Some(op) = rest.strip_prefix("internal/v1/") {
            return Ok(ferry_common::contract::InternalCall::parse(op).map(Route::Internal));
        }
        let Some(rest) = rest.strip_prefix("v1/") else {
            return Ok(None);
        };
        match rest {
            "events" => return Ok(Some(Route::Events)),
            "usage" => return Ok(Some(Route::Usage)),
            "probe" => return Ok(Some(Route::Probe)),
            "steering" => return Ok(Some(Route::Steering)),
            "steering/reports" => return Ok(Some(Route::SteeringReports)),
            "hubs" => return Ok(Some(Route::Hubs)),
            _ => {}
        }
        if let Some(id) = rest.strip_prefix("uploads/") {
            return Ok((!id.is_empty() && !id.contains('/'))
                .then(|| decode(id))
                .transpose()?
                .map(Route::Upload));
        }
        if let Some(rest) = rest.strip_prefix("keys") {
            return collection(rest, Route::Keys, Route::Key);
        }
        if let Some(rest) = rest.strip_prefix("s3-keys") {
            return collection(rest, Route::S3Keys, Route::S3Key);
        }
        if let Some(rest) = rest.strip_prefix("fleets") {
            return collection(rest, Route::Fleets, Route::Fleet);
        }
        if let Some(rest) = rest.strip_prefix("webhooks") {
            let parts: Vec<&str> = rest.split('/').collect();
            let route = match parts.as_slice() {
                [""] => Route::Webhooks,
                ["", id] if !id.is_empty() => Route::Webhook(decode(id)?),
                ["", id, "rotate-secret"] if !id.is_empty() => Route::WebhookRotate(decode(id)?),
                ["", id, "deliveries"] if !id.is_empty() => Route::WebhookDeliveries(decode(id)?),
                ["", id, "deliveries", msg, "redeliver"] if !id.is_empty() && !msg.is_empty() => {
                    Route::WebhookRedeliver(decode(id)?, decode(msg)?)
                }
                _ => return Ok(None),
            };
            return Ok(Some(route));
        }
        if let Some(rest) = rest.strip_prefix("spokes") {
            return Ok(match rest {
                "" => Some(Route::Spokes),
                "/enrol" => Some(Route::SpokeEnrol),
                "/probe-targets" => Some(Route::ProbeTargets),
                r => match r.strip_prefix('/') {
                    Some(name) if !name.is_empty() && !name.contains('/') => {
                        Some(Route::Spoke(decode(name)?))
                    }
                    _ => None,
                },
            });
        }
        if let Some(rest) = rest.strip_prefix("accounts") {
            let parts: Vec<&str> = rest.split('/').collect();
            let route = match parts.as_slice() {
                [""] => Route::Accounts,
                ["", id] if !id.is_empty() => Route::Account(decode(id)?),
                ["", id, "keys"] if !id.is_empty() => Route::AccountKeys(decode(id)?),
                ["", id, "limits"] if !id.is_empty() => Route::AccountLimits(decode(id)?),
                ["", id, "keys", key] if !id.is_empty() && !key.is_empty() => {
                    Route::AccountKey(decode(id)?, decode(key)?)
                }
                _ => return Ok(None),
            };
            return Ok(Some(route));
        }
        let Some(rest) = rest.strip_prefix("connections") else {
            return Ok(None);
        };
        if rest.is_empty() {
            return Ok(Some(Route::Connections));
        }
        let Some(rest) = rest.strip_prefix('/') else {
            return Ok(None);
        };
        let (conn, tail) = match rest.split_once('/') {
            Some((c, t)) => (c, Some(t)),
            None => (rest, None),
        };
        if conn.is_empty() {
            return Ok(None);
        }
        let conn = decode(conn)?;
        let route = match tail {
            None => Route::Connection(conn),
            Some("copy") => Route::Copy(conn),
            Some("move") => Route::Move(conn),
            Some("list") => Route::List(conn, String::new()),
            Some("uploads") => Route::Uploads(conn),
            Some(t) => {
                if let Some(p) = t.strip_prefix("files/") {
                    Route::File(conn, decode(p)?)
                } else if let Some(p) = t.strip_prefix("list/") {
                    Route::List(conn, decode(p)?)
                } else if let Some(p) = t.strip_prefix("folders/") {
                    Route::Folder(conn, decode(p)?)
                } else {
                    return Ok(None);
                }
            }
        };
        Ok(Some(route))
    }

    /// The route's metrics label.
    pub fn label(&self) -> RouteLabel {
        match self {
            Route::Healthz => RouteLabel::Healthz,
            Route::Readyz => RouteLabel::Readyz,
            Route::Console(_) => RouteLabel::Console,
            Route::Accounts => RouteLabel::Accounts,
            Route::Account(_) => RouteLabel::Account,
            Route::AccountKeys(_) => RouteLabel::AccountKeys,
            Route::AccountKey(..) => RouteLabel::AccountKey,
            Route::AccountLimits(_) => RouteLabel::AccountLimits,
            Route::Connections => RouteLabel::Connections,
            Route::Connection(_) => RouteLabel::Connection,
            Route::File(..) => RouteLabel::Files,
            Route::List(..) => RouteLabel::List,
            Route::Folder(..) => RouteLabel::Folders,
            Route::Copy(_) => RouteLabel::Copy,
            Route::Move(_) => RouteLabel::Move,
            Route::Events => RouteLabel::Events,
            Route::Spokes => RouteLabel::Spokes,
            Route::SpokeEnrol => RouteLabel::SpokeEnrol,
            Route::Spoke(_) => RouteLabel::Spoke,
            Route::Fleets => RouteLabel::Fleets,
            Route::Fleet(_) => RouteLabel::Fleet,
            Route::Hubs => RouteLabel::Hubs,
            Route::ProbeTargets => RouteLabel::ProbeTargets,
            Route::Probe => RouteLabel::Probe,
            Route::Steering => RouteLabel::Steering,
            Route::SteeringReports => RouteLabel::SteeringReports,
            Route::Uploads(_) => RouteLabel::Uploads,
            Route::Upload(_) => RouteLabel::Upload,
            Route::Internal(_) => RouteLabel::Internal,
            Route::Keys => RouteLabel::Keys,
            Route::Key(_) => RouteLabel::Key,
            Route::S3Keys => RouteLabel::S3Keys,
            Route::S3Key(_) => RouteLabel::S3Key,
            Route::Usage => RouteLabel::Usage,
            Route::Webhooks => RouteLabel::Webhooks,
            Route::Webhook(_) => RouteLabel::Webhook,
            Route::WebhookRotate(_) => RouteLabel::WebhookRotate,
            Route::WebhookDeliveries(_) => RouteLabel::WebhookDeliveries,
            Route::WebhookRedeliver(..) => RouteLabel::WebhookRedeliver,
        }
    }

    /// The methods the route answers, for `405` and `Allow`.
    pub fn allowed(&self) -> &'static [Method] {
        match self {
            Route::Spokes | Route::Fleets => &[Method::GET, Method::HEAD, Method::POST],
            Route::SpokeEnrol | Route::SteeringReports => &[Method::POST],
            Route::ProbeTargets | Route::Probe | Route::Steering | Route::Hubs => {
                &[Method::GET, Method::HEAD]
            }
            Route::Spoke(_) => &[Method::GET, Method::HEAD, Method::DELETE],
            Route::Internal(_) => &[Method::POST],
            Route::Uploads(_) => &[Method::POST, Method::OPTIONS],
            Route::Upload(_) => &[Method::HEAD, Method::PATCH, Method::DELETE, Method::OPTIONS],
            Route::Healthz | Route::Readyz | Route::Console(_) | Route::Events | Route::Usage => {
                &[Method::GET, Method::HEAD]
            }
            Route::Account(_) => &[Method::GET, Method::HEAD, Method::DELETE],
            Route::AccountLimits(_) => &[Method::GET, Method::HEAD, Method::PUT],
            Route::List(..) => &[Method::GET, Method::HEAD],
            Route::Webhook(_) => &[Method::GET, Method::HEAD, Method::PATCH, Method::DELETE],
            Route::WebhookRotate(_) | Route::WebhookRedeliver(..) => &[Method::POST],
            Route::WebhookDeliveries(_) => &[Method::GET, Method::HEAD],
            Route::Accounts
            | Route::AccountKeys(_)
            | Route::Connections
            | Route::Keys
            | Route::S3Keys
            | Route::Webhooks => &[Method::GET, Method::HEAD, Method::POST],
            Route::AccountKey(..) | Route::Key(_) | Route::S3Key(_) | Route::Fleet(_) => {
                &[Method::DELETE]
            }
            Route::Connection(_) => &[Method::GET, Method::HEAD, Method::DELETE],
            Route::File(..) => &[Method::GET, Method::HEAD, Method::PUT, Method::DELETE],
            Route::Folder(..) => &[Method::POST, Method::DELETE],
            Route::Copy(_) | Route::Move(_) => &[Method::POST],
        }
    }
}

/// Parses a query string into decoded pairs (`+` is a space, as in forms).
pub fn query_pairs(query: Option<&str>) -> Result<Vec<(String, String)>, BadEncoding> {
    let Some(q) = query else {
        return Ok(Vec::new());
    };
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((decode(&k.replace('+', " "))?, decode(&v.replace('+', " "))?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(p: &str) -> Option<Route> {
        Route::parse(p).unwrap()
    }

    #[test]
    fn matches_the_contract_paths() {
        assert_eq!(parse("/healthz"), Some(Route::Healthz));
        assert_eq!(parse("/v1/accounts"), Some(Route::Accounts));
        assert_eq!(
            parse("/v1/accounts/acc_1/keys/key_2"),
            Some(Route::AccountKey("acc_1".into(), "key_2".into()))
        );
        assert_eq!(
            parse("/v1/connections/local"),
            Some(Route::Connection("local".into()))
        );
        assert_eq!(
            parse("/v1/connections/local/files/a%20b/c.txt"),
            Some(Route::File("local".into(), "a b/c.txt".into()))
        );
        assert_eq!(
            parse("/v1/connections/c/list"),
            Some(Route::List("c".into(), String::new()))
        );
        assert_eq!(
            parse("/v1/connections/c/list/"),
            Some(Route::List("c".into(), String::new()))
        );
        assert_eq!(
            parse("/v1/connections/c/list/docs"),
            Some(Route::List("c".into(), "docs".into()))
        );
        assert_eq!(
            parse("/v1/connections/c/folders/x/y"),
            Some(Route::Folder("c".into(), "x/y".into()))
        );
        assert_eq!(
            parse("/v1/connections/c/copy"),
            Some(Route::Copy("c".into()))
        );
        assert_eq!(parse("/v1/events"), Some(Route::Events));
        assert_eq!(parse("/v1/probe"), Some(Route::Probe));
        assert_eq!(parse("/v1/steering"), Some(Route::Steering));
        assert_eq!(parse("/v1/steering/reports"), Some(Route::SteeringReports));
        assert_eq!(parse("/v1/spokes/probe-targets"), Some(Route::ProbeTargets));
        assert_eq!(parse("/v1/spokes/fra1"), Some(Route::Spoke("fra1".into())));
        assert_eq!(parse("/v1/fleets"), Some(Route::Fleets));
        assert_eq!(
            parse("/v1/fleets/flt_1"),
            Some(Route::Fleet("flt_1".into()))
        );
        assert_eq!(parse("/v1/fleets/flt_1/x"), None);
        assert_eq!(parse("/v1/fleetsx"), None);
        assert_eq!(parse("/v1/hubs"), Some(Route::Hubs));
        assert_eq!(parse("/v1/hubs/x"), None);
        assert_eq!(parse("/v1/s3-keys"), Some(Route::S3Keys));
        assert_eq!(parse("/v1/keys"), Some(Route::Keys));
        assert_eq!(parse("/v1/keys/key_1"), Some(Route::Key("key_1".into())));
        assert_eq!(parse("/v1/keys/"), None);
        assert_eq!(parse("/v1/keysx"), None);
        assert_eq!(
            parse("/v1/s3-keys/FRYABC"),
            Some(Route::S3Key("FRYABC".into()))
        );
        assert_eq!(parse("/v1/webhooks"), Some(Route::Webhooks));
        assert_eq!(
            parse("/v1/webhooks/wh_1/deliveries/msg_2/redeliver"),
            Some(Route::WebhookRedeliver("wh_1".into(), "msg_2".into()))
        );
        assert_eq!(
            parse("/v1/webhooks/wh_1/rotate-secret"),
            Some(Route::WebhookRotate("wh_1".into()))
        );
        assert_eq!(parse("/v1/webhooks/wh_1/other"), None);
        assert_eq!(parse("/v1/webhooks/"), None);
    }

    #[test]
    fn everything_else_is_unmatched() {
        for p in [
            "/",
            "",
            "/v1",
            "/v1/accounts/",
            "/v1/connections/",
            "/v1/connections/c/other",
            "/v2/events",
            "/v1/accounts/a/b",
            "/metrics",
        ] {
            assert_eq!(parse(p), None, "{p}");
        }
        assert_eq!(
            Route::parse("/v1/connections/c/files/%ff"),
            Err(BadEncoding)
        );
    }

    #[test]
    fn encoded_dots_decode_for_validation_later() {
        assert_eq!(
            parse("/v1/connections/c/files/%2e%2e/etc/passwd"),
            Some(Route::File("c".into(), "../etc/passwd".into()))
        );
    }

    #[test]
    fn query_strings_decode() {
        let q = query_pairs(Some("limit=5&cursor=a%2Fb&x")).unwrap();
        assert_eq!(
            q,
            vec![
                ("limit".into(), "5".into()),
                ("cursor".into(), "a/b".into()),
                ("x".into(), String::new())
            ]
        );
    }
}
