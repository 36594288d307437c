//! Incremental updates give what a fresh build gives: random sequences of object edits (apply
//! and delete of routes, backends, policies, secrets (API keys and certificates, usable or not),
//! pools, pods, services, Gateways with HTTP, HTTPS and unsupported listeners and hostnames,
//! GatewayClasses of aixds's controller or another's, and ReferenceGrants, whose references may
//! or may not resolve or be permitted), applied batch by batch as the run loop applies them
//! (`Change::apply_to`, then `Compiler::update` with the batch's affected keys), end in the same
//! graph, conditions and compiled resources (byte for byte, with the objects each comes from)
//! as building from the final objects, which itself gives the same in any order.

use std::collections::BTreeMap;

use aixds::api::{Kind, Object, ObjectKey};
use aixds::compile::{CompileOptions, Compiler, Tables};
use aixds::extproc::credentials::Credentials;
use aixds::graph::Graph;
use aixds::source::Change;
use aixds::xds::{SnapshotStore, TypeUrl};
use proptest::prelude::*;

use crate::builders::parse;

/// Names come from two letters in two namespaces, so that references often resolve, often do
/// not, and edits often hit an object that exists.
const NAMES: [&str; 2] = ["a", "b"];
const NAMESPACES: [&str; 2] = ["ns", "other"];

#[derive(Debug, Clone)]
pub enum Edit {
    Apply(Box<Object>),
    Delete(ObjectKey),
}

fn name() -> impl Strategy<Value = &'static str> {
    prop::sample::select(&NAMES[..])
}

fn namespace() -> impl Strategy<Value = &'static str> {
    prop::sample::select(&NAMESPACES[..])
}

/// A reference's target: a name in the referrer's namespace, or one in either namespace.
fn target() -> impl Strategy<Value = String> {
    (name(), prop::option::weighted(0.2, namespace())).prop_map(|(n, ns)| match ns {
        Some(ns) => format!("name: {n}, namespace: {ns}"),
        None => format!("name: {n}"),
    })
}

/// Hostnames listeners and routes may have: `None` is none.
fn hostname() -> impl Strategy<Value = Option<&'static str>> {
    prop::option::weighted(
        0.5,
        prop::sample::select(vec!["a.example.com", "*.example.com", "b.org"]),
    )
}

fn gateway() -> impl Strategy<Value = String> {
    let listener = (
        prop::sample::select(vec!["http", "web"]),
        prop::sample::select(vec!["HTTP", "HTTP", "HTTPS", "TCP"]),
        prop::sample::select(vec![8080u16, 8081]),
        hostname(),
        target(),
    )
        .prop_map(|(n, protocol, port, host, secret)| {
            let host = host.map(|h| format!(", hostname: \"{h}\"")).unwrap_or_default();
            let tls = match protocol {
                "HTTPS" => format!(", tls: {{certificateRefs: [{{{secret}}}]}}"),
                _ => String::new(),
            };
            format!("{{name: {n}, protocol: {protocol}, port: {port}{host}{tls}}}")
        });
    (
        name(),
        prop::collection::vec(listener, 1..3),
        prop::sample::select(vec!["mine", "theirs", "gone"]),
    )
        .prop_map(|(n, listeners, class)| {
            format!(
                "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: {n}}}\n\
                 spec: {{gatewayClassName: {class}, listeners: [{}]}}\n",
                listeners.join(", ")
            )
        })
}

/// The controller name the graphs of these tests are built with.
const CONTROLLER: &str = "aixds.io/gateway-controller";

fn gateway_class() -> impl Strategy<Value = String> {
    (prop::sample::select(vec!["mine", "theirs"]), prop::bool::ANY).prop_map(|(n, ours)| {
        let controller = if ours { CONTROLLER } else { "example.com/other" };
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: {n}}}\n\
             spec: {{controllerName: {controller}}}\n"
        )
    })
}

