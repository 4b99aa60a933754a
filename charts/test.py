#!/usr/bin/env python3
"""Renders the petrel chart with Helm's own engine and checks what it makes.

Helm here is helm-python-sdk: Helm's Go SDK (the same template engine, Sprig
functions and linter as the `helm` binary) built as a library, installed
from PyPI. No cluster is needed: rendering is offline.

For the default values and a few variations, every rendered document must
parse as YAML (Go's parser, as Helm and kubectl read it) and be one of the
expected kinds; the agent DaemonSet must run in the host network with only
the capabilities it needs; RBAC must have no wildcards and write nothing but
status, events and the controller's Lease; the CRDs the chart installs must
be exactly `petrel crds`; and README.md must document every value.

Usage: charts/test.sh (installs nothing; says what to install if Helm's
library is missing). PETREL=path/to/petrel skips building the binary.
"""

import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
CHART = os.path.join(HERE, "petrel")
REPO = os.path.dirname(HERE)
INSTALL = "python3 -m pip install helm-python-sdk==0.2.2"

try:
    import helm_python as helm
except ImportError:
    print(f"charts/test.py needs Helm's library: {INSTALL}", file=sys.stderr)
    sys.exit(2)

# The chart rendered as tools that apply it see it (charts/render.py).
from render import documents, render  # noqa: E402

passed = 0
failed = []


def check(ok, what):
    """Counts one expectation; keeps going after a failure to report all."""
    global passed
    if ok:
        passed += 1
    else:
        failed.append(what)
        print(f"FAIL: {what}", file=sys.stderr)


# Kinds the chart may render, by apiVersion.
ALLOWED = {
    ("v1", "ServiceAccount"),
    ("v1", "Service"),
    ("apps/v1", "DaemonSet"),
    ("apps/v1", "Deployment"),
    ("policy/v1", "PodDisruptionBudget"),
    ("rbac.authorization.k8s.io/v1", "ClusterRole"),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
    ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy"),
    ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicyBinding"),
}
CLUSTER_SCOPED = {
    "ClusterRole",
    "ClusterRoleBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
}
READ = {"get", "list", "watch"}
WRITE = {"create", "update", "patch", "delete"}
# What may be written at all: status subresources, events, the Lease.
STATUS_WRITES = {
    ("", "nodes/status"),
    ("", "services/status"),
}
# The agent's capabilities: routes, tunnels, nftables (NET_ADMIN) and
# listening on port 179 (below 1024); nothing raw.
AGENT_CAPS = {"NET_ADMIN", "NET_BIND_SERVICE"}


def find(objects, kind):
    return [o for o in objects if o.get("kind") == kind]


def check_common(objects, namespace, label):
    seen = set()
    for o in objects:
        key = (o.get("apiVersion"), o.get("kind"))
        check(key in ALLOWED, f"{label}: {o['__file']}: unexpected {key}")
        meta = o.get("metadata", {})
        check(bool(meta.get("name")), f"{label}: {o['__file']}: {key} without a name")
        if o.get("kind") not in CLUSTER_SCOPED:
            check(
                meta.get("namespace") == namespace,
                f"{label}: {o.get('kind')}/{meta.get('name')} is not in {namespace}",
            )
        ident = (o.get("kind"), meta.get("namespace"), meta.get("name"))
        check(ident not in seen, f"{label}: {ident} rendered twice")
        seen.add(ident)


