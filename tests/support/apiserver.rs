//! kube-apiserver's admission role for `argoproj.io/v1alpha1` `workflows`: the order of operations
//! for POST, PUT and PATCH (mutating admission, resourceVersion check, validating admission,
//! compare-and-swap, retries), per shared/reference/apiserver-contract.md section 3.

use super::client::HttpsPool;
use super::match_conditions::MatchConditions;
use super::patch::{apply_json_patch, apply_merge_patch, differing_paths};
use super::review::{
    Hook, Operation, ReviewRequest, UserInfo, build_review, denial, options, verify_response,
};
use super::store::{Store, StoreError, resource_version};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// How many times one PATCH/PUT re-reads and retries after losing a compare-and-swap race. The real
/// server is bounded by the request deadline only; this keeps every test finite.
pub const MAX_ATTEMPTS: usize = 50;

/// An in-process stand-in for the webhook, for testing the harness itself.
pub type FakeWebhook = Arc<dyn Fn(Hook, &Value) -> (u16, Vec<u8>) + Send + Sync>;

#[derive(Clone)]
pub enum Transport {
    Https(Arc<HttpsPool>),
    Fake(FakeWebhook),
}

impl Transport {
    async fn call(&self, hook: Hook, review: &Value) -> Result<(u16, Vec<u8>), String> {
        match self {
            Transport::Https(pool) => {
                let body = serde_json::to_vec(review).map_err(|e| e.to_string())?;
                let res = pool.post_review(hook.path(), body).await?;
                Ok((res.status, res.body))
            }
            Transport::Fake(f) => Ok(f(hook, review)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Allowed,
    Denied {
        code: u16,
        reason: String,
        message: String,
    },
    /// The call failed in the API server's eyes (`failed calling webhook`).
    Failed(String),
}

/// One webhook call as the API server made and judged it.
#[derive(Clone)]
pub struct CallRecord {
    pub hook: Hook,
    /// 0 for the first mutating call, 1 for a reinvocation.
    pub round: u8,
    pub operation: Operation,
    pub uid: String,
    pub request: Value,
    pub http_status: Option<u16>,
    /// The decoded response body (when it decoded).
    pub response: Option<Value>,
    /// The decoded JSON Patch, when the response carried a non-empty one.
    pub patch: Option<Value>,
    /// Mutating calls: the object after the patch was applied.
    pub patched: Option<Value>,
    pub warnings: Vec<String>,
    pub audit: BTreeMap<String, String>,
    pub problems: Vec<String>,
    pub outcome: Outcome,
}

impl CallRecord {
    /// The raw `response` object of the AdmissionReview.
    pub fn response_field(&self, key: &str) -> Option<&Value> {
        self.response.as_ref()?.get("response")?.get(key)
    }

    /// True when the response has neither a `patch` nor a `patchType` key (SPEC 4.2 "no patch at all").
    pub fn has_no_patch_keys(&self) -> bool {
        self.response_field("patch").is_none() && self.response_field("patchType").is_none()
    }

    pub fn is_allowed(&self) -> bool {
        self.outcome == Outcome::Allowed
    }
}

impl fmt::Debug for CallRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallRecord")
            .field("hook", &self.hook)
            .field("round", &self.round)
            .field("operation", &self.operation)
            .field("http_status", &self.http_status)
            .field("outcome", &self.outcome)
            .field("patch", &self.patch)
            .field("warnings", &self.warnings)
            .field("audit", &self.audit)
            .field("problems", &self.problems)
            .finish()
    }
}

/// A successful write (or dry-run): the object as stored, and what the webhooks said on the way.
#[derive(Clone)]
pub struct Stored {
    pub object: Value,
    /// Warnings of every call, de-duplicated, in order (as the API server's warning recorder).
    pub warnings: Vec<String>,
    /// Audit annotations as `<hook>/<key>`; the first value set for a key wins.
    pub audit: BTreeMap<String, String>,
    pub calls: Vec<CallRecord>,
    /// How many times the API server ran admission for this request (more than 1 after lost races).
    pub attempts: usize,
}

/// The error the client would see.
#[derive(Clone)]
pub struct ApiError {
    pub code: u16,
    pub reason: String,
    pub message: String,
    pub warnings: Vec<String>,
    pub audit: BTreeMap<String, String>,
    pub calls: Vec<CallRecord>,
    pub attempts: usize,
}

impl fmt::Debug for Stored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stored")
            .field("name", &self.object.pointer("/metadata/name"))
            .field("labels", &self.object.pointer("/metadata/labels"))
            .field("annotations", &self.object.pointer("/metadata/annotations"))
            .field("warnings", &self.warnings)
            .field("audit", &self.audit)
            .field("calls", &self.calls)
            .finish()
    }
}