fn backend_ref() -> impl Strategy<Value = String> {
    let kind =
        prop::sample::select(vec!["", ", group: inference.networking.k8s.io, kind: InferencePool"]);
    (target(), kind, 0u32..3, prop::option::of(0u32..2)).prop_map(|(t, kind, weight, priority)| {
        let priority = priority.map(|p| format!(", priority: {p}")).unwrap_or_default();
        format!("{{{t}{kind}, weight: {weight}{priority}}}")
    })
}

/// A route's `parentRefs` (one Gateway, maybe one listener of it) and `hostnames` lines.
fn route_head(parent: Option<(&str, Option<&str>)>, host: Option<&str>) -> (String, String) {
    let parents = parent
        .map(|(p, section)| {
            let section = section.map(|s| format!(", sectionName: {s}")).unwrap_or_default();
            format!("  parentRefs: [{{name: {p}{section}}}]\n")
        })
        .unwrap_or_default();
    let hosts = host.map(|h| format!("  hostnames: [\"{h}\"]\n")).unwrap_or_default();
    (parents, hosts)
}

fn route() -> impl Strategy<Value = String> {
    let rule = (prop::sample::select(vec!["m0", "m1", "m2"]), prop::collection::vec(backend_ref(), 1..3))
        .prop_map(|(model, refs)| {
            format!(
                "  - matches: [{{headers: [{{name: x-ai-eg-model, value: {model}}}]}}]\n    backendRefs: [{}]\n",
                refs.join(", ")
            )
        });
    let parent = (name(), prop::option::weighted(0.3, prop::sample::select(vec!["http", "web"])));
    (name(), prop::option::of(parent), hostname(), prop::collection::vec(rule, 1..3)).prop_map(
        |(n, parent, host, rules)| {
            let (parents, hosts) = route_head(parent, host);
            format!(
                "apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIGatewayRoute\nmetadata: {{name: {n}}}\nspec:\n{parents}{hosts}  rules:\n{}",
                rules.concat()
            )
        },
    )
}

fn service_backend() -> impl Strategy<Value = String> {
    let target_kind = prop::sample::select(vec![
        "group: gateway.envoyproxy.io, kind: Backend",
        "group: inference.networking.k8s.io, kind: InferencePool",
        "",
    ]);
    let schema = prop::sample::select(vec!["OpenAI", "Anthropic", "AWSBedrock", "Cohere"]);
    (name(), schema, target_kind, target()).prop_map(|(n, schema, kind, target)| {
        let sep = if kind.is_empty() { "" } else { ", " };
        format!(
            "apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIServiceBackend\nmetadata: {{name: {n}}}\n\
             spec: {{schema: {{name: {schema}}}, backendRef: {{{target}{sep}{kind}}}}}\n"
        )
    })
}

fn envoy_backend() -> impl Strategy<Value = String> {
    let endpoint = prop::sample::select(vec![
        "{ip: {address: 10.0.0.1, port: 8080}}",
        "{ip: {address: 10.0.0.2, port: 9090}}",
        "{fqdn: {hostname: api.example.com, port: 443}}",
        "{ip: {address: not-an-ip, port: 1}}",
    ]);
    (name(), prop::collection::vec(endpoint, 0..3)).prop_map(|(n, endpoints)| {
        format!(
            "apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: Backend\nmetadata: {{name: {n}}}\nspec: {{endpoints: [{}]}}\n",
            endpoints.join(", ")
        )
    })
}

fn security_policy() -> impl Strategy<Value = String> {
    let kind =
        prop::sample::select(vec![("APIKey", "apiKey"), ("AnthropicAPIKey", "anthropicAPIKey")]);
    (name(), name(), kind, name()).prop_map(|(n, target, (policy, field), secret)| {
        format!(
            "apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: BackendSecurityPolicy\nmetadata: {{name: {n}}}\n\
             spec: {{targetRefs: [{{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: {target}}}], \
             type: {policy}, {field}: {{secretRef: {{name: {secret}}}}}}}\n"
        )
    })
}