def check_rbac(objects, label):
    for role in find(objects, "ClusterRole") + find(objects, "Role"):
        name = f"{label}: {role['kind']}/{role['metadata']['name']}"
        for rule in role.get("rules", []):
            groups = rule.get("apiGroups", [])
            resources = rule.get("resources", [])
            verbs = set(rule.get("verbs", []))
            check("*" not in groups, f"{name}: wildcard apiGroup")
            check("*" not in resources and not any("*" in r for r in resources),
                  f"{name}: wildcard resource")
            check("*" not in verbs, f"{name}: wildcard verb")
            check(verbs <= READ | WRITE, f"{name}: verbs {sorted(verbs - READ - WRITE)}")
            if "secrets" in resources:
                check(role["kind"] == "Role", f"{name}: Secrets readable cluster-wide")
                check(verbs <= READ, f"{name}: writes Secrets")
            if not verbs & WRITE:
                continue
            for g in groups:
                for r in resources:
                    allowed = (
                        (g == "petrel.dev" and r.endswith("/status"))
                        # The agent creates its node's BGPNodeStatus (status only).
                        or (g == "petrel.dev" and r == "bgpnodestatuses" and role["kind"] == "ClusterRole"
                            and role["metadata"]["name"].endswith("-agent") and verbs <= READ | {"create", "patch"})
                        or (g, r) in STATUS_WRITES
                        # Pod addresses are recorded in IPAMBlocks by the agents.
                        or (g == "petrel.dev" and r == "ipamblocks" and role["kind"] == "ClusterRole"
                            and role["metadata"]["name"].endswith("-agent"))
                        # ... and collected by the controller (no create: it claims nothing).
                        or (g == "petrel.dev" and r == "ipamblocks" and role["kind"] == "ClusterRole"
                            and role["metadata"]["name"].endswith("-controller") and "create" not in verbs)
                        # Agents annotate their own Node (VXLAN endpoint, WireGuard key):
                        # patch only; the admission policy keeps them to their own.
                        or (g == "" and r == "nodes" and verbs == {"patch"} and role["kind"] == "ClusterRole"
                            and role["metadata"]["name"].endswith("-agent"))
                        or (r == "events" and g in ("", "events.k8s.io") and verbs <= {"create", "patch"})
                        or (r == "leases" and g == "coordination.k8s.io" and role["kind"] == "Role")
                    )
                    check(allowed, f"{name}: may write {g or 'core'}/{r}")
    roles = {(r["kind"], r["metadata"]["name"]) for r in find(objects, "ClusterRole") + find(objects, "Role")}
    for b in find(objects, "ClusterRoleBinding") + find(objects, "RoleBinding"):
        ref = (b["roleRef"]["kind"], b["roleRef"]["name"])
        check(ref in roles, f"{label}: {b['metadata']['name']} binds missing {ref}")


def check_agent(objects, label, bind_address=None, port=9479):
    ds = find(objects, "DaemonSet")
    check(len(ds) == 1, f"{label}: {len(ds)} DaemonSets")
    if not ds:
        return
    spec = ds[0]["spec"]["template"]["spec"]
    check(spec.get("hostNetwork") is True, f"{label}: agent not in the host network")
    check(spec.get("dnsPolicy") == "ClusterFirstWithHostNet", f"{label}: agent dnsPolicy")
    check({"operator": "Exists"} in spec.get("tolerations", []), f"{label}: agent does not tolerate every taint")
    (c,) = spec["containers"]
    sc = c.get("securityContext", {})
    caps = sc.get("capabilities", {})
    check(set(caps.get("add", [])) == AGENT_CAPS, f"{label}: agent capabilities {caps.get('add')}")
    check(caps.get("drop") == ["ALL"], f"{label}: agent does not drop ALL")
    check(sc.get("allowPrivilegeEscalation") is False, f"{label}: agent may escalate")
    check(sc.get("privileged") in (None, False), f"{label}: agent privileged")
    args = c.get("args", [])
    check(args[:5] == ["agent", "--source", "kube", "--node", "$(NODE_NAME)"], f"{label}: agent args {args}")
    env = {e["name"]: e for e in c.get("env", [])}
    check(
        env.get("NODE_NAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "spec.nodeName",
        f"{label}: NODE_NAME not from the downward API",
    )
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    check(ports.get("metrics") == port, f"{label}: metrics port {ports}")
    if bind_address is None:
        # The node's own address, from the downward API.
        host = "$(HOST_IP)"
        check(env.get("HOST_IP", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "status.hostIP",
              f"{label}: HOST_IP not from the downward API")
    else:
        host = f"[{bind_address}]" if ":" in bind_address else bind_address
    metrics = args[args.index("--metrics-address") + 1] if "--metrics-address" in args else None
    check(metrics == f"{host}:{port}", f"{label}: --metrics-address {metrics}")
    check(not (metrics or "").startswith("127."), f"{label}: metrics on loopback: the kubelet cannot probe it")
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = c.get(probe, {}).get("httpGet", {})
        check(get.get("path") == path and get.get("port") in ("metrics", port), f"{label}: {probe} {get}")
    mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}
    vols = {v["name"]: v for v in spec.get("volumes", [])}
    check(mounts.get("api-socket") == "/run/petrel", f"{label}: API socket mount {mounts}")
    check(vols.get("api-socket", {}).get("hostPath", {}).get("path") == "/run/petrel", f"{label}: API socket hostPath")
    check("--api-socket" in args and args[args.index("--api-socket") + 1].startswith("/run/petrel/"),
          f"{label}: --api-socket outside the mounted directory")


def check_service_accounts(objects, label):
    accounts = {o["metadata"]["name"] for o in find(objects, "ServiceAccount")}
    for w in find(objects, "DaemonSet") + find(objects, "Deployment"):
        sa = w["spec"]["template"]["spec"].get("serviceAccountName")
        check(sa in accounts, f"{label}: {w['kind']} runs as missing ServiceAccount {sa}")
    for b in find(objects, "ClusterRoleBinding") + find(objects, "RoleBinding"):
        for s in b.get("subjects", []):
            check(s["name"] in accounts, f"{label}: {b['metadata']['name']} binds missing {s['name']}")


def petrel_crds(*args):
    binary = os.environ.get("PETREL")
    cmd = [binary] if binary else ["cargo", "run", "-q", "--locked", "-p", "petrel", "--"]
    cmd += ["crds", *args]
    return subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, text=True).stdout


