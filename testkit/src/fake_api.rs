//! An in-memory fake of the Kubernetes API behind a tower-test mock `Service`, for controller
//! flows without a cluster (the pattern of kube's controller-rs `fixtures.rs`, with a store
//! instead of a fixed script so a scenario asserts on outcomes and on the recorded calls).
//!
//! It understands what the controllers send: GET of objects and lists, POST (409 when the
//! name exists), PUT (409 on a stale resourceVersion), DELETE, and PATCH as server-side
//! apply (deep merge; on `/status` the status is replaced), JSON merge patch, and the JSON
//! patch operations the finalizer helper uses. Every request is recorded.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::{Request, Response};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: String,
    pub body: Value,
}

impl Recorded {
    /// Whether this is a server-side apply by `manager` with force.
    pub fn is_forced_apply_by(&self, manager: &str) -> bool {
        self.method == "PATCH"
            && self.content_type.starts_with("application/apply-patch")
            && self.query.contains(&format!("fieldManager={manager}"))
            && self.query.contains("force=true")
    }
}

#[derive(Debug, Default)]
struct State {
    objects: BTreeMap<String, Value>,
    requests: Vec<Recorded>,
    version: u64,
}

/// The fake API server.
#[derive(Debug, Clone, Default)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
}

impl FakeApi {
    /// A client talking to a fresh fake, and the fake.
    pub fn start() -> (Client, FakeApi) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let fake = FakeApi::default();
        let server = fake.clone();
        tokio::spawn(async move {
            while let Some((request, respond)) = handle.next_request().await {
                let response = server.handle(request).await;
                respond.send_response(response);
            }
        });
        (Client::new(service, "default"), fake)
    }

    /// Stores an object at its API path.
    pub fn put(&self, path: &str, mut obj: Value) {
        let mut s = self.state.lock().unwrap();
        s.version += 1;
        obj["metadata"]["resourceVersion"] = json!(s.version.to_string());
        s.objects.insert(path.to_string(), obj);
    }

    /// Removes the object at `path` (as someone else deleting it would), returning it.
    pub fn remove(&self, path: &str) -> Option<Value> {
        self.state.lock().unwrap().objects.remove(path)
    }

    /// The object stored at `path`.
    pub fn get(&self, path: &str) -> Option<Value> {
        self.state.lock().unwrap().objects.get(path).cloned()
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Requests other than GET.
    pub fn writes(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.method != "GET")
            .collect()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.state.lock().unwrap().requests.clear();
    }

    async fn handle(&self, request: Request<Body>) -> Response<Body> {
        let method = request.method().to_string();
        let path = request.uri().path().to_string();
        let query = request.uri().query().unwrap_or_default().to_string();
        let content_type = request
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let bytes = request.into_body().collect_bytes().await.unwrap();
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .or_else(|_| serde_yaml::from_slice(&bytes))
                .unwrap_or(Value::Null)
        };
        let mut s = self.state.lock().unwrap();
        s.requests.push(Recorded {
            method: method.clone(),
            path: path.clone(),
            query,
            content_type: content_type.clone(),
            body: body.clone(),
        });
        let (code, value) = apply_request(&mut s, &method, &path, &content_type, body);
        Response::builder()
            .status(code)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&value).unwrap()))
            .unwrap()
    }
}

fn status(code: u16, reason: &str, message: &str) -> (u16, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "reason": reason, "message": message, "code": code}),
    )
}

/// Path segments after `namespaces/<ns>/` (or after the group/version for cluster scope).
fn shape(path: &str) -> usize {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segs.iter().position(|s| *s == "namespaces") {
        Some(i) => segs.len() - i - 2,
        None => 0,
    }
}

fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn json_patch(obj: &mut Value, ops: &Value) {
    for op in ops.as_array().cloned().unwrap_or_default() {
        let path = op["path"].as_str().unwrap_or_default();
        match (op["op"].as_str().unwrap_or_default(), path) {
            ("test", _) => {}
            ("add" | "replace", "/metadata/finalizers") => {
                obj["metadata"]["finalizers"] = op["value"].clone();
            }
            ("add", "/metadata/finalizers/-") => {
                let mut list = obj["metadata"]["finalizers"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                list.push(op["value"].clone());
                obj["metadata"]["finalizers"] = Value::Array(list);
            }
            ("remove", p) if p.starts_with("/metadata/finalizers/") => {
                let i: usize = p.rsplit('/').next().unwrap().parse().unwrap();
                if let Some(list) = obj["metadata"]["finalizers"].as_array_mut() {
                    list.remove(i);
                }
            }
            (other, p) => panic!("fake API: unsupported JSON patch {other} {p}"),
        }
    }
}

fn apply_request(
    s: &mut State,
    method: &str,
    path: &str,
    content_type: &str,
    body: Value,
) -> (u16, Value) {
    s.version += 1;
    let version = s.version.to_string();
    let depth = shape(path);
    match method {
        "GET" if depth == 1 => {
            let prefix = format!("{path}/");
            let items: Vec<Value> = s
                .objects
                .iter()
                .filter(|(k, _)| k.starts_with(&prefix) && !k[prefix.len()..].contains('/'))
                .map(|(_, v)| v.clone())
                .collect();
            (
                200,
                json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": version}, "items": items}),
            )
        }
        "GET" => match s.objects.get(path) {
            Some(o) => (200, o.clone()),
            None => status(404, "NotFound", &format!("{path} not found")),
        },
        "POST" => {
            let mut obj = body;
            let name = match obj["metadata"]["name"].as_str() {
                Some(n) => n.to_string(),
                None => {
                    let n = format!(
                        "{}{version}",
                        obj["metadata"]["generateName"].as_str().unwrap_or("obj-")
                    );
                    obj["metadata"]["name"] = json!(n);
                    n
                }
            };
            let key = format!("{path}/{name}");
            if s.objects.contains_key(&key) {
                return status(409, "AlreadyExists", &format!("{key} already exists"));
            }
            obj["metadata"]["resourceVersion"] = json!(version);
            obj["metadata"]["uid"] = json!(format!("uid-{version}"));
            s.objects.insert(key, obj.clone());
            (201, obj)
        }
        "PUT" => {
            let Some(current) = s.objects.get(path) else {
                return status(404, "NotFound", &format!("{path} not found"));
            };
            let sent = body["metadata"]["resourceVersion"].as_str();
            if sent.is_some() && sent != current["metadata"]["resourceVersion"].as_str() {
                return status(409, "Conflict", "the object has been modified");
            }
            let mut obj = body;
            obj["metadata"]["resourceVersion"] = json!(version);
            s.objects.insert(path.to_string(), obj.clone());
            (200, obj)
        }
        "DELETE" => match s.objects.remove(path) {
            Some(o) => (200, o),
            None => status(404, "NotFound", &format!("{path} not found")),
        },
        "PATCH" => {
            let (key, subresource) = match path.strip_suffix("/status") {
                Some(k) if depth == 3 => (k.to_string(), true),
                _ => (path.to_string(), false),
            };
            let existing = s.objects.get(&key).cloned();
            let mut obj = match (existing, content_type) {
                (Some(o), _) => o,
                (None, ct) if ct.starts_with("application/apply-patch") && !subresource => {
                    json!({"metadata": {"uid": format!("uid-{version}"), "creationTimestamp": "2026-01-01T00:00:00Z"}})
                }
                (None, _) => return status(404, "NotFound", &format!("{key} not found")),
            };
            if content_type.starts_with("application/apply-patch") {
                if subresource {
                    obj["status"] = body["status"].clone();
                } else {
                    merge(&mut obj, &body);
                }
            } else if content_type.starts_with("application/merge-patch") {
                merge(&mut obj, &body);
            } else if content_type.starts_with("application/json-patch") {
                json_patch(&mut obj, &body);
            } else {
                return status(415, "UnsupportedMediaType", content_type);
            }
            obj["metadata"]["resourceVersion"] = json!(version);
            s.objects.insert(key, obj.clone());
            (200, obj)
        }
        _ => status(405, "MethodNotAllowed", method),
    }
}