fn secret() -> impl Strategy<Value = String> {
    let api_key =
        (name(), prop::sample::select(vec!["apiKey", "other"]), prop::sample::select(vec!["k1", "k2"]))
            .prop_map(|(n, key, value)| {
                format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: {n}}}\nstringData: {{{key}: {value}}}\n")
            });
    // A certificate for HTTPS listeners: a good one, or one whose key is missing.
    let certificate = (name(), prop::bool::weighted(0.8)).prop_map(|(n, whole)| {
        let (cert, key) = crate::gateway::certificate("a.example.com");
        let key = if whole { key } else { String::new() };
        let data = serde_json::json!({"tls.crt": cert, "tls.key": key});
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: {n}}}\ntype: kubernetes.io/tls\nstringData: {data}\n"
        )
    });
    prop_oneof![api_key, certificate]
}

/// A certificate of one of two pairs, with its own key or with the other pair's.
fn tls_secret() -> impl Strategy<Value = String> {
    (name(), 0..2usize, prop::bool::weighted(0.75)).prop_map(|(n, crt, matching)| {
        let key = if matching { crt } else { 1 - crt };
        let pairs = &*crate::sds::PAIRS;
        let crt = serde_json::to_string(&pairs[crt].0).unwrap();
        let key = serde_json::to_string(&pairs[key].1).unwrap();
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: {n}}}\ntype: kubernetes.io/tls\n\
             stringData: {{tls.crt: {crt}, tls.key: {key}}}\n"
        )
    })
}

/// A grant of Secrets, Services or pools (one, or all) to the Gateways or HTTPRoutes of a
/// namespace.
fn reference_grant() -> impl Strategy<Value = String> {
    let from = prop::sample::select(vec!["Gateway", "HTTPRoute"]);
    let to_kind = prop::sample::select(vec![
        "group: '', kind: Secret",
        "group: '', kind: Service",
        "group: inference.networking.k8s.io, kind: InferencePool",
    ]);
    (name(), from, namespace(), to_kind, prop::option::of(name())).prop_map(
        |(n, kind, from, to_kind, to)| {
            let to = to.map(|t| format!(", name: {t}")).unwrap_or_default();
            format!(
                "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {{name: {n}}}\n\
                 spec: {{from: [{{group: gateway.networking.k8s.io, kind: {kind}, namespace: {from}}}], \
                 to: [{{{to_kind}{to}}}]}}\n"
            )
        },
    )
}

fn pool() -> impl Strategy<Value = String> {
    (name(), name(), prop::sample::select(vec![8000u16, 8001]), name()).prop_map(
        |(n, app, port, epp)| {
            format!(
                "apiVersion: inference.networking.k8s.io/v1\nkind: InferencePool\nmetadata: {{name: {n}}}\n\
                 spec: {{selector: {{matchLabels: {{app: {app}}}}}, targetPorts: [{{number: {port}}}], \
                 endpointPickerRef: {{name: {epp}, port: {{number: 9002}}}}}}\n"
            )
        },
    )
}

fn pod() -> impl Strategy<Value = String> {
    let status = prop::sample::select(vec![
        "{podIP: 10.1.0.1}",
        "{podIP: 10.1.0.2, conditions: [{type: Ready, status: 'False'}]}",
        "{}",
    ]);
    (name(), name(), status).prop_map(|(n, app, status)| {
        format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {n}, labels: {{app: {app}}}}}\nstatus: {status}\n")
    })
}

fn service() -> impl Strategy<Value = String> {
    let ip = prop::sample::select(vec!["", ", clusterIP: 10.96.0.1", ", clusterIP: None"]);
    (name(), prop::sample::select(vec![9002u16, 9003]), ip).prop_map(|(n, port, ip)| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {n}}}\n\
             spec: {{ports: [{{name: p, port: {port}}}]{ip}}}\n"
        )
    })
}