def check_crds():
    generated = {d["metadata"]["name"]: d for d in documents(petrel_crds())}
    check(len(generated) == 9, f"petrel crds printed {len(generated)} CRDs")
    # The YAML, as Go reads it, says what the Rust types mean: no scalar
    # read as another type (YAML 1.1's `no`, `on`, numbers-as-text).
    meant = {c["metadata"]["name"]: c for c in json.loads(petrel_crds("-o", "json"))["items"]}
    check(sorted(meant) == sorted(generated), "petrel crds -o json has other CRDs than the YAML")
    for name, crd in meant.items():
        check(same(generated.get(name), crd), f"{name}: the YAML, as Go reads it, is not the JSON")
    with helm.Chart.load(CHART) as chart:
        shipped = chart.crds
    by_name = {}
    for f in shipped:
        for d in documents(f["data"]):
            by_name[d["metadata"]["name"]] = d
    check(
        sorted(by_name) == sorted(generated),
        f"chart CRDs {sorted(by_name)} vs petrel crds {sorted(generated)}: "
        "regenerate with `cargo run -p petrel -- crds --dir charts/petrel/crds`",
    )
    for name, crd in generated.items():
        check(by_name.get(name) == crd, f"chart CRD {name} differs from `petrel crds`: regenerate it")
        check(crd.get("apiVersion") == "apiextensions.k8s.io/v1", f"{name}: apiVersion")
        check(crd["spec"]["group"] == "petrel.dev" and crd["spec"]["scope"] == "Cluster", f"{name}: group/scope")


def same(a, b):
    """Equal as JSON data, with 8 and 8.0 equal (YAML floats vs JSON ints)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return a == b


def leaf_paths(value, prefix=""):
    """Dotted paths of values.yaml's settings (empty maps and lists are settings too)."""
    if isinstance(value, dict) and value:
        for k, v in value.items():
            yield from leaf_paths(v, f"{prefix}{k}.")
    else:
        yield prefix[:-1]


