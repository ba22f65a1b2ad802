//! What every operation of the OpenAPI document shares, added in one place so that no
//! route can forget it: the bearer security scheme, the path parameters its path names,
//! the operator's `tenant` query parameter on tenant-scoped routes, and the error
//! responses the daemon's common steps give (authentication, the body and query
//! extractors, tenant scoping, operator-only routes).

use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, Object, OpenApi, Ref, RefOr, Required, ResponseBuilder, Schema, Type,
};
use utoipa::Modify;

/// The name of the security scheme in the document.
const BEARER: &str = "bearer";

/// Routes only the operator may call (a tenant gets 404, as for an unknown route).
const OPERATOR_ONLY: &[(&str, &str)] = &[
    ("get", "/v1/host"),
    ("put", "/v1/host/settings"),
    ("post", "/v1/images/build"),
    ("post", "/v1/images/import"),
    ("delete", "/v1/images/{name}"),
    ("get", "/v1/audit"),
    ("get", "/metrics"),
    ("post", "/v1/tenants"),
    ("get", "/v1/tenants"),
    ("put", "/v1/tenants/{tenant}/quota"),
    ("post", "/v1/tenants/{tenant}/tokens"),
    ("get", "/v1/tenants/{tenant}/nic_ceiling"),
    ("put", "/v1/tenants/{tenant}/nic_ceiling"),
    ("delete", "/v1/tenants/{tenant}/nic_ceiling"),
    ("get", "/v1/tenants/{tenant}/agent"),
    ("put", "/v1/tenants/{tenant}/agent"),
    ("put", "/v1/vms/{name}/nics/{index}/limits/ceiling"),
    ("delete", "/v1/vms/{name}/nics/{index}/limits/ceiling"),
    ("get", "/v1/external"),
    ("put", "/v1/external"),
    ("get", "/v1/storage/devices"),
    ("post", "/v1/storage/devices"),
    ("post", "/v1/storage/devices/remove"),
    ("get", "/v1/tenants/{tenant}/storage_quota"),
    ("put", "/v1/tenants/{tenant}/storage_quota"),
];

/// Routes acting within one tenant: the operator names it with `?tenant=`.
fn tenant_scoped(path: &str) -> bool {
    path.starts_with("/v1/vms")
        || path.starts_with("/v1/networks")
        || path.starts_with("/v1/ids")
        || path.starts_with("/v1/addresses")
        || path.starts_with("/v1/firewall")
        || path.starts_with("/v1/volumes")
        || path.starts_with("/v1/backups")
        || path == "/v1/tokens"
}

pub struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API token: the operator's (state-dir/operator.token) or a \
                         tenant's (`hostel token create`).",
                    ))
                    .build(),
            ),
        );
        doc.security = Some(vec![SecurityRequirement::new::<_, _, String>(BEARER, [])]);
        for (path, item) in doc.paths.paths.iter_mut() {
            let ops = [
                ("get", item.get.as_mut()),
                ("put", item.put.as_mut()),
                ("post", item.post.as_mut()),
                ("delete", item.delete.as_mut()),
                ("patch", item.patch.as_mut()),
            ];
            for (method, op) in ops {
                if let Some(op) = op {
                    complete(path, method, op);
                }
            }
        }
        mark_optional_bodies(doc);
    }
}

fn string_schema() -> RefOr<Schema> {
    RefOr::T(Schema::Object(Object::with_type(Type::String)))
}

fn complete(path: &str, method: &str, op: &mut Operation) {
    let params = op.parameters.get_or_insert_with(Vec::new);
    let declared =
        |params: &Vec<utoipa::openapi::path::Parameter>, name: &str, at: &ParameterIn| {
            params
                .iter()
                .any(|p| p.name == name && &p.parameter_in == at)
        };
    let names: Vec<&str> = path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .collect();
    for name in &names {
        if !declared(params, name, &ParameterIn::Path) {
            params.push(
                ParameterBuilder::new()
                    .name(*name)
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .schema(Some(string_schema()))
                    .build(),
            );
        }
    }
    let scoped = tenant_scoped(path);
    if scoped && !declared(params, "tenant", &ParameterIn::Query) {
        params.push(
            ParameterBuilder::new()
                .name("tenant")
                .parameter_in(ParameterIn::Query)
                .required(Required::False)
                .description(Some(
                    "The tenant to act for: required of the operator, left out by a tenant \
                     (its token says which it is)",
                ))
                .schema(Some(string_schema()))
                .build(),
        );
    }
    let has_query = params.iter().any(|p| p.parameter_in == ParameterIn::Query);
    if params.is_empty() {
        op.parameters = None;
    }
    let operator_only = OPERATOR_ONLY.contains(&(method, path));
    let has_body = op.request_body.is_some();

    let mut errors = vec![("401", "missing or unknown API token")];
    if has_body || has_query {
        errors.push((
            "400",
            "a malformed or invalid request; `field` names the culprit",
        ));
    }
    if !names.is_empty() || scoped || operator_only {
        errors.push((
            "404",
            "not found, not the caller's, or (for a tenant) a route only the operator may call",
        ));
    }
    if has_body {
        errors.push(("413", "the request body is over 64 KiB"));
        errors.push(("415", "the request body is not sent as application/json"));
    }
    for (status, description) in errors {
        if !op.responses.responses.contains_key(status) {
            op.responses
                .responses
                .insert(status.to_string(), error_response(description));
        }
    }
}

/// An error answer: the API's error body.
pub fn error_response(description: &str) -> RefOr<utoipa::openapi::Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ApiErrorBody")))
                    .build(),
            )
            .build(),
    )
}

/// An empty body stands for `{}`, so a body is required exactly when `{}` would be
/// refused: when its schema has required fields (utoipa marks every body required).
fn mark_optional_bodies(doc: &mut OpenApi) {
    let Some(components) = doc.components.as_ref() else {
        return;
    };
    let has_required = |name: &str| -> bool {
        match components.schemas.get(name) {
            Some(RefOr::T(Schema::Object(o))) => !o.required.is_empty(),
            _ => true,
        }
    };
    let mut optional = Vec::new();
    for (path, item) in &doc.paths.paths {
        for (method, op) in [
            ("get", &item.get),
            ("put", &item.put),
            ("post", &item.post),
            ("delete", &item.delete),
            ("patch", &item.patch),
        ] {
            let Some(body) = op.as_ref().and_then(|o| o.request_body.as_ref()) else {
                continue;
            };
            let schema_ref = body
                .content
                .get("application/json")
                .and_then(|c| c.schema.as_ref());
            if let Some(RefOr::Ref(r)) = schema_ref {
                let name = r.ref_location.rsplit('/').next().unwrap_or("");
                if !has_required(name) {
                    optional.push((path.clone(), method));
                }
            }
        }
    }
    for (path, method) in optional {
        let Some(item) = doc.paths.paths.get_mut(&path) else {
            continue;
        };
        let op = match method {
            "get" => item.get.as_mut(),
            "put" => item.put.as_mut(),
            "post" => item.post.as_mut(),
            "delete" => item.delete.as_mut(),
            _ => item.patch.as_mut(),
        };
        if let Some(body) = op.and_then(|o| o.request_body.as_mut()) {
            body.required = Some(Required::False);
        }
    }
}