/// Some endpoints of a Service, ready or not.
fn endpoint_slice() -> impl Strategy<Value = String> {
    let endpoint = prop::sample::select(vec![
        "{addresses: [10.2.0.1]}",
        "{addresses: [10.2.0.2], conditions: {ready: false}}",
        "{addresses: [not-an-ip]}",
    ]);
    (name(), name(), prop::collection::vec(endpoint, 0..3), prop::sample::select(vec!["p", "q"]))
        .prop_map(|(n, service, endpoints, port)| {
            format!(
                "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
                 metadata: {{name: {n}, labels: {{kubernetes.io/service-name: {service}}}}}\n\
                 addressType: IPv4\nports: [{{name: {port}, port: 8080}}]\nendpoints: [{}]\n",
                endpoints.join(", ")
            )
        })
}

fn http_backend_ref() -> impl Strategy<Value = String> {
    let kind = prop::sample::select(vec![
        ", port: 9002",
        ", port: 9003",
        "",
        ", group: inference.networking.k8s.io, kind: InferencePool",
        ", group: gateway.envoyproxy.io, kind: Backend",
        ", group: example.com, kind: Thing",
    ]);
    (target(), kind, 0u32..3)
        .prop_map(|(t, kind, weight)| format!("{{{t}{kind}, weight: {weight}}}"))
}

fn http_route() -> impl Strategy<Value = String> {
    let matched = prop::sample::select(vec![
        "",
        "matches: [{path: {type: PathPrefix, value: /v1}}], ",
        "matches: [{path: {type: Exact, value: /one}, method: GET}], ",
        "matches: [{path: {type: RegularExpression, value: '/r/[0-9]+'}}, {headers: [{name: x-a, value: b}]}], ",
        "matches: [{queryParams: [{name: q, value: v}]}], ",
        "matches: [{headers: [{name: 'bad name', value: b}]}], ",
    ]);
    let filter = prop::sample::select(vec![
        "",
        "filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-set, value: v}], remove: [x-r]}}], ",
        "filters: [{type: URLRewrite, urlRewrite: {hostname: h.example.com, path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}}], ",
        "filters: [{type: RequestRedirect, requestRedirect: {scheme: https, statusCode: 301}}], ",
        "filters: [{type: RequestMirror, requestMirror: {backendRef: {name: a, port: 9002}, percent: 50}}], ",
        "filters: [{type: CORS}], ",
    ]);
    let rule = (matched, filter, prop::collection::vec(http_backend_ref(), 0..3)).prop_map(
        |(matched, filter, refs)| {
            format!("  - {{{matched}{filter}backendRefs: [{}]}}\n", refs.join(", "))
        },
    );
    let parent = (name(), prop::option::weighted(0.3, prop::sample::select(vec!["http", "web"])));
    (name(), prop::option::weighted(0.9, parent), hostname(), prop::collection::vec(rule, 1..3))
        .prop_map(|(n, parent, host, rules)| {
            let (parents, hosts) = route_head(parent, host);
            format!(
                "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {n}}}\nspec:\n{parents}{hosts}  rules:\n{}",
                rules.concat()
            )
        })
}

/// A BackendTrafficPolicy on a Gateway, an HTTPRoute (which also names the AIGatewayRoute of
/// that name) or an AIGatewayRoute, with one of several rule shapes (one not accepted).
fn traffic_policy() -> impl Strategy<Value = String> {
    let target = prop::sample::select(vec![
        "group: gateway.networking.k8s.io, kind: Gateway",
        "group: gateway.networking.k8s.io, kind: HTTPRoute",
        "group: aigateway.envoyproxy.io, kind: AIGatewayRoute",
    ]);
    let rule = prop::sample::select(vec![
        "{clientSelectors: [{headers: [{name: x-tenant-id, type: Distinct}]}], limit: {requests: 100, unit: Hour}, cost: {request: {from: Number, number: 0}, response: {from: Metadata, metadata: {namespace: io.envoy.ai_gateway, key: total}}}}",
        "{clientSelectors: [{headers: [{name: x-ai-eg-model, value: m1}], sourceCIDR: {type: Distinct, value: 10.0.0.0/8}, methods: [{value: POST}], path: {value: /v1}}], limit: {requests: 5, unit: Second}, shared: true}",
        "{limit: {requests: 1, unit: Minute}, shadowMode: true}",
        "{limit: {requests: 1, unit: Fortnight}}",
    ]);
    (name(), target, name(), prop::collection::vec(rule, 1..3)).prop_map(|(n, target, t, rules)| {
        format!(
            "apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: BackendTrafficPolicy\nmetadata: {{name: {n}}}\n\
             spec: {{targetRefs: [{{{target}, name: {t}}}], rateLimit: {{type: Global, global: {{rules: [{}]}}}}}}\n",
            rules.join(", ")
        )
    })
}