impl fmt::Debug for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiError")
            .field("code", &self.code)
            .field("reason", &self.reason)
            .field("message", &self.message)
            .field("warnings", &self.warnings)
            .field("audit", &self.audit)
            .field("calls", &self.calls)
            .finish()
    }
}

impl Stored {
    pub fn calls_to(&self, hook: Hook) -> Vec<&CallRecord> {
        self.calls.iter().filter(|c| c.hook == hook).collect()
    }

    /// The audit annotation `key` set by the validating webhook.
    pub fn validating_audit(&self, key: &str) -> Option<&str> {
        self.audit
            .get(&format!("{}/{key}", Hook::Validating.name()))
            .map(String::as_str)
    }
}

impl ApiError {
    pub fn calls_to(&self, hook: Hook) -> Vec<&CallRecord> {
        self.calls.iter().filter(|c| c.hook == hook).collect()
    }

    pub fn validating_audit(&self, key: &str) -> Option<&str> {
        self.audit
            .get(&format!("{}/{key}", Hook::Validating.name()))
            .map(String::as_str)
    }
}

/// A client's PATCH body.
#[derive(Debug, Clone)]
pub enum Patch {
    /// `application/merge-patch+json` (RFC 7386).
    Merge(Value),
    /// `application/json-patch+json` (RFC 6902, applied strictly).
    Json(Value),
}

/// What one API request accumulated across its webhook calls.
#[derive(Default)]
struct RequestCtx {
    attempts: usize,
    calls: Vec<CallRecord>,
    warnings: Vec<String>,
    audit: BTreeMap<String, String>,
}

impl RequestCtx {
    fn absorb(&mut self, call: CallRecord) -> CallRecord {
        for w in &call.warnings {
            if !self.warnings.contains(w) {
                self.warnings.push(w.clone());
            }
        }
        for (k, v) in &call.audit {
            // The API server keeps the first value and drops a different re-set (audit.AddAuditAnnotation).
            self.audit
                .entry(format!("{}/{k}", call.hook.name()))
                .or_insert_with(|| v.clone());
        }
        self.calls.push(call.clone());
        call
    }

    fn ok(self, object: Value) -> Stored {
        Stored {
            object,
            warnings: self.warnings,
            audit: self.audit,
            calls: self.calls,
            attempts: self.attempts,
        }
    }

    fn err(self, (code, reason, message): (u16, String, String)) -> ApiError {
        ApiError {
            code,
            reason,
            message,
            warnings: self.warnings,
            audit: self.audit,
            calls: self.calls,
            attempts: self.attempts,
        }
    }
}

struct Inner {
    store: Store,
    transport: Transport,
    reinvoke: AtomicBool,
    violations: Mutex<Vec<String>>,
    calls_made: AtomicUsize,
    /// A barrier and how many requests may still join it.
    read_gate: Mutex<Option<(Arc<tokio::sync::Barrier>, usize)>>,
    /// When set, hooks are called only when the configurations' matchConditions hold, as in a
    /// cluster. Off by default: the fast tests send every write to show the webhook is safe
    /// without the filter too.
    match_conditions: Mutex<Option<Arc<MatchConditions>>>,
}

/// The API server. Cheap to clone; clones share the store.
#[derive(Clone)]
pub struct ApiServer {
    inner: Arc<Inner>,
}

/// An API error on its way to the client: code, reason, message.
type Step<T> = Result<T, (u16, String, String)>;

fn api_err(code: u16, reason: &str, message: impl Into<String>) -> (u16, String, String) {
    (code, reason.to_string(), message.into())
}

impl ApiServer {
    pub fn new(transport: Transport) -> Self {
        ApiServer {
            inner: Arc::new(Inner {
                store: Store::new(),
                transport,
                reinvoke: AtomicBool::new(false),
                violations: Mutex::new(Vec::new()),
                calls_made: AtomicUsize::new(0),
                read_gate: Mutex::new(None),
                match_conditions: Mutex::new(None),
            }),
        }
    }

