//! Watches: kube-runtime watchers and reflectors, recovery, bookmarks, selectors.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Service;
use kube::ResourceExt;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use testserver::Verb;

use super::{eventually, server, within};

async fn create(services: &Api<Service>, name: &str, labels: serde_json::Value) -> Service {
    let svc = serde_json::from_value(
        json!({"metadata": {"name": name, "labels": labels}, "spec": {"ports": [{"port": 80}]}}),
    )
    .expect("service deserializes");
    services
        .create(&PostParams::default(), &svc)
        .await
        .expect("service created")
}

fn has(store: &Store<Service>, name: &str) -> bool {
    store.get(&ObjectRef::new(name).within("default")).is_some()
}

/// A reflector on all Services, driven in the background until the returned task is aborted.
fn reflect(
    client: kube::Client,
    config: watcher::Config,
) -> (Store<Service>, tokio::task::JoinHandle<()>) {
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(Api::<Service>::all(client), config))
        .default_backoff();
    (reader, tokio::spawn(stream.for_each(|_| async {})))
}

#[tokio::test]
async fn reflector_follows_changes_and_recovers() {
    within(async {
        let (mut server, client) = server().await;
        let services: Api<Service> = Api::namespaced(client.clone(), "default");
        create(&services, "a", json!({})).await;
        let (store, task) = reflect(client.clone(), watcher::Config::default());
        store.wait_until_ready().await.expect("reflector synced");
        assert!(has(&store, "a"));

        create(&services, "b", json!({})).await;
        services
            .patch(
                "a",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"x": "1"}}})),
            )
            .await
            .expect("patched");
        services
            .delete("b", &DeleteParams::default())
            .await
            .expect("deleted");
        let labelled = || {
            store
                .get(&ObjectRef::new("a").within("default"))
                .is_some_and(|s| s.metadata.labels.is_some())
        };
        eventually("update of a and deletion of b", || {
            labelled() && !has(&store, "b")
        })
        .await;

        let lists = server.request_count(Verb::List, "services", None);
        server.compact();
        create(&services, "c", json!({})).await;
        eventually("c after compaction", || has(&store, "c")).await;
        assert!(
            server.request_count(Verb::List, "services", None) > lists,
            "410 Gone made the watcher relist"
        );

        let watches = server.request_count(Verb::Watch, "services", None);
        server.restart().await.expect("server restarts");
        create(&services, "d", json!({})).await;
        eventually("d after restart", || has(&store, "d")).await;
        assert!(
            server.request_count(Verb::Watch, "services", None) > watches,
            "the watch was re-established"
        );
        eventually("an open watch", || server.watch_count() == 1).await;
        task.abort();
    })
    .await;
}

#[tokio::test]
async fn streaming_list_watcher_syncs() {
    within(async {
        let (_server, client) = server().await;
        let services: Api<Service> = Api::namespaced(client.clone(), "default");
        create(&services, "a", json!({})).await;
        let (store, task) = reflect(client.clone(), watcher::Config::default().streaming_lists());
        store
            .wait_until_ready()
            .await
            .expect("reflector synced from initial events");
        assert!(has(&store, "a"));
        create(&services, "b", json!({})).await;
        eventually("b", || has(&store, "b")).await;
        task.abort();
    })
    .await;
}

#[tokio::test]
async fn bookmarks_arrive_and_timeouts_end_watches() {
    within(async {
        let (server, client) = server().await;
        let services: Api<Service> = Api::namespaced(client.clone(), "default");
        create(&services, "a", json!({})).await;
        let rv = services
            .list(&ListParams::default())
            .await
            .expect("listed")
            .metadata
            .resource_version
            .expect("list rv");
        let wp = WatchParams::default().timeout(1);
        let events: Vec<WatchEvent<Service>> = services
            .watch(&wp, &rv)
            .await
            .expect("watch starts")
            .try_collect()
            .await
            .expect("watch stream");
        let bookmarks: Vec<String> = events
            .iter()
            .filter_map(|e| match e {
                WatchEvent::Bookmark(b) => Some(b.metadata.resource_version.clone()),
                _ => None,
            })
            .collect();
        // 100 ms interval over a 1 s watch; allow for a slow machine.
        assert!(bookmarks.len() >= 3, "{} bookmarks", bookmarks.len());
        assert!(
            bookmarks.iter().all(|b| *b == rv),
            "nothing changed, so bookmarks carry the list's version"
        );
        eventually("the watch closed", || server.watch_count() == 0).await;
    })
    .await;
}