def check_readme():
    with helm.Chart.load(CHART) as chart:
        defaults = chart.values
    with open(os.path.join(CHART, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    for path in leaf_paths(defaults):
        # A structured value (resources, tolerations) is one row.
        parts = path.split(".")
        prefixes = [".".join(parts[:i]) for i in range(len(parts), 0, -1)]
        check(any(f"| `{p}` |" in readme for p in prefixes), f"README.md does not document `{path}`")


def main():
    report = helm.lint(CHART, strict=True, kube_version="v1.34.0")
    for m in report.get("messages", []):
        check(m.get("severity", 0) < 2, f"helm lint: {m}")
    check(not report.get("errors"), f"helm lint errors: {report.get('errors')}")

    # 1. Defaults.
    objs = render(None)
    check_common(objs, "kube-system", "defaults")
    check_rbac(objs, "defaults")
    check_agent(objs, "defaults")
    check_service_accounts(objs, "defaults")
    (dep,) = find(objs, "Deployment")
    check(dep["spec"]["replicas"] == 2, "defaults: controller replicas")
    check(dep["spec"]["template"]["spec"]["containers"][0]["args"][:2] == ["controller", "--leader-elect"],
          "defaults: controller args")
    check(len(find(objs, "PodDisruptionBudget")) == 1, "defaults: controller PDB")
    ctl = dep["spec"]["template"]["spec"]["containers"][0]
    check(ctl["readinessProbe"]["httpGet"]["path"] == "/readyz"
          and ctl["livenessProbe"]["httpGet"]["path"] == "/healthz"
          and ctl["ports"][0]["containerPort"] == 9480, "defaults: controller probes on its metrics port")
    check(ctl["args"][2:4] == ["--metrics-address", "0.0.0.0:9480"], "defaults: controller metrics address")
    leases = [r for r in find(objs, "Role") if any("leases" in x.get("resources", []) for x in r["rules"])]
    check(len(leases) == 1, "defaults: no Lease Role for leader election")
    secrets = [r for r in find(objs, "Role") if any("secrets" in x.get("resources", []) for x in r["rules"])]
    check(len(secrets) == 1, "defaults: the agent cannot read BGP passwords")
    (agent_role,) = [r for r in find(objs, "ClusterRole") if r["metadata"]["name"].endswith("-agent")] or [None]
    grants = {(res, v) for x in (agent_role or {}).get("rules", []) for res in x.get("resources", [])
              for v in x.get("verbs", [])}
    for need in [("bgppeers/status", "patch"), ("nodes/status", "patch"), ("bgpnodestatuses", "create"),
                 ("bgpnodestatuses", "patch"), ("bgpnodestatuses/status", "patch"), ("bgppeers", "list")]:
        check(need in grants, f"defaults: the agent may not {need[1]} {need[0]}")
    for kind in ("ServiceMonitor", "PodMonitor", "Service"):
        check(not find(objs, kind), f"defaults: {kind} rendered though not enabled")
    # The admission policy: `auto` by default (where the API server serves
    # it, which Helm's capabilities say); off when asked.
    off = render({"admissionPolicy": {"enabled": False}})
    check(not find(off, "ValidatingAdmissionPolicy"), "admissionPolicy false: policy rendered")

    # 2. Monitoring, the admission policy, IPv6 metrics, no Secrets.
    values = {
        "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}},
        "podMonitor": {"enabled": True},
        "admissionPolicy": {"enabled": True},
        "agent": {"metrics": {"bindAddress": "::", "port": 9900}, "readSecrets": False,
                  "extraArgs": ["--route-table", "254"]},
        "controller": {"loadBalancerClass": "petrel.dev/lb", "metrics": {"bindAddress": "::"}},
    }
    report = helm.lint(CHART, values, strict=True, kube_version="v1.34.0")
    check(not report.get("errors") and all(m.get("severity", 0) < 2 for m in report.get("messages", [])),
          f"helm lint (monitoring values): {report}")
    objs = render(values, name="net", namespace="petrel-system")
    check_common(objs, "petrel-system", "monitoring")
    check_rbac(objs, "monitoring")
    check_agent(objs, "monitoring", bind_address="::", port=9900)
    check_service_accounts(objs, "monitoring")
    (sm,) = find(objs, "ServiceMonitor") or [None]
    check(sm is not None and sm["metadata"]["labels"].get("release") == "prom", "monitoring: ServiceMonitor labels")
    check(len(find(objs, "PodMonitor")) == 1, "monitoring: PodMonitor")
    (svc,) = find(objs, "Service") or [None]
    check(svc is not None and svc["spec"]["ports"][0]["port"] == 9900, "monitoring: metrics Service port")
    (ds,) = find(objs, "DaemonSet")
    check(ds["spec"]["template"]["spec"]["containers"][0]["args"][-2:] == ["--route-table", "254"],
          "monitoring: agent extraArgs")
    (dep,) = find(objs, "Deployment")
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    check("[::]:9480" in args and args[args.index("--load-balancer-class") + 1] == "petrel.dev/lb"
          if "--load-balancer-class" in args else False, f"monitoring: controller args {args}")
    (vap,) = find(objs, "ValidatingAdmissionPolicy") or [None]
    check(vap is not None and "system:serviceaccount:petrel-system:net-petrel-agent"
          in vap["spec"]["matchConditions"][0]["expression"], "monitoring: policy matches the agent's account")
    covered = {r for rule in (vap or {}).get("spec", {}).get("matchConstraints", {}).get("resourceRules", [])
               for r in rule.get("resources", [])}
    check({"nodes/status", "bgppeers/status", "bgpnodestatuses", "bgpnodestatuses/status"} <= covered,
          f"monitoring: the policy does not cover every agent write: {sorted(covered)}")
    (vapb,) = find(objs, "ValidatingAdmissionPolicyBinding") or [None]
    check(vapb is not None and vap is not None and vapb["spec"]["policyName"] == vap["metadata"]["name"],
          "monitoring: policy binding")
    check(not [r for r in find(objs, "Role") if any("secrets" in x.get("resources", []) for x in r["rules"])],
          "monitoring: readSecrets false still grants Secrets")

    # 3. One controller without leader election, no RBAC, existing accounts.
    values = {
        "fullnameOverride": "p",
        "controller": {"replicas": 1, "leaderElect": False},
        "rbac": {"create": False},
        "serviceAccount": {"agent": {"create": False, "name": "routing"},
                           "controller": {"create": False, "name": "lb"}},
    }
    objs = render(values)
    check_common(objs, "kube-system", "bare")
    check_agent(objs, "bare")
    kinds = sorted(o["kind"] for o in objs)
    check(kinds == ["DaemonSet", "Deployment"], f"bare: rendered {kinds}")
    (dep,) = find(objs, "Deployment")
    check(dep["spec"]["template"]["spec"]["containers"][0]["args"] == ["controller", "--metrics-address", "0.0.0.0:9480"],
          "bare: controller args")
    check(dep["spec"]["template"]["spec"]["serviceAccountName"] == "lb", "bare: controller account")
    (ds,) = find(objs, "DaemonSet")
    check(ds["metadata"]["name"] == "p-agent", "bare: fullnameOverride")
    check(ds["spec"]["template"]["spec"]["serviceAccountName"] == "routing", "bare: agent account")

    # 4. Agent only.
    objs = render({"controller": {"enabled": False}})
    check_common(objs, "kube-system", "agent-only")
    check_rbac(objs, "agent-only")
    check_service_accounts(objs, "agent-only")
    check(not find(objs, "Deployment"), "agent-only: controller rendered")
    check(all("controller" not in o["metadata"]["name"] for o in objs), "agent-only: controller objects")

    # 5. Pod IPAM: the plugin installed by an init container, the agent
    #    serving it on the socket the configuration names.
    objs = render({"ipam": {"enabled": True, "mtu": 1450, "mainPlugin": "bridge"}})
    check_common(objs, "kube-system", "ipam")
    check_agent(objs, "ipam")
    (ds,) = find(objs, "DaemonSet")
    spec = ds["spec"]["template"]["spec"]
    (init,) = spec.get("initContainers") or [None]
    check(init is not None and init["args"][0] == "cni-install", f"ipam: init container {init}")
    iargs = (init or {}).get("args", [])
    arg = lambda args, flag: args[args.index(flag) + 1] if flag in args else None
    check(arg(iargs, "--socket") == "/run/petrel/ipam.sock", f"ipam: plugin socket {iargs}")
    check(arg(iargs, "--main-plugin") == "bridge" and arg(iargs, "--mtu") == "1450", f"ipam: init args {iargs}")
    check((init or {}).get("securityContext", {}).get("capabilities", {}).get("drop") == ["ALL"],
          "ipam: the init container keeps capabilities")
    args = spec["containers"][0]["args"]
    check(arg(args, "--ipam-socket") == "/run/petrel/ipam.sock", f"ipam: agent args {args}")
    mounts = {m["name"]: m["mountPath"] for m in (init or {}).get("volumeMounts", [])}
    vols = {v["name"]: v.get("hostPath", {}).get("path") for v in spec["volumes"]}
    check(vols.get("cni-bin") == "/opt/cni/bin" and vols.get("cni-conf") == "/etc/cni/net.d",
          f"ipam: host directories {vols}")
    check(mounts.get("cni-bin") == "/host/cni/bin" and mounts.get("cni-conf") == "/host/cni/net.d",
          f"ipam: init mounts {mounts}")
    (dep,) = find(objs, "Deployment")
    cargs = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    check("--ipam-gc" in cargs and arg(cargs, "--ipam-gc-grace") == "15m", f"ipam: controller args {cargs}")
    amounts = {m["name"]: m["mountPath"] for m in spec["containers"][0].get("volumeMounts", [])}
    check(arg(args, "--cni-conflist") is None, f"ipam: an explicit mtu is the operator's, not the agent's {args}")
    objs = render({"ipam": {"enabled": True}})
    (ds,) = find(objs, "DaemonSet")
    spec = ds["spec"]["template"]["spec"]
    args = spec["containers"][0]["args"]
    amounts = {m["name"]: m["mountPath"] for m in spec["containers"][0].get("volumeMounts", [])}
    check(arg(args, "--cni-conflist") == "/host/cni/net.d/10-petrel.conflist"
          and amounts.get("cni-conf") == "/host/cni/net.d",
          f"ipam: the agent writes the overlay's MTU into the configuration {args} {amounts}")

    # 6. WireGuard: the key's host directory; the userspace device's TUN
    #    and socket directory only when asked for.
    for userspace in (False, True):
        label = f"wireguard(userspace={userspace})"
        objs = render({"wireguard": {"enabled": True, "userspace": userspace}})
        check_agent(objs, label)
        (ds,) = find(objs, "DaemonSet")
        spec = ds["spec"]["template"]["spec"]
        args = spec["containers"][0]["args"]
        amounts = {m["name"]: m["mountPath"] for m in spec["containers"][0].get("volumeMounts", [])}
        vols = {v["name"]: v.get("hostPath", {}) for v in spec["volumes"]}
        check(arg(args, "--wireguard-key") == "/var/lib/petrel/wireguard.key"
              and amounts.get("wireguard-key") == "/var/lib/petrel"
              and vols.get("wireguard-key", {}).get("path") == "/var/lib/petrel",
              f"{label}: key directory {args} {amounts}")
        check((arg(args, "--wireguard-userspace") == "wireguard-go") == userspace,
              f"{label}: userspace flag {args}")
        check(("tun" in amounts and vols.get("tun", {}).get("type") == "CharDevice"
               and amounts.get("wireguard-run") == "/var/run/wireguard") == userspace,
              f"{label}: TUN and socket directory {amounts}")
    objs = render({})
    (ds,) = find(objs, "DaemonSet")
    check(not any(a.startswith("--wireguard") for a in ds["spec"]["template"]["spec"]["containers"][0]["args"]),
          "defaults: WireGuard rendered though not enabled")
    check("initContainers" not in ds["spec"]["template"]["spec"]
          and "--ipam-socket" not in ds["spec"]["template"]["spec"]["containers"][0]["args"],
          "defaults: IPAM rendered though not enabled")

    check_crds()
    check_readme()

    print(f"chart: {passed} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