/// A QuotaPolicy on an AIServiceBackend: per model (m0 or m1), with a bucket per tenant.
fn quota_policy() -> impl Strategy<Value = String> {
    let model = prop::sample::select(vec!["m0", "m1"]);
    let cost = prop::sample::select(vec![
        "",
        "costExpression: 'output_tokens * 2u', ",
        "costExpression: '((', ",
    ]);
    (name(), name(), model, cost).prop_map(|(n, target, model, cost)| {
        format!(
            "apiVersion: aigateway.envoyproxy.io/v1alpha1\nkind: QuotaPolicy\nmetadata: {{name: {n}}}\n\
             spec: {{targetRefs: [{{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: {target}}}], \
             serviceQuota: {{quota: {{limit: 1000, duration: 1h}}}}, \
             perModelQuotas: [{{modelName: {model}, quota: {{{cost}defaultBucket: {{limit: 100, duration: 1m}}, \
             bucketRules: [{{clientSelectors: [{{headers: [{{name: x-tenant-id, value: t}}]}}], quota: {{limit: 10, duration: 1m}}}}]}}}}]}}\n"
        )
    })
}

fn object() -> impl Strategy<Value = Object> {
    let yaml = prop_oneof![
        gateway(),
        gateway_class(),
        route(),
        route(),
        service_backend(),
        service_backend(),
        envoy_backend(),
        security_policy(),
        secret(),
        tls_secret(),
        reference_grant(),
        pool(),
        pod(),
        service(),
        http_route(),
        http_route(),
        endpoint_slice(),
        traffic_policy(),
        quota_policy(),
    ];
    (yaml, namespace()).prop_map(|(yaml, ns)| {
        parse(&yaml.replacen(
            "metadata: {name: ",
            &format!("metadata: {{namespace: {ns}, name: "),
            1,
        ))
    })
}

const KINDS: [Kind; 15] = [
    Kind::Gateway,
    Kind::GatewayClass,
    Kind::ReferenceGrant,
    Kind::AIGatewayRoute,
    Kind::AIServiceBackend,
    Kind::Backend,
    Kind::BackendSecurityPolicy,
    Kind::Secret,
    Kind::InferencePool,
    Kind::Pod,
    Kind::Service,
    Kind::HTTPRoute,
    Kind::EndpointSlice,
    Kind::BackendTrafficPolicy,
    Kind::QuotaPolicy,
];

fn edit() -> impl Strategy<Value = Edit> {
    let delete = (prop::sample::select(&KINDS[..]), namespace(), name())
        .prop_map(|(kind, ns, n)| Edit::Delete(ObjectKey::new(kind, ns, n)));
    prop_oneof![3 => object().prop_map(|o| Edit::Apply(Box::new(o))), 1 => delete]
}

/// Batches of edits: the first is the initial load, the rest arrive one batch at a time.
pub fn batches() -> impl Strategy<Value = Vec<Vec<Edit>>> {
    prop::collection::vec(prop::collection::vec(edit(), 1..5), 1..10)
}

/// What one graph and its compiled snapshot look like, in a form two builds can be compared by.
#[derive(Debug, PartialEq)]
pub struct Outcome {
    /// Every node (placeholders included) with its conditions.
    nodes: BTreeMap<String, String>,
    edges: Vec<String>,
    /// Type, name → (the resource's bytes, the objects it came from).
    resources: BTreeMap<(TypeUrl, String), (Vec<u8>, Vec<ObjectKey>)>,
    /// The ext_proc's runtime config and the picker's pools, entry by entry.
    tables: BTreeMap<String, String>,
}

