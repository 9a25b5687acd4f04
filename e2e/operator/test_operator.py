"""The operator against a real API server: UpstreamSource → Postgres row + Redis
generation + invalidation → a running replica serves (or stops serving) the source."""
import base64
import json
import time

from conftest import (REPO, Operator, get, http, kubectl, new_namespace, ready, redis_get, source_yaml, sql,
                      wait_ready)

BAD_SPECS = [
    ("protocol: cargo\n  url: https://upstream.example/x/",
     'spec.protocol: Unsupported value: "cargo": supported values: "pypi", "npm", "maven"'),
    ("protocol: pypi\n  url: https://upstream.example/x/\n  priority: 20000",
     "spec.priority: Invalid value: 20000: spec.priority in body should be less than or equal to 10000"),
    ("protocol: npm\n  url: https://user:pw@upstream.example/npm/",
     "url must not carry credentials, a query or a fragment; use credentialsSecretRef"),
    ("protocol: maven\n  url: ftp://upstream.example/m2/", "url must start with http:// or https://"),
    ("protocol: pypi\n  url: https://upstream.example/x/\n  ttl: {indexSeconds: 0}",
     "spec.ttl.indexSeconds: Invalid value: 0: spec.ttl.indexSeconds in body should be greater than or equal to 1"),
]


def test_bad_specs_are_refused_with_readable_messages(cluster, namespace):
    for spec, message in BAD_SPECS:
        doc = f"apiVersion: orchard.dev/v1alpha1\nkind: UpstreamSource\nmetadata:\n  name: bad\nspec:\n  {spec}\n"
        p = kubectl("apply", "-f", "-", input=doc, check=False, namespace=namespace)
        assert p.returncode != 0, f"accepted: {spec}"
        assert message in p.stderr, p.stderr
    assert get("upstreamsource", "bad", namespace) is None


def test_examples_become_ready(operator, backends, namespace):
    kubectl("create", "secret", "generic", "npm-internal-token", "--from-literal=token=example-token-value",
            namespace=namespace)
    kubectl("label", "secret", "npm-internal-token", "orchard.dev/upstream-credentials=true", namespace=namespace)
    kubectl("apply", "-f", str(REPO / "manifests/examples"), namespace=namespace)
    names = sorted(json.loads(kubectl("get", "upstreamsource", "-o", "json", namespace=namespace).stdout)["items"],
                   key=lambda o: o["metadata"]["name"])
    assert len(names) == 3
    for o in names:
        name = o["metadata"]["name"]
        obj = wait_ready(name, namespace)
        assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
        assert obj["status"]["lastSyncTime"]
        assert "orchard.dev/source-row" in obj["metadata"]["finalizers"]
        row = sql(backends["ORCHARD_DATABASE_URL"], f"SELECT protocol, url, settings FROM upstream_sources WHERE name = '{name}'")
        protocol, url, settings = row.split("|", 2)
        assert (protocol, url) == (o["spec"]["protocol"], o["spec"]["url"])
        assert json.loads(settings)["owner"] == f"{namespace}/{name}"
        assert "example-token-value" not in settings
    table = kubectl("get", "upsrc", namespace=namespace).stdout
    assert "PROTOCOL" in table and "READY" in table and "True" in table, table


def test_a_new_source_is_served_within_a_second(operator, replica, backends, namespace, fault):
    path = "/sources/fresh/simple/demo-project/"
    assert http(replica.url + path)[0] == 404
    applied = time.time()
    kubectl("apply", "-f", "-", input=source_yaml("fresh", fault.url), namespace=namespace)
    wait_ready("fresh", namespace)
    synced = time.time()
    while http(replica.url + path)[0] != 200:
        assert time.time() - synced < 1.0, "the replica did not serve the new source within 1 s of Ready"
        time.sleep(0.02)
    served = time.time()
    print(f"apply → Ready {synced - applied:.3f} s; Ready → served {served - synced:.3f} s")
    generation = redis_get(backends, f"{backends['ORCHARD_CACHE_NAMESPACE']}:generation:fresh")
    assert int(generation) >= 1
    assert sql(backends["ORCHARD_DATABASE_URL"], "SELECT url FROM upstream_sources WHERE name = 'fresh'") == fault.url