#[tokio::test]
async fn watch_from_a_compacted_version_is_gone() {
    within(async {
        let (server, client) = server().await;
        let services: Api<Service> = Api::namespaced(client.clone(), "default");
        let rv = create(&services, "a", json!({}))
            .await
            .metadata
            .resource_version
            .expect("rv");
        server.compact();
        let mut stream = services
            .watch(&WatchParams::default(), &rv)
            .await
            .expect("watch starts")
            .boxed();
        match stream.try_next().await {
            Ok(Some(WatchEvent::Error(status))) => {
                assert_eq!((status.code, status.reason.as_str()), (410, "Expired"))
            }
            other => panic!("expected 410 Gone, got {other:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn selector_watches_see_objects_enter_and_leave() {
    within(async {
        let (_server, client) = server().await;
        let services: Api<Service> = Api::namespaced(client.clone(), "default");
        create(&services, "a", json!({"app": "other"})).await;
        let wp = WatchParams::default().labels("app=web").timeout(10);
        let mut stream = services
            .watch(&wp, "0")
            .await
            .expect("watch starts")
            .boxed();
        let relabel = |app: &str| Patch::Merge(json!({"metadata": {"labels": {"app": app}}}));
        services
            .patch("a", &PatchParams::default(), &relabel("web"))
            .await
            .expect("patched");
        assert!(
            matches!(stream.try_next().await, Ok(Some(WatchEvent::Added(_)))),
            "entering the selector is ADDED"
        );
        services
            .patch("a", &PatchParams::default(), &relabel("db"))
            .await
            .expect("patched");
        assert!(
            matches!(stream.try_next().await, Ok(Some(WatchEvent::Deleted(_)))),
            "leaving it is DELETED"
        );
    })
    .await;
}

struct Ctx {
    api: Api<Service>,
    /// Set once a reconcile saw the relabelled Service.
    saw_label: AtomicBool,
}

/// Gives every Service a LoadBalancer IP, writing status only when it lacks one.
async fn reconcile(svc: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action, kube::Error> {
    ctx.saw_label
        .fetch_or(svc.labels().contains_key("x"), Ordering::SeqCst);
    let ingress = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref());
    if ingress.is_none() {
        let status =
            Patch::Merge(json!({"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.9"}]}}}));
        ctx.api
            .patch_status(&svc.name_any(), &PatchParams::default(), &status)
            .await?;
    }
    Ok(Action::await_change())
}

#[tokio::test]
async fn controller_writes_status_only_on_change() {
    within(async {
        let (server, client) = server().await;
        let services: Api<Service> = Api::namespaced(client.clone(), "default");
        create(&services, "a", json!({})).await;
        let ctx = Arc::new(Ctx {
            api: services.clone(),
            saw_label: AtomicBool::new(false),
        });
        let error_policy = |_: Arc<Service>, _: &kube::Error, _: Arc<Ctx>| {
            Action::requeue(Duration::from_millis(100))
        };
        let controller = Controller::new(services.clone(), watcher::Config::default()).run(
            reconcile,
            error_policy,
            ctx.clone(),
        );
        let task = tokio::spawn(controller.for_each(|_| async {}));
        let has_ip = || {
            server
                .object("services", "default", "a")
                .is_some_and(|s| s["status"]["loadBalancer"]["ingress"][0]["ip"] == "203.0.113.9")
        };
        eventually("the controller's status write", has_ip).await;
        let relabel = Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}}));
        services
            .patch("a", &PatchParams::default(), &relabel)
            .await
            .expect("relabelled");
        eventually("a reconcile of the relabelled service", || {
            ctx.saw_label.load(Ordering::SeqCst)
        })
        .await;
        assert_eq!(
            server.request_count(Verb::Patch, "services", Some("status")),
            1
        );
        task.abort();
    })
    .await;
}
