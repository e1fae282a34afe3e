#!/usr/bin/env python3
"""Helpers of `.ci/conformance`: ports, readiness, Writ's test agent, and the score summary.

    harness.py free-port
    harness.py wait-http URL [SECONDS]
    harness.py wait-upstream WRIT_URL CONNECTOR [SECONDS]
    harness.py delegate WRIT_URL CONNECTOR          (admin key in $WRIT_ADMIN_KEY; prints a token)
    harness.py check-declared SCHEMA CONNECTOR      (every upstream tool is a declared action)
    harness.py summarize OUT_DIR RUN...             (RUN = id:suite-dir:requirements-file-or-"-")
    harness.py digest LOG.jsonl [TEXT]              (one line per request in an auth_proxy.py log)

Only the standard library; the summary reads the suite's own result files
(`<out>/<target>/<run>/server-<scenario>-<time>/checks.json`).
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent


def free_port() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        print(s.getsockname()[1])


def wait_http(url: str, seconds: float = 30) -> None:
    """Until something answers HTTP at `url` (any status)."""
    deadline = time.monotonic() + seconds
    last = ""
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return
        except OSError as e:
            last = str(e)
            time.sleep(0.2)
    sys.exit(f"nothing answered at {url} within {seconds:.0f} s: {last}")


def call(base: str, method: str, path: str, token: str | None, body=None, form=None):
    data = None
    headers = {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if form is not None:
        data = urllib.parse.urlencode(form).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    req = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw)
        except ValueError:
            return e.code, raw.decode(errors="replace")


def wait_upstream(base: str, connector: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    status = None
    while time.monotonic() < deadline:
        try:
            _, ready = call(base, "GET", "/readyz", None)
            status = (ready or {}).get("connectors", {}).get(connector)
            if status and status.get("state") == "ready":
                print(f"upstream {connector} ready in Writ: {json.dumps(status)}")
                return
        except OSError:
            pass
        time.sleep(0.2)
    sys.exit(f"Writ did not connect its upstream {connector} within {seconds:.0f} s: {status}")


def delegate(base: str, connector: str) -> None:
    """A user, their agent, a grant for every tool of the connector, and a delegated token."""
    admin = os.environ["WRIT_ADMIN_KEY"]

    def ok(answer, want):
        status, body = answer
        if status != want:
            sys.exit(f"Writ answered {status} where {want} was expected: {body}")
        return body

    user = ok(call(base, "POST", "/v1/admin/users", admin, {"id": "conformance-user", "groups": ["eng"]}), 201)
    user_key = user["api_key"]
    agent = ok(call(base, "POST", "/v1/admin/agents", user_key, {"id": "conformance-agent"}), 201)
    grant = ok(
        call(
            base,
            "POST",
            "/v1/grants",
            user_key,
            {"agent": "conformance-agent", "actions": [f"{connector}.*"], "expires_in": 86400},
        ),
        201,
    )
    token = ok(
        call(
            base,
            "POST",
            "/oauth/token",
            None,
            form={
                "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
                "subject_token": user_key,
                "subject_token_type": "urn:writ:params:oauth:token-type:api-key",
                "actor_token": agent["api_key"],
                "actor_token_type": "urn:writ:params:oauth:token-type:api-key",
                "authorization_details": json.dumps([{"type": "writ_grant", "grant_id": grant["id"]}]),
            },
        ),
        200,
    )
    print(token["access_token"])


def check_declared(schema: str, connector: str) -> None:
    """Every tool of upstream.py is an action `<connector>.<tool>` of the policy schema, so that
    a failure through Writ is never just a missing declaration."""
    sys.path.insert(0, str(HERE))
    import upstream  # noqa: PLC0415

    declared = set(re.findall(rf'action "{re.escape(connector)}\.([^"]+)" in', Path(schema).read_text()))
    tools = set(upstream.TOOLS)
    missing, extra = sorted(tools - declared), sorted(declared - tools)
    if missing or extra:
        sys.exit(
            f"{schema} and upstream.py disagree: tools not declared {missing}, declared but not tools {extra}"
        )
    print(f"all {len(tools)} upstream tools are declared in the policy schema")


# --- the summary ---------------------------------------------------------------------------------


def scored_list(requirements: str) -> tuple[list[str] | None, dict[str, str]]:
    """The `server:` list of a requirements file and the reasons of its `not_scored` server
    entries (a minimal reader for the suite's own YAML layout)."""
    if requirements in ("", "-"):
        return None, {}
    scored: list[str] = []
    not_scored: dict[str, str] = {}
    section = None
    entry: dict[str, str] = {}
    for line in Path(requirements).read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line.startswith(" "):
            section = line.rstrip(":").strip()
            continue
        item = line.strip()
        if section == "server" and item.startswith("- "):
            scored.append(item[2:].strip())
        elif section == "not_scored":
            if item.startswith("- scenario:"):
                entry = {"scenario": item.split(":", 1)[1].strip()}
            elif item.startswith("leg:"):
                entry["leg"] = item.split(":", 1)[1].strip()
            elif item.startswith("reason:"):
                entry["reason"] = item.split(":", 1)[1].strip()
                if entry.get("leg") == "server":
                    not_scored[entry["scenario"]] = entry["reason"]
    return scored, not_scored


def read_run(directory: Path) -> dict[str, list[dict]]:
    """scenario → its checks, from the suite's result directories."""
    out: dict[str, list[dict]] = {}
    if not directory.is_dir():
        return out
    for sub in sorted(directory.iterdir()):
        m = re.match(r"server-(.+)-\d{4}-\d{2}-\d{2}T[\d-]+Z$", sub.name)
        checks = sub / "checks.json"
        if m and checks.is_file():
            out[m.group(1)] = json.loads(checks.read_text())
    return out


def verdict(checks: list[dict] | None) -> dict:
    if checks is None:
        return {"result": "not run", "passed": 0, "failed": 0, "failures": [], "warnings": []}
    failures = [
        {"check": c.get("id"), "message": (c.get("errorMessage") or c.get("description") or "").strip()}
        for c in checks
        if c.get("status") == "FAILURE"
    ]
    passed = sum(1 for c in checks if c.get("status") == "SUCCESS")
    warnings = [
        {"check": c.get("id"), "message": (c.get("errorMessage") or c.get("description") or "").strip()}
        for c in checks
        if c.get("status") == "WARNING"
    ]
    return {
        "result": "fail" if failures else "pass",
        "passed": passed,
        "failed": len(failures),
        "failures": failures,
        "warnings": warnings,
    }


TARGET_LABELS = {
    "direct": "direct",
    "writ": "through Writ",
    "writ-names-kept": "through Writ, names mapped by the proxy (diagnosis, not a score)",
}


def summarize(out_dir: str, runs: list[str]) -> None:
    out = Path(out_dir)
    targets = os.environ.get("WRIT_CONFORMANCE_TARGETS", "direct writ").split()
    summary = {"runs": [], "min": {}, "ok": True, "problems": []}
    table: list[str] = []
    for spec in runs:
        run_id, suite_dir, requirements = spec.split(":", 2)
        version = json.loads((Path(suite_dir) / "package.json").read_text())["version"]
        scored, not_scored = scored_list(requirements)
        results = {t: read_run(out / t / run_id) for t in targets}
        names = list(dict.fromkeys([*(scored or []), *(n for t in targets for n in results[t])]))
        rows = []
        totals = {t: {"scenarios": 0, "scenarios_passed": 0, "checks": 0, "checks_passed": 0} for t in targets}
        for name in names:
            is_scored = name in scored if scored is not None else True
            row: dict = {"scenario": name, "scored": is_scored}
            for t in targets:
                row[t] = verdict(results[t].get(name))
            if not is_scored:
                row["not_scored_reason"] = not_scored.get(name, "not in the requirements")
            rows.append(row)
            if is_scored:
                for t in targets:
                    v = row[t]
                    totals[t]["scenarios"] += 1
                    totals[t]["scenarios_passed"] += v["result"] == "pass"
                    totals[t]["checks"] += v["passed"] + v["failed"]
                    totals[t]["checks_passed"] += v["passed"]
        summary["runs"].append(
            {
                "id": run_id,
                "suite": f"@modelcontextprotocol/conformance@{version}",
                "requirements": Path(requirements).name if requirements not in ("", "-") else "active suite",
                **{t: totals[t] for t in targets},
                "scenarios": rows,
            }
        )
        for t in targets:
            if not results[t]:
                summary["ok"] = False
                summary["problems"].append(f"{run_id}: the suite produced no results ({TARGET_LABELS[t]})")
        d = totals["direct"]
        if d["scenarios_passed"] != d["scenarios"]:
            summary["ok"] = False
            summary["problems"].append(
                f"{run_id}: the direct run passed {d['scenarios_passed']}/{d['scenarios']} scenarios; the reference"
                " must pass them all, or the scores through Writ mean nothing"
            )
        table.append(_table(run_id, version, targets, totals, rows))
    # Thresholds: through Writ, scenarios passed on each run (the 2026-07-28 run has its own).
    for run in summary["runs"]:
        key = "WRIT_CONFORMANCE_MIN_2026" if run["id"].startswith("2026") else "WRIT_CONFORMANCE_MIN"
        minimum = int(os.environ.get(key, "0") or 0)
        summary["min"][run["id"]] = minimum
        if run["writ"]["scenarios_passed"] < minimum:
            summary["ok"] = False
            summary["problems"].append(
                f"{run['id']}: {run['writ']['scenarios_passed']} scenarios pass through Writ, fewer than {key}={minimum}"
            )
    probe = out / "probe.json"
    if probe.is_file():
        summary["probe"] = json.loads(probe.read_text())["differences"]
        table.append("\n== probe.py: what a stock client gets through Writ that it does not get directly")
        table.extend(f"- {d}" for d in summary["probe"]) if summary["probe"] else table.append("(no difference)")
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print("\n".join(table))
    print("CONFORMANCE_SUMMARY " + json.dumps(_compact(summary, targets)))
    for p in summary["problems"]:
        print(f"FAIL: {p}", file=sys.stderr)
    sys.exit(0 if summary["ok"] else 1)


def _score(t: dict) -> str:
    return f"{t['scenarios_passed']}/{t['scenarios']} scenarios, {t['checks_passed']}/{t['checks']} checks"


def _compact(summary: dict, targets: list[str]) -> dict:
    return {
        "ok": summary["ok"],
        "probe_differences": len(summary.get("probe", [])),
        "runs": {
            r["id"]: {"suite": r["suite"], **{t: _score(r[t]) for t in targets}} for r in summary["runs"]
        },
    }


def _first_failure(v: dict, limit: int = 100) -> str:
    if not v["failures"]:
        return ""
    f = v["failures"][0]
    reason = f"{f['check']}: {' '.join(f['message'].split())}"
    return reason if len(reason) <= limit else reason[: limit - 3] + "..."


def _table(run_id: str, version: str, targets: list[str], totals: dict, rows: list[dict]) -> str:
    width = max([len(r["scenario"]) + 2 for r in rows] + [10])
    def mark(v: dict) -> str:
        if v["result"] == "pass" and v["warnings"]:
            return "pass~"
        return {"pass": "pass", "fail": "FAIL", "not run": "-"}[v["result"]]

    kept = "writ-names-kept" in targets
    lines = [
        "",
        f"== {run_id} (@modelcontextprotocol/conformance@{version})",
        f"{'scenario':<{width}}  direct  writ   " + ("names† " if kept else "") + "first failure through Writ",
    ]
    for r in rows:
        name = r["scenario"] + ("" if r["scored"] else " *")
        cells = f"{name:<{width}}  {mark(r['direct']):<8}{mark(r['writ']):<7}"
        if kept:
            cells += f"{mark(r['writ-names-kept']):<7}"
        lines.append(cells + _first_failure(r["writ"]))
        if kept and r["writ-names-kept"]["failures"] and _first_failure(r["writ-names-kept"]) != _first_failure(r["writ"]):
            lines.append(" " * (width + 2 + 8 + 7 + 7) + "† " + _first_failure(r["writ-names-kept"]))
    for t in targets:
        lines.append(f"{TARGET_LABELS[t]}: {_score(totals[t])}")
    if any(not r["scored"] for r in rows):
        lines.append("* not scored for this revision (run for visibility; not counted)")
    lines.append("pass~: passed with warnings (SHOULD-level checks the suite does not count as failures)")
    return "\n".join(lines)


def digest(log: str, grep: str = "") -> None:
    """One line per JSON-RPC request in an auth_proxy.py log: method (and tool or URI), the HTTP
    status, and what came back (result keys, error, notifications on the same stream)."""
    rows = [json.loads(line) for line in Path(log).read_text().splitlines() if line.strip()]
    by_conn: dict[int, list[dict]] = {}
    for r in rows:
        by_conn.setdefault(r["conn"], []).append(r)
    lines = []
    for conn, events in by_conn.items():
        current = None
        for e in events:
            if e["what"] == "request":
                if current:
                    lines.append(current)
                body = e.get("body") if isinstance(e.get("body"), dict) else {}
                params = body.get("params") if isinstance(body.get("params"), dict) else {}
                what = body.get("method") or ("answer to id %s" % body.get("id") if body else e["line"].split(" ")[0])
                target = params.get("name") or params.get("uri") or ""
                version = e["headers"].get("mcp-protocol-version") or e["headers"].get("MCP-Protocol-Version") or ""
                current = {"t": e["t"], "conn": conn, "req": f"{what} {target}".strip(), "v": version, "status": "", "got": []}
            elif current is None:
                continue
            elif e["what"] == "response":
                current["status"] = e["line"].split(" ", 2)[1]
            elif e["what"] in ("message", "event"):
                b = e["body"]
                if isinstance(b, dict) and "method" in b:
                    current["got"].append(b["method"] + (f"#{b.get('id')}" if "id" in b else ""))
                elif isinstance(b, dict) and isinstance(b.get("error"), dict):
                    current["got"].append(f"error {b['error'].get('code')} {json.dumps(b['error'].get('message'))[:160]}")
                elif isinstance(b, dict) and "error" in b:
                    current["got"].append("body " + json.dumps(b)[:200])
                elif isinstance(b, dict) and isinstance(b.get("result"), dict):
                    r = b["result"]
                    keys = ",".join(sorted(r))
                    extra = ""
                    if r.get("isError"):
                        extra = " isError " + json.dumps(r.get("content"))[:160]
                    elif "resultType" in r:
                        extra = f" resultType={r['resultType']}"
                    current["got"].append(f"result{{{keys}}}{extra}")
            elif e["what"] == "body" and e.get("text"):
                current["got"].append("text " + json.dumps(e["text"][:160]))
        if current:
            lines.append(current)
    for c in sorted(lines, key=lambda c: c["t"]):
        line = f"[{c['conn']}] {c['req']} (v {c['v'] or '-'}) -> {c['status']} {'; '.join(c['got'])}"
        if grep in line:
            print(line)


def main() -> None:
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "free-port":
        free_port()
    elif cmd == "wait-http":
        wait_http(args[0], float(args[1]) if len(args) > 1 else 30)
    elif cmd == "wait-upstream":
        wait_upstream(args[0], args[1], float(args[2]) if len(args) > 2 else 60)
    elif cmd == "delegate":
        delegate(args[0], args[1])
    elif cmd == "check-declared":
        check_declared(args[0], args[1])
    elif cmd == "summarize":
        summarize(args[0], args[1:])
    elif cmd == "digest":
        digest(args[0], args[1] if len(args) > 1 else "")
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