def test_a_spec_change_reaches_the_replica(operator, replica, backends, namespace, fault, fault2):
    wait_ready("fresh", namespace)
    key = f"{backends['ORCHARD_CACHE_NAMESPACE']}:generation:fresh"
    before = int(redis_get(backends, key))
    path = "/sources/fresh/simple/moved-project/"
    fault2.reset()
    obj = get("upstreamsource", "fresh", namespace)
    kubectl("patch", "upstreamsource", "fresh", "--type=merge", "-p", json.dumps({"spec": {"url": fault2.url}}),
            namespace=namespace)
    wait_ready("fresh", namespace, generation=obj["metadata"]["generation"] + 1)
    synced = time.time()
    while True:
        status = http(replica.url + path)[0]
        if status == 200 and fault2.counts().get("/simple/moved-project/"):
            break
        assert time.time() - synced < 1.0, "the replica did not use the new URL within 1 s"
        time.sleep(0.02)
    assert int(redis_get(backends, key)) == before + 1
    assert sql(backends["ORCHARD_DATABASE_URL"], "SELECT url FROM upstream_sources WHERE name = 'fresh'") == fault2.url


def test_credentials_come_from_the_secret_and_are_never_shown(operator, replica, backends, namespace, fault, tmp):
    token1, token2 = "tok-one-2f9a61c0", "tok-two-7b1e44d3"
    http(f"{fault.base}/__bearer/{token1}", method="POST", data=b"")
    kubectl("create", "secret", "generic", "private-token", f"--from-literal=token={token1}", namespace=namespace)
    kubectl("label", "secret", "private-token", "orchard.dev/upstream-credentials=true", namespace=namespace)
    extra = "  credentialsSecretRef:\n    name: private-token\n    type: bearer\n"
    kubectl("apply", "-f", "-", input=source_yaml("private", fault.url, extra=extra), namespace=namespace)
    wait_ready("private", namespace)
    assert http(f"{fault.url}private-lib/")[0] == 401, "the upstream really requires the token"
    path = "/sources/private/simple/private-lib/"
    deadline = time.time() + 5
    while http(replica.url + path)[0] != 200:
        assert time.time() < deadline, "the replica never authenticated to the upstream"
        time.sleep(0.05)

    # Rotation: the Secret changes, the upstream now wants the new token; the Secret
    # watch re-reconciles, the row's sealed value and the generation change.
    key = f"{backends['ORCHARD_CACHE_NAMESPACE']}:generation:private"
    before = int(redis_get(backends, key))
    sealed_before = sql(backends["ORCHARD_DATABASE_URL"], "SELECT settings FROM upstream_sources WHERE name = 'private'")
    http(f"{fault.base}/__bearer/{token2}", method="POST", data=b"")
    doc = kubectl("create", "secret", "generic", "private-token", f"--from-literal=token={token2}",
                  "--dry-run=client", "-o", "yaml", namespace=namespace).stdout
    kubectl("apply", "-f", "-", input=doc, namespace=namespace)
    deadline = time.time() + 10
    while int(redis_get(backends, key) or 0) == before:
        assert time.time() < deadline, "a Secret change did not re-reconcile the source"
        time.sleep(0.05)
    settings = sql(backends["ORCHARD_DATABASE_URL"], "SELECT settings FROM upstream_sources WHERE name = 'private'")
    assert settings != sealed_before
    deadline = time.time() + 5
    while http(replica.url + "/sources/private/simple/private-other/")[0] != 200:
        assert time.time() < deadline, "the replica did not pick up the rotated token"
        time.sleep(0.05)

    # Nowhere to be seen: status, events, the row, logs, metrics.
    shown = [
        json.dumps(get("upstreamsource", "private", namespace)),
        kubectl("get", "events", "-o", "json", namespace=namespace).stdout,
        settings,
        operator.log.read_text(),
        replica.log.read_text(),
        json.dumps(operator.metrics()),
        http(f"{replica.admin}/metrics")[2].decode(),
    ]
    for text in shown:
        for secret in (token1, token2, base64.b64encode(token1.encode()).decode(), base64.b64encode(token2.encode()).decode()):
            assert secret not in text