    /// Filters calls with the matchConditions of `deploy/base` from now on, as a cluster does.
    pub fn use_match_conditions(&self) {
        *self
            .inner
            .match_conditions
            .lock()
            .unwrap_or_else(|e| e.into_inner()) =
            Some(Arc::new(MatchConditions::from_deploy_base()));
    }

    /// Whether the configured matchConditions (if any) send `req` to its hook.
    fn matches(&self, req: &ReviewRequest) -> Step<bool> {
        let conditions = self
            .inner
            .match_conditions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let Some(conditions) = conditions else {
            return Ok(true);
        };
        let review = build_review("match-conditions", req);
        conditions.sends(req.hook, &review["request"]).map_err(|e| {
            api_err(
                403,
                "Forbidden",
                format!(
                    "failed to evaluate the match conditions of {}: {e}",
                    req.hook.name()
                ),
            )
        })
    }

    pub fn with_fake(f: impl Fn(Hook, &Value) -> (u16, Vec<u8>) + Send + Sync + 'static) -> Self {
        Self::new(Transport::Fake(Arc::new(f)))
    }

    /// Calls the mutating webhook a second time (new uid) after each first call, with the patched
    /// object, and records a violation when that second call changes anything.
    pub fn set_reinvocation(&self, on: bool) {
        self.inner.reinvoke.store(on, Ordering::SeqCst);
    }

    /// Makes the next `n` PATCH/PUT requests wait after their first read until all `n` have read,
    /// so they all start from the same stored version and race for real. Later requests pass.
    pub fn gate_first_reads(&self, n: usize) {
        let gate = (Arc::new(tokio::sync::Barrier::new(n)), n);
        *self
            .inner
            .read_gate
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(gate);
    }

