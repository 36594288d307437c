//! GCP Vertex AI as a host: where its models are served and the envelope its Anthropic models
//! want. The bodies are the families' own (`gemini` for Google's models, `anthropic` for
//! Anthropic's); what Vertex adds is the path, which names the project, region, publisher,
//! model and method, and for Anthropic a body without `model` and with `anthropic_version`.

use serde_json::{Map, Value};

use super::{Target, TranslateError, percent_encode};
use crate::api::VersionedAPISchema;

/// The `anthropic_version` Anthropic models on Vertex take when the backend's schema names none.
pub const DEFAULT_ANTHROPIC_VERSION: &str = "vertex-2023-10-16";

/// Where a Vertex AI backend's models are: its `GCPCredentials` policy's project and region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VertexLocation<'a> {
    pub project: &'a str,
    pub region: &'a str,
}

/// Who publishes the models a backend serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publisher {
    Google,
    Anthropic,
}

impl Publisher {
    fn name(self) -> &'static str {
        match self {
            Publisher::Google => "google",
            Publisher::Anthropic => "anthropic",
        }
    }
}

/// The path of `method` (`generateContent`, `rawPredict`, ... with any query) on `model`:
/// `/v1/projects/{project}/locations/{region}/publishers/{publisher}/models/{model}:{method}`.
/// A backend's `prefix` replaces the `/v1` root (e.g. `v1beta1`). Without a location there is
/// no path: the backend needs a `GCPCredentials` policy.
pub fn path(
    target: Target<'_>,
    publisher: Publisher,
    model: &str,
    method: &str,
) -> Result<String, TranslateError> {
    let Some(VertexLocation { project, region }) = target.vertex else {
        return Err(TranslateError::Unconfigured(format!(
            "a {:?} backend needs a GCPCredentials BackendSecurityPolicy: its projectName and \
             region name the Vertex AI path",
            target.schema.name
        )));
    };
    let root = target
        .schema
        .prefix
        .as_deref()
        .map(|p| p.trim_matches('/'))
        .filter(|p| !p.is_empty())
        .unwrap_or("v1");
    Ok(format!(
        "/{root}/projects/{}/locations/{}/publishers/{}/models/{}:{method}",
        percent_encode(project),
        percent_encode(region),
        publisher.name(),
        model_segment(model),
    ))
}

/// A model name as one path segment. `@` stays as it is: Vertex names model versions with it
/// (`claude-sonnet-4-5@20250929`) and it needs no escaping in a path.
fn model_segment(model: &str) -> String {
    percent_encode(model).replace("%40", "@")
}

/// An Anthropic messages body as Vertex takes it: the model is in the path, and
/// `anthropic_version` (the schema's `version`, or [`DEFAULT_ANTHROPIC_VERSION`]) in the body.
pub fn anthropic_body(
    mut body: Map<String, Value>,
    backend: &VersionedAPISchema,
) -> Map<String, Value> {
    body.remove("model");
    with_version(body, backend)
}

/// A token counting body as Vertex takes it: Anthropic's with `anthropic_version`, and the
/// model (which stays in the body) without the `@default` or `@latest` alias that Vertex's
/// counting does not resolve.
pub fn count_tokens_body(
    mut body: Map<String, Value>,
    backend: &VersionedAPISchema,
) -> Map<String, Value> {
    if let Some(Value::String(model)) = body.get_mut("model") {
        let bare = model.trim_end_matches("@default").trim_end_matches("@latest").len();
        model.truncate(bare);
    }
    with_version(body, backend)
}

fn with_version(mut body: Map<String, Value>, backend: &VersionedAPISchema) -> Map<String, Value> {
    let version =
        backend.version.as_deref().filter(|v| !v.is_empty()).unwrap_or(DEFAULT_ANTHROPIC_VERSION);
    body.insert("anthropic_version".into(), Value::String(version.to_string()));
    body
}
