//! Who the processes under test are to the API server: ServiceAccounts,
//! their tokens (TokenRequest, bound to a Pod when the token must name a
//! node), and what RBAC lets them do.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{Api, PostParams};
use kube::config::{AuthInfo, Kubeconfig, NamedAuthInfo};
use serde_json::{Value, json};

use super::KubeEnv;

/// A ServiceAccount made by [`KubeEnv::service_account`]: its identity, its
/// ClusterRole and a kubeconfig with its token.
#[derive(Debug, Clone)]
pub struct ServiceAccountAccess {
    /// The user name the API server knows it by
    /// (`system:serviceaccount:NS:NAME`).
    pub user: String,
    /// The ClusterRole bound to it (patch its rules to change what it may).
    pub cluster_role: String,
    /// A kubeconfig for the API server with the account's token.
    pub kubeconfig: PathBuf,
}

/// One thing to ask the authorizer: may `user` `verb` `resource`
/// (`group/plural[/subresource]`, core kinds without a group and a slash
/// before the plural: `/nodes/status`) in `namespace`?
#[derive(Debug, Clone, Copy)]
pub struct Access<'a> {
    /// `get`, `list`, `patch`, ...
    pub verb: &'a str,
    /// `GROUP/PLURAL[/SUBRESOURCE]`; the core group is empty.
    pub resource: &'a str,
    /// For namespaced kinds; `None`: cluster-wide (all namespaces).
    pub namespace: Option<&'a str>,
    /// One object by name (for rules with `resourceNames`); `None`: any.
    pub name: Option<&'a str>,
}

impl KubeEnv {
    /// A ServiceAccount named after `base` (in a namespace of its own),
    /// a ClusterRole with `rules` (the JSON of a ClusterRole's `rules`)
    /// bound to it, and a kubeconfig with a token for it (TokenRequest,
    /// valid for an hour): for processes that must run with a workload's
    /// permissions, not the admin's. All of it is deleted at the end.
    pub async fn service_account(&mut self, base: &str, rules: Value) -> ServiceAccountAccess {
        let ns = self.namespace(base).await;
        let name = self.name(base);
        let account: ServiceAccount = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": name, "namespace": ns}
        }))
        .expect("ServiceAccount");
        Api::<ServiceAccount>::namespaced(self.client.clone(), &ns)
            .create(&PostParams::default(), &account)
            .await
            .unwrap_or_else(|e| panic!("ServiceAccount {name} cannot be created: {e}"));
        self.create_json(
            "clusterroles",
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": {"name": name}, "rules": rules
            }),
        )
        .await;
        self.create_json(
            "clusterrolebindings",
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
                "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ns}]
            }),
        )
        .await;
        let user = format!("system:serviceaccount:{ns}:{name}");
        // RBAC takes effect as the API server's informers see the binding:
        // wait until it lets the account read Nodes (all the rules allow
        // that), so the first requests are not refused.
        self.wait_allowed(
            &user,
            Access {
                verb: "list",
                resource: "/nodes",
                namespace: None,
                name: None,
            },
        )
        .await;
        let kubeconfig = self.token(&ns, &name, None).await;
        ServiceAccountAccess {
            user,
            cluster_role: name,
            kubeconfig,
        }
    }

    /// A kubeconfig for the API server with a token of ServiceAccount
    /// `account` in `namespace` (TokenRequest, valid for an hour). With
    /// `pod`, the token is bound to that Pod, as the kubelet's are: it
    /// names the Pod's node (`authentication.kubernetes.io/node-name` in
    /// the user's extra), and is void once the Pod is gone.
    pub async fn token(&mut self, namespace: &str, account: &str, pod: Option<&Pod>) -> PathBuf {
        let mut spec = json!({"audiences": [], "expirationSeconds": 3600});
        if let Some(pod) = pod {
            spec["boundObjectRef"] = json!({
                "apiVersion": "v1", "kind": "Pod",
                "name": pod.metadata.name, "uid": pod.metadata.uid,
            });
        }
        let request: TokenRequest = serde_json::from_value(json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec
        }))
        .expect("TokenRequest");
        let token = Api::<ServiceAccount>::namespaced(self.client.clone(), namespace)
            .create_token_request(account, &PostParams::default(), &request)
            .await
            .unwrap_or_else(|e| panic!("no token for ServiceAccount {namespace}/{account}: {e}"))
            .status
            .map(|s| s.token)
            .unwrap_or_else(|| panic!("the TokenRequest for {namespace}/{account} has no token"));
        // The admin kubeconfig's cluster, with the token as its user.
        let mut config = Kubeconfig::read_from(&self.kubeconfig).expect("kubeconfig readable");
        let base_dir = self
            .kubeconfig
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        for cluster in config
            .clusters
            .iter_mut()
            .filter_map(|c| c.cluster.as_mut())
        {
            if let Some(ca) = cluster.certificate_authority.as_mut() {
                *ca = base_dir.join(&*ca).display().to_string();
            }
        }
        config.auth_infos = vec![NamedAuthInfo {
            name: account.to_string(),
            auth_info: Some(AuthInfo {
                token: Some(token.into()),
                ..Default::default()
            }),
            other: Default::default(),
        }];
        for context in config
            .contexts
            .iter_mut()
            .filter_map(|c| c.context.as_mut())
        {
            context.user = Some(account.to_string());
        }
        let bound = pod
            .and_then(|p| p.metadata.name.as_deref())
            .map_or(String::new(), |p| format!("-{p}"));
        let path = self
            .dir
            .join(format!("kubeconfig-{namespace}-{account}{bound}"));
        std::fs::write(
            &path,
            serde_json::to_vec(&config).expect("kubeconfig serializes"),
        )
        .expect("kubeconfig written");
        path
    }

    /// What the API server's authorizer answers (a SubjectAccessReview, as
    /// admission and `kubectl auth can-i --as` ask it): may `user` (a
    /// ServiceAccount's `system:serviceaccount:NS:NAME`) do `access`?
    pub async fn allowed(&self, user: &str, access: Access<'_>) -> bool {
        let mut parts = access.resource.splitn(3, '/');
        let group = parts.next().unwrap_or_default();
        let resource = parts.next().unwrap_or_default();
        let subresource = parts.next().unwrap_or_default();
        // The groups the account's tokens carry, its namespace's among them.
        let mut groups = vec!["system:authenticated".to_string()];
        if let Some(ns) = user
            .strip_prefix("system:serviceaccount:")
            .and_then(|rest| rest.split(':').next())
        {
            groups.push("system:serviceaccounts".to_string());
            groups.push(format!("system:serviceaccounts:{ns}"));
        }
        let review: SubjectAccessReview = serde_json::from_value(json!({
            "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "spec": {
                "user": user, "groups": groups,
                "resourceAttributes": {
                    "verb": access.verb, "group": group, "resource": resource,
                    "subresource": subresource, "namespace": access.namespace.unwrap_or_default(),
                    "name": access.name.unwrap_or_default(),
                }
            }
        }))
        .expect("SubjectAccessReview");
        Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .unwrap_or_else(|e| panic!("SubjectAccessReview for {user}: {e}"))
            .status
            .is_some_and(|s| s.allowed)
    }

    /// Waits (up to 30 s) until the authorizer lets `user` do `access`:
    /// RBAC takes effect as the API server's informers see a binding.
    pub async fn wait_allowed(&self, user: &str, access: Access<'_>) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.allowed(user, access).await {
            assert!(
                Instant::now() < deadline,
                "{user} may still not {access:?} 30 s after its binding"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