    async fn pass_read_gate(&self) {
        let barrier = {
            let mut gate = self
                .inner
                .read_gate
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            match gate.as_mut() {
                Some((barrier, left)) => {
                    let barrier = barrier.clone();
                    *left -= 1;
                    if *left == 0 {
                        *gate = None;
                    }
                    Some(barrier)
                }
                None => None,
            }
        };
        let Some(barrier) = barrier else { return };
        let waited = tokio::time::timeout(std::time::Duration::from_secs(20), barrier.wait()).await;
        if waited.is_err() {
            self.violation(
                "harness: not every gated request reached the read gate within 20 s".into(),
            );
        }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn calls_made(&self) -> usize {
        self.inner.calls_made.load(Ordering::SeqCst)
    }

    /// Every harness-level failure so far: responses the API server rejects or partly drops, and
    /// reinvocations that changed the object.
    pub fn violations(&self) -> Vec<String> {
        self.inner
            .violations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    #[track_caller]
    pub fn assert_no_violations(&self) {
        let v = self.violations();
        assert!(
            v.is_empty(),
            "webhook contract violations:\n  {}",
            v.join("\n  ")
        );
    }

    fn violation(&self, text: String) {
        self.inner
            .violations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(text);
    }

    /// One webhook call: envelope, transport, verification and (mutating) strict patch application.
    pub async fn call(&self, req: &ReviewRequest) -> CallRecord {
        self.call_round(req, 0).await
    }

    async fn call_round(&self, req: &ReviewRequest, round: u8) -> CallRecord {
        self.inner.calls_made.fetch_add(1, Ordering::SeqCst);
        let uid = uuid::Uuid::new_v4().to_string();
        let review = build_review(&uid, req);
        let mut record = CallRecord {
            hook: req.hook,
            round,
            operation: req.operation,
            uid: uid.clone(),
            request: review.clone(),
            http_status: None,
            response: None,
            patch: None,
            patched: None,
            warnings: Vec::new(),
            audit: BTreeMap::new(),
            problems: Vec::new(),
            outcome: Outcome::Allowed,
        };
        let (status, body) = match self.inner.transport.call(req.hook, &review).await {
            Ok(answer) => answer,
            Err(e) => {
                return self.fail(record, format!("failed to call webhook: {e}"));
            }
        };
        record.http_status = Some(status);
        record.response = serde_json::from_slice(&body).ok();
        let verified = match verify_response(req.hook, &uid, status, &body) {
            Ok(v) => v,
            Err(e) => return self.fail(record, e),
        };
        record.warnings = verified.warnings;
        record.audit = verified.audit;
        record.problems = verified.problems;
        for p in &record.problems {
            self.violation(format!(
                "{} {} call: {p}",
                req.hook.name(),
                req.operation.as_str()
            ));
        }
        if req.hook == Hook::Mutating {
            match &verified.patch {
                None => record.patched = Some(req.object.clone()),
                Some(_) if req.object.is_null() => {
                    return self.fail(
                        record,
                        "the webhook returned a patch for an operation without an object".into(),
                    );
                }
                Some(ops) => match apply_json_patch(&req.object, ops) {
                    Ok(obj) => record.patched = Some(obj),
                    Err(e) => {
                        record.patch = Some(ops.clone());
                        return self.fail(
                            record,
                            format!("JSON Patch does not apply to the object sent: {e}"),
                        );
                    }
                },
            }
            record.patch = verified.patch;
        }
        if !verified.allowed {
            let (code, reason, message) = denial(req.hook, verified.status.as_ref());
            record.outcome = Outcome::Denied {
                code,
                reason,
                message,
            };
        }
        record
    }

    fn fail(&self, mut record: CallRecord, why: String) -> CallRecord {
        self.violation(format!(
            "{} {} call failed: {why}",
            record.hook.name(),
            record.operation.as_str()
        ));
        record.outcome = Outcome::Failed(why);
        record
    }

    fn outcome_error(hook: Hook, outcome: &Outcome) -> Option<(u16, String, String)> {
        match outcome {
            Outcome::Allowed => None,
            Outcome::Denied {
                code,
                reason,
                message,
            } => Some((*code, reason.clone(), message.clone())),
            Outcome::Failed(why) => Some(api_err(
                500,
                "InternalError",
                format!(
                    "Internal error occurred: failed calling webhook {:?}: {why}",
                    hook.name()
                ),
            )),
        }
    }

    /// The mutating phase: one call, plus the reinvocation round when enabled.
    async fn mutate(&self, ctx: &mut RequestCtx, mut req: ReviewRequest) -> Step<Value> {
        req.hook = Hook::Mutating;
        if !self.matches(&req)? {
            return Ok(req.object);
        }
        let first = ctx.absorb(self.call_round(&req, 0).await);
        if let Some(e) = Self::outcome_error(Hook::Mutating, &first.outcome) {
            return Err(e);
        }
        let once = first.patched.unwrap_or(Value::Null);
        if !self.inner.reinvoke.load(Ordering::SeqCst) {
            return Ok(once);
        }
        req.object = once.clone();
        let second = ctx.absorb(self.call_round(&req, 1).await);
        if let Some(e) = Self::outcome_error(Hook::Mutating, &second.outcome) {
            return Err(e);
        }
        let twice = second.patched.unwrap_or(Value::Null);
        if twice != once {
            self.violation(format!(
                "{} {}: reinvocation changed the object at {:?} (patch {})",
                Hook::Mutating.name(),
                req.operation.as_str(),
                differing_paths(&once, &twice, 8),
                second.patch.map(|p| p.to_string()).unwrap_or_default()
            ));
        }
        Ok(twice)
    }

    async fn validate(&self, ctx: &mut RequestCtx, mut req: ReviewRequest) -> Step<()> {
        req.hook = Hook::Validating;
        if !self.matches(&req)? {
            return Ok(());
        }
        let call = ctx.absorb(self.call_round(&req, 0).await);
        match Self::outcome_error(Hook::Validating, &call.outcome) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    // === operations ===

    /// POST: mutating admission, system fields and name generation, validating admission, store.
    pub async fn create(
        &self,
        user: &UserInfo,
        obj: Value,
        dry_run: bool,
    ) -> Result<Stored, ApiError> {
        let mut ctx = RequestCtx {
            attempts: 1,
            ..RequestCtx::default()
        };
        match self.create_steps(&mut ctx, user, obj, dry_run).await {
            Ok(obj) => Ok(ctx.ok(obj)),
            Err(e) => Err(ctx.err(e)),
        }
    }

    async fn create_steps(
        &self,
        ctx: &mut RequestCtx,
        user: &UserInfo,
        mut obj: Value,
        dry_run: bool,
    ) -> Step<Value> {
        let ns = namespace_of(&obj);
        let meta = metadata_mut(&mut obj)?;
        meta.insert("namespace".into(), json!(ns));
        // rest.WipeObjectMetaSystemFields
        for key in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
            "generation",
        ] {
            meta.remove(key);
        }
        if resource_version(&obj).is_some() {
            return Err(api_err(
                500,
                "InternalError",
                "resourceVersion should not be set on objects to be created",
            ));
        }
        let name = name_of(&obj);
        if name.is_empty() && generate_name_of(&obj).is_empty() {
            return Err(api_err(
                422,
                "Invalid",
                "Workflow.argoproj.io \"\" is invalid: metadata.name: Required value: name or generateName is required",
            ));
        }
        super::fields::record_manager(&mut obj, None, "kubectl-create");
        let mut obj = self
            .mutate(
                ctx,
                ReviewRequest {
                    hook: Hook::Mutating,
                    operation: Operation::Create,
                    user: user.clone(),
                    namespace: ns.clone(),
                    name: Some(name.clone()).filter(|n| !n.is_empty()),
                    object: obj,
                    old_object: Value::Null,
                    dry_run,
                    options: options("CreateOptions", dry_run),
                },
            )
            .await?;
        // FillObjectMetaSystemFields, name generation and PrepareForCreate run after mutation.
        let mut name = name_of(&obj);
        if name.is_empty() {
            name = generated_name(&generate_name_of(&obj));
        }
        let meta = metadata_mut(&mut obj)?;
        meta.insert("name".into(), json!(name));
        meta.insert("namespace".into(), json!(ns));
        meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        meta.insert(
            "creationTimestamp".into(),
            json!(super::time::now_rfc3339()),
        );
        meta.insert("generation".into(), json!(1));
        self.validate(
            ctx,
            ReviewRequest {
                hook: Hook::Validating,
                operation: Operation::Create,
                user: user.clone(),
                namespace: ns.clone(),
                name: Some(name.clone()),
                object: obj.clone(),
                old_object: Value::Null,
                dry_run,
                options: options("CreateOptions", dry_run),
            },
        )
        .await?;
        if dry_run {
            return Ok(obj);
        }
        self.inner
            .store
            .insert_new(&ns, &name, obj)
            .map_err(|e| match e {
                StoreError::AlreadyExists => api_err(
                    409,
                    "AlreadyExists",
                    format!("workflows.argoproj.io {name:?} already exists"),
                ),
                other => api_err(500, "InternalError", format!("{other:?}")),
            })
    }

    /// PUT: the client's whole object, carrying its resourceVersion.
    pub async fn update(
        &self,
        user: &UserInfo,
        obj: Value,
        dry_run: bool,
    ) -> Result<Stored, ApiError> {
        let mut ctx = RequestCtx::default();
        match self.update_steps(&mut ctx, user, obj, dry_run).await {
            Ok(obj) => Ok(ctx.ok(obj)),
            Err(e) => Err(ctx.err(e)),
        }
    }

    async fn update_steps(
        &self,
        ctx: &mut RequestCtx,
        user: &UserInfo,
        mut obj: Value,
        dry_run: bool,
    ) -> Step<Value> {
        let ns = namespace_of(&obj);
        let name = name_of(&obj);
        if name.is_empty() {
            return Err(api_err(
                400,
                "BadRequest",
                "the name of the object must be set for an update",
            ));
        }
        metadata_mut(&mut obj)?.insert("namespace".into(), json!(ns));
        for attempt in 0..MAX_ATTEMPTS {
            ctx.attempts += 1;
            let stored = self
                .inner
                .store
                .get(&ns, &name)
                .ok_or_else(|| not_found(&name))?;
            if attempt == 0 {
                self.pass_read_gate().await;
            }
            let mut incoming = obj.clone();
            super::fields::record_manager(&mut incoming, Some(&stored), "kubectl-replace");
            let updated = self
                .admit_update(ctx, user, &ns, &name, incoming, &stored, dry_run)
                .await?;
            if dry_run {
                return Ok(updated);
            }
            match self.cas(&ns, &name, &stored, updated)? {
                Some(saved) => return Ok(saved),
                // Lost the race: re-read and run admission again, as GuaranteedUpdate does.
                None => continue,
            }
        }
        Err(timeout())
    }

    /// PATCH: re-applied to the freshly read object on every attempt.
    pub async fn patch(
        &self,
        user: &UserInfo,
        ns: &str,
        name: &str,
        patch: Patch,
        dry_run: bool,
    ) -> Result<Stored, ApiError> {
        let mut ctx = RequestCtx::default();
        match self
            .patch_steps(&mut ctx, user, ns, name, &patch, dry_run)
            .await
        {
            Ok(obj) => Ok(ctx.ok(obj)),
            Err(e) => Err(ctx.err(e)),
        }
    }

    async fn patch_steps(
        &self,
        ctx: &mut RequestCtx,
        user: &UserInfo,
        ns: &str,
        name: &str,
        patch: &Patch,
        dry_run: bool,
    ) -> Step<Value> {
        for attempt in 0..MAX_ATTEMPTS {
            ctx.attempts += 1;
            let stored = self
                .inner
                .store
                .get(ns, name)
                .ok_or_else(|| not_found(name))?;
            if attempt == 0 {
                self.pass_read_gate().await;
            }
            // The patched object inherits the stored resourceVersion unless the patch sets one.
            let mut patched = match patch {
                Patch::Merge(p) => apply_merge_patch(&stored, p),
                Patch::Json(p) => {
                    apply_json_patch(&stored, p).map_err(|e| api_err(422, "Invalid", e))?
                }
            };
            super::fields::record_manager(&mut patched, Some(&stored), "kubectl-patch");
            let updated = self
                .admit_update(ctx, user, ns, name, patched, &stored, dry_run)
                .await?;
            if dry_run {
                return Ok(updated);
            }
            match self.cas(ns, name, &stored, updated)? {
                Some(saved) => return Ok(saved),
                None => continue,
            }
        }
        Err(timeout())
    }

    /// One `tryUpdate`: mutating admission, resourceVersion check, BeforeUpdate, validating admission.
    #[allow(clippy::too_many_arguments)]
    async fn admit_update(
        &self,
        ctx: &mut RequestCtx,
        user: &UserInfo,
        ns: &str,
        name: &str,
        obj: Value,
        stored: &Value,
        dry_run: bool,
    ) -> Step<Value> {
        let mutated = self
            .mutate(
                ctx,
                ReviewRequest {
                    hook: Hook::Mutating,
                    operation: Operation::Update,
                    user: user.clone(),
                    namespace: ns.to_string(),
                    name: Some(name.to_string()),
                    object: obj,
                    old_object: stored.clone(),
                    dry_run,
                    options: options("UpdateOptions", dry_run),
                },
            )
            .await?;
        match resource_version(&mutated) {
            None => {
                return Err(api_err(
                    422,
                    "Invalid",
                    format!(
                        "Workflow.argoproj.io {name:?} is invalid: metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"
                    ),
                ));
            }
            Some(rv) if Some(rv) != resource_version(stored) => return Err(conflict(name)),
            Some(_) => {}
        }
        let uid = |o: &Value| {
            o.pointer("/metadata/uid")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let (new_uid, old_uid) = (uid(&mutated), uid(stored));
        if !new_uid.is_empty() && new_uid != old_uid {
            return Err(api_err(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on workflows.argoproj.io {name:?}: Precondition failed: UID in precondition: {new_uid}, UID in object meta: {old_uid}"
                ),
            ));
        }
        let prepared = before_update(mutated, stored)?;
        self.validate(
            ctx,
            ReviewRequest {
                hook: Hook::Validating,
                operation: Operation::Update,
                user: user.clone(),
                namespace: ns.to_string(),
                name: Some(name.to_string()),
                object: prepared.clone(),
                old_object: stored.clone(),
                dry_run,
                options: options("UpdateOptions", dry_run),
            },
        )
        .await?;
        Ok(prepared)
    }

    /// `Ok(None)` when another write won the race.
    fn cas(&self, ns: &str, name: &str, stored: &Value, obj: Value) -> Step<Option<Value>> {
        let expected = resource_version(stored).unwrap_or_default().to_string();
        match self.inner.store.compare_and_swap(ns, name, &expected, obj) {
            Ok(saved) => Ok(Some(saved)),
            Err(StoreError::Conflict) => Ok(None),
            Err(StoreError::NotFound) => Err(not_found(name)),
            Err(other) => Err(api_err(500, "InternalError", format!("{other:?}"))),
        }
    }

    /// DELETE, as if the webhook configurations listed DELETE: both hooks see `object: null` and the
    /// stored object as `oldObject`; a mutating patch on DELETE is a 500.
    pub async fn delete(
        &self,
        user: &UserInfo,
        ns: &str,
        name: &str,
        dry_run: bool,
    ) -> Result<Stored, ApiError> {
        let mut ctx = RequestCtx {
            attempts: 1,
            ..RequestCtx::default()
        };
        let result: Step<Value> = async {
            let stored = self
                .inner
                .store
                .get(ns, name)
                .ok_or_else(|| not_found(name))?;
            let req = ReviewRequest {
                hook: Hook::Mutating,
                operation: Operation::Delete,
                user: user.clone(),
                namespace: ns.to_string(),
                name: Some(name.to_string()),
                object: Value::Null,
                old_object: stored.clone(),
                dry_run,
                options: options("DeleteOptions", dry_run),
            };
            self.mutate(&mut ctx, req.clone()).await?;
            self.validate(&mut ctx, req).await?;
            if dry_run {
                return Ok(stored);
            }
            let rv = resource_version(&stored).unwrap_or_default().to_string();
            self.inner.store.delete(ns, name, &rv).map_err(|e| match e {
                StoreError::Conflict => conflict(name),
                _ => not_found(name),
            })
        }
        .await;
        match result {
            Ok(obj) => Ok(ctx.ok(obj)),
            Err(e) => Err(ctx.err(e)),
        }
    }
}

fn not_found(name: &str) -> (u16, String, String) {
    api_err(
        404,
        "NotFound",
        format!("workflows.argoproj.io {name:?} not found"),
    )
}

fn conflict(name: &str) -> (u16, String, String) {
    api_err(
        409,
        "Conflict",
        format!(
            "Operation cannot be fulfilled on workflows.argoproj.io {name:?}: the object has been modified; please apply your changes to the latest version and try again"
        ),
    )
}

fn timeout() -> (u16, String, String) {
    api_err(
        504,
        "Timeout",
        "the update kept losing races with other writers",
    )
}

fn namespace_of(obj: &Value) -> String {
    obj.pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or("argo")
        .to_string()
}

fn name_of(obj: &Value) -> String {
    obj.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

fn generate_name_of(obj: &Value) -> String {
    obj.pointer("/metadata/generateName")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

fn metadata_mut(obj: &mut Value) -> Step<&mut serde_json::Map<String, Value>> {
    obj.get_mut("metadata")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| api_err(400, "BadRequest", "the object has no metadata"))
}

/// `names.SimpleNameGenerator`: generateName plus five random characters from its alphabet.
fn generated_name(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    let suffix: String = bytes[..5]
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect();
    format!("{prefix}{suffix}")
}

/// `rest.BeforeUpdate` for a custom resource without a status subresource: generation, uid and
/// creationTimestamp come from the stored object, and the generation grows when anything outside
/// `metadata` changed.
fn before_update(mut obj: Value, stored: &Value) -> Step<Value> {
    let old_generation = stored
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let without_meta = |o: &Value| {
        let mut o = o.clone();
        if let Some(m) = o.as_object_mut() {
            m.remove("metadata");
        }
        o
    };
    let content_changed = without_meta(&obj) != without_meta(stored);
    let stored_uid = stored.pointer("/metadata/uid").cloned();
    let stored_created = stored.pointer("/metadata/creationTimestamp").cloned();
    let meta = metadata_mut(&mut obj)?;
    let generation = if content_changed {
        old_generation + 1
    } else {
        old_generation
    };
    meta.insert("generation".into(), json!(generation));
    if meta
        .get("uid")
        .and_then(Value::as_str)
        .unwrap_or("")
        .is_empty()
        && let Some(uid) = stored_uid
    {
        meta.insert("uid".into(), uid);
    }
    if let Some(ts) = stored_created.filter(|t| !t.is_null()) {
        meta.insert("creationTimestamp".into(), ts);
    }
    Ok(obj)
}