/// Every entry of the tables, credentials by the headers they set (their `Debug` hides them).
fn describe(tables: &Tables) -> BTreeMap<String, String> {
    use aixds::extproc::runtime::Auth;
    let mut out = BTreeMap::new();
    let runtime = &tables.runtime;
    for (cluster, b) in &runtime.backends {
        let auth = match &b.auth {
            Auth::None => "none".to_string(),
            Auth::Inject(credential) => format!("{:?}", credential.headers(false)),
            Auth::Refuse(why) => format!("refused: {why}"),
        };
        let about = (&b.schema, &b.header_mutation, &b.body_mutation, &b.hostname, &b.gcp);
        out.insert(format!("backend {cluster}"), format!("{about:?} {:?} {auth}", b.aws_region));
    }
    for (id, r) in &runtime.route_backends {
        out.insert(format!("route backend {id}"), format!("{r:?}"));
    }
    for (cluster, q) in &runtime.quota_costs {
        out.insert(format!("quota {cluster}"), format!("{q:?}"));
    }
    out.insert("models".into(), runtime.models().collect::<Vec<_>>().join(","));
    out.insert("pools".into(), format!("{:?}", tables.pools));
    out
}

fn outcome(graph: &Graph, store: &SnapshotStore, tables: &Tables) -> Outcome {
    let nodes = graph
        .nodes()
        .into_iter()
        .map(|n| {
            let state = if n.is_placeholder() { "placeholder".to_string() } else { String::new() };
            (n.key.to_string(), format!("{state}{:?}", n.conditions()))
        })
        .collect();
    let mut edges: Vec<String> =
        graph.edges().into_iter().map(|(a, kind, b)| format!("{a} -{kind:?}-> {b}")).collect();
    edges.sort();
    let snapshot = store.load();
    let resources = snapshot
        .all()
        .map(|(t, r)| ((t, r.name.clone()), (r.body.value.clone(), r.sources.clone())))
        .collect();
    Outcome { nodes, edges, resources, tables: describe(tables) }
}

/// Runs the edits as the run loop does: the first batch then a full compile, each later batch
/// applied as changes and compiled from its affected keys. Returns the outcome and the final
/// objects.
pub fn incremental(batches: &[Vec<Edit>]) -> (Outcome, Vec<Object>) {
    let mut graph = Graph::with_controller(Some(CONTROLLER.into()));
    let mut compiler = Compiler::new(CompileOptions::default());
    let store = SnapshotStore::new();
    let credentials = Credentials::default();
    let mut tables = None;
    let change = |edit: &Edit| match edit {
        Edit::Apply(object) => Change::Apply { object: object.clone(), conflict: None },
        Edit::Delete(key) => Change::Delete(key.clone()),
    };
    for (i, batch) in batches.iter().enumerate() {
        let mut affected = Vec::new();
        for edit in batch {
            affected.extend(change(edit).apply_to(&mut graph).keys);
        }
        affected.sort();
        affected.dedup();
        let (updates, batch_tables) = if i == 0 {
            (compiler.full(&graph), compiler.tables(&graph, None, &credentials))
        } else {
            (
                compiler.update(&graph, &affected),
                compiler.tables(&graph, Some(&affected), &credentials),
            )
        };
        store.publish(updates);
        tables = Some(batch_tables);
    }
    let objects = graph.objects().map(|o| (**o).clone()).collect();
    let tables = tables.unwrap_or_else(|| Compiler::default().tables(&graph, None, &credentials));
    (outcome(&graph, &store, &tables), objects)
}

/// A graph built from `objects` in the order given, compiled in full.
pub fn fresh(objects: impl IntoIterator<Item = Object>) -> (Graph, Vec<aixds::xds::Update>) {
    let mut graph = Graph::with_controller(Some(CONTROLLER.into()));
    for object in objects {
        graph.apply(object);
    }
    let updates = Compiler::new(CompileOptions::default()).full(&graph);
    (graph, updates)
}