def test_a_missing_secret_is_reported_then_picked_up(operator, namespace, backends):
    extra = "  credentialsSecretRef:\n    name: later-token\n    type: basic\n"
    kubectl("apply", "-f", "-", input=source_yaml("later", "https://upstream.example/later/", extra=extra),
            namespace=namespace)
    obj = wait_ready("later", namespace, status="False", reason="SecretNotFound")
    assert '"later-token"' in ready(obj)["message"]
    events = kubectl("get", "events", "--field-selector", "involvedObject.name=later", "-o", "json", namespace=namespace)
    assert any(e["reason"] == "SecretNotFound" and e["type"] == "Warning" for e in json.loads(events.stdout)["items"])
    kubectl("create", "secret", "generic", "later-token", "--from-literal=username=ci", namespace=namespace)
    wait_ready("later", namespace, status="False", reason="SecretNotLabelled")
    kubectl("label", "secret", "later-token", "orchard.dev/upstream-credentials=true", namespace=namespace)
    wait_ready("later", namespace, status="False", reason="SecretKeyMissing")
    doc = kubectl("create", "secret", "generic", "later-token", "--from-literal=username=ci",
                  "--from-literal=password=pw-5511", "--dry-run=client", "-o", "yaml", namespace=namespace).stdout
    kubectl("apply", "-f", "-", input=doc, namespace=namespace)
    wait_ready("later", namespace, status="True", timeout=15)
    assert sql(backends["ORCHARD_DATABASE_URL"], "SELECT count(*) FROM upstream_sources WHERE name = 'later'") == "1"


def test_delete_removes_the_source(operator, replica, backends, namespace, fault):
    kubectl("apply", "-f", "-", input=source_yaml("doomed", fault.url), namespace=namespace)
    wait_ready("doomed", namespace)
    path = "/sources/doomed/simple/demo-project/"
    deadline = time.time() + 5
    while http(replica.url + path)[0] != 200:
        assert time.time() < deadline
        time.sleep(0.05)
    kubectl("delete", "upstreamsource", "doomed", "--timeout=20s", namespace=namespace)
    gone = time.time()
    while http(replica.url + path)[0] != 404:
        assert time.time() - gone < 1.0, "the replica still serves a deleted source after 1 s"
        time.sleep(0.02)
    assert get("upstreamsource", "doomed", namespace) is None
    assert sql(backends["ORCHARD_DATABASE_URL"], "SELECT count(*) FROM upstream_sources WHERE name = 'doomed'") == "0"


def test_operator_metrics(operator, namespace):
    wait_ready("fresh", namespace)
    m = operator.metrics()
    assert m['orchard_operator_reconciles_total{result="success"}'] >= 5
    assert m["orchard_operator_reconcile_duration_seconds_count"] >= 5
    assert m["orchard_operator_invalidation_lag_seconds_count"] >= 4
    assert m['orchard_operator_reconcile_failures_total{reason="SecretNotFound"}'] >= 1
    assert m["orchard_operator_leader"] == 1


def test_only_the_lease_holder_reconciles_and_a_follower_takes_over(tmp, backends, cluster):
    ns = new_namespace()
    a = Operator(tmp, backends, ns, "op-a").start()
    deadline = time.time() + 10
    while a.metrics()["orchard_operator_leader"] != 1:
        assert time.time() < deadline
        time.sleep(0.05)
    b = Operator(tmp, backends, ns, "op-b").start()
    try:
        kubectl("apply", "-f", "-", input=source_yaml("led-one", "https://upstream.example/one/"), namespace=ns)
        wait_ready("led-one", ns)
        lease = get("lease", "orchard-operator", ns)
        assert lease["spec"]["holderIdentity"] == "op-a"
        time.sleep(1.5)  # b keeps trying every lease/3 = 1 s
        mb = b.metrics()
        assert mb["orchard_operator_leader"] == 0
        assert mb.get('orchard_operator_reconciles_total{result="success"}', 0) == 0

        a.kill()  # no release: b must wait for the Lease to expire (3 s)
        killed = time.time()
        kubectl("apply", "-f", "-", input=source_yaml("led-two", "https://upstream.example/two/"), namespace=ns)
        wait_ready("led-two", ns, timeout=20)
        print(f"follower took over and reconciled {time.time() - killed:.1f} s after the leader died")
        assert get("lease", "orchard-operator", ns)["spec"]["holderIdentity"] == "op-b"
        assert b.metrics()["orchard_operator_leader"] == 1

        b.stop()  # a clean stop releases the Lease
        assert not get("lease", "orchard-operator", ns)["spec"].get("holderIdentity")
    finally:
        b.stop()
        a.stop()
