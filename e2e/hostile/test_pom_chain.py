"""An endless POM parent chain: one POM request makes one extraction, which loads a
bounded number of parents (100) through Orchard; the parents it stores do not start
extractions of their own, so the upstream traffic stops instead of growing."""
import time

from conftest import TOKEN, Orchard, http


def chain_requests(hostile):
    return [p for p, _ in hostile.seen() if p.startswith("/m2/org/evil/chain/") and p.endswith(".pom")]


def test_an_endless_parent_chain_is_bounded(tmp, hostile):
    path = tmp / "chain.yaml"
    path.write_text(f"""- name: evilmaven
  protocol: maven
  url: {hostile.url}/m2/
  credentials: {{type: bearer, secretEnv: HOSTILE_TOKEN}}
""")
    o = Orchard(tmp, {"ORCHARD_UPSTREAMS_FILE": str(path), "HOSTILE_TOKEN": TOKEN}).start()
    try:
        status, _, _ = http(f"{o.url}/maven/org/evil/chain/0/chain-0.pom")
        assert status == 200
        # wait until the extraction has given up and the traffic has stopped
        last, stable_since = -1, time.time()
        deadline = time.time() + 120
        while time.time() - stable_since < 3:
            assert time.time() < deadline, f"still growing: {len(chain_requests(hostile))} POM requests"
            n = len(chain_requests(hostile))
            if n != last:
                last, stable_since = n, time.time()
            time.sleep(0.2)
        assert last <= 101, f"{last} POMs fetched for one request"
        assert any("chain-0.pom" in l and "dependencies not extracted" in l for l in o.log.read_text().splitlines())
    finally:
        o.stop()