fn fresh_outcome(objects: impl IntoIterator<Item = Object>) -> Outcome {
    let (graph, updates) = fresh(objects);
    let store = SnapshotStore::new();
    store.publish(updates);
    let tables = Compiler::default().tables(&graph, None, &Credentials::default());
    outcome(&graph, &store, &tables)
}

fn assert_incremental_matches_fresh(batches: &[Vec<Edit>]) {
    let (got, objects) = incremental(batches);
    let want = fresh_outcome(objects.iter().cloned());
    assert_same("incremental", &got, "fresh", &want);
    let reversed = fresh_outcome(objects.into_iter().rev());
    assert_same("fresh in reverse order", &reversed, "fresh", &want);
}

fn assert_same(a_name: &str, a: &Outcome, b_name: &str, b: &Outcome) {
    if a == b {
        return;
    }
    let diff = |x: &BTreeMap<String, String>, y: &BTreeMap<String, String>| -> Vec<String> {
        x.iter().filter(|(k, v)| y.get(*k) != Some(v)).map(|(k, v)| format!("{k}: {v}")).collect()
    };
    let names = |o: &Outcome| -> BTreeMap<String, String> {
        o.resources
            .iter()
            .map(|((t, n), (bytes, src))| {
                (format!("{t} {n}"), format!("{} bytes from {src:?}", bytes.len()))
            })
            .collect()
    };
    let changed: Vec<String> = a
        .resources
        .iter()
        .filter(|(k, v)| b.resources.get(*k).is_some_and(|w| w != *v))
        .map(|((t, n), _)| format!("{t} {n}"))
        .collect();
    panic!(
        "{a_name} and {b_name} differ\nnodes only or different in {a_name}: {:#?}\nin {b_name}: {:#?}\n\
         edges {a_name}: {:#?}\nedges {b_name}: {:#?}\nresources only in {a_name}: {:#?}\nonly in {b_name}: {:#?}\nsame name, different bytes: {changed:#?}\n\
         tables only or different in {a_name}: {:#?}\nin {b_name}: {:#?}",
        diff(&a.nodes, &b.nodes),
        diff(&b.nodes, &a.nodes),
        a.edges.iter().filter(|e| !b.edges.contains(e)).collect::<Vec<_>>(),
        b.edges.iter().filter(|e| !a.edges.contains(e)).collect::<Vec<_>>(),
        diff(&names(a), &names(b)),
        diff(&names(b), &names(a)),
        diff(&a.tables, &b.tables),
        diff(&b.tables, &a.tables),
    );
}

proptest! {
    #![proptest_config(super::config(96))]

    /// 96 cases of up to 9 batches of up to 4 edits each.
    #[test]
    fn incremental_updates_match_a_fresh_build(batches in batches()) {
        assert_incremental_matches_fresh(&batches);
    }
}

/// Found by `incremental_updates_match_a_fresh_build`: a second Gateway on a port changes no
/// byte of its listener, only the objects it is compiled from, and the store kept the old list,
/// so a NACK of that listener would have been blamed on the first Gateway alone.
#[test]
fn a_listener_shared_by_a_second_gateway_names_both() {
    let gateway = |name: &str| {
        parse(&format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: ns}}\n\
             spec: {{gatewayClassName: mine, listeners: [{{name: http, protocol: HTTP, port: 8080}}]}}\n"
        ))
    };
    let class = parse(&format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: mine}}\n\
         spec: {{controllerName: {CONTROLLER}}}\n"
    ));
    let batches = vec![
        vec![Edit::Apply(Box::new(class)), Edit::Apply(Box::new(gateway("b")))],
        vec![Edit::Apply(Box::new(gateway("a")))],
    ];
    assert_incremental_matches_fresh(&batches);
    let (outcome, _) = incremental(&batches);
    let (_, sources) = &outcome.resources[&(TypeUrl::Listener, "listener-8080".to_string())];
    let names: Vec<&str> = sources.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
}
