#!/usr/bin/env python3
"""Writes the fuzz targets' seed inputs into corpus/<target>/ from the project's own reviews: samples/,
the matchConditions fixtures of tests/fixtures/match/ (their `review`), variants of each that reach the
other operations and annotations, and the history annotations they carry. Run from anywhere; files are
named by content, so running it again adds nothing new."""
import copy, hashlib, json, pathlib

root = pathlib.Path(__file__).resolve().parent.parent
out = root / "fuzz" / "corpus"
HISTORY = "stage-guard.io/history"
OVERRIDE = "stage-guard.io/override-reason"


def write(target, data):
    d = out / target
    d.mkdir(parents=True, exist_ok=True)
    (d / ("seed-" + hashlib.sha1(data).hexdigest()[:16])).write_bytes(data)


def reviews():
    for f in sorted((root / "samples").glob("*.json")):
        yield json.loads(f.read_text())
    for f in sorted((root / "tests" / "fixtures" / "match").glob("*.json")):
        yield json.loads(f.read_text())["review"]


def variants(review):
    yield review
    req = review.get("request", {})
    for op in ("CREATE", "UPDATE", "DELETE", "CONNECT"):
        v = copy.deepcopy(review)
        v["request"]["operation"] = op
        yield v
    v = copy.deepcopy(review)
    meta = v["request"].setdefault("object", {}).setdefault("metadata", {})
    meta.setdefault("annotations", {})[OVERRIDE] = "stuck after a failed QA run"
    v["request"]["userInfo"] = {"username": "alice", "groups": ["system:masters"]}
    yield v
    v = copy.deepcopy(review)
    meta = v["request"].setdefault("object", {}).setdefault("metadata", {})
    meta.setdefault("labels", {})["workflows.argoproj.io/resubmitted-from-workflow"] = "wf-1"
    if req.get("oldObject") is not None:
        v["request"]["object"]["metadata"]["resourceVersion"] = "1"
    yield v


histories = set()
for review in reviews():
    for v in variants(review):
        write("decode", json.dumps(v, separators=(",", ":")).encode())
        write("answer", json.dumps(v, separators=(",", ":")).encode())
    for side in ("object", "oldObject"):
        obj = review["request"].get(side) or {}
        h = ((obj.get("metadata") or {}).get("annotations") or {}).get(HISTORY)
        if h is not None:
            histories.add(h)
histories |= {
    "[]",
    '[{"from":null,"to":"a","at":"2026-11-26T09:22:46Z","by":"u"}]',
    '[{"from":"a","to":"b","at":"2026-11-26T10:01:12.5Z","by":"alice","override":"QA re-run"}]',
    '[{"from":"a","to":null,"at":"2026-11-26T10:01:12+01:00","by":""}]',
    '[{"from":"a","to":"b","at":"yesterday","by":"u"}]',
    '[{"to":"b","at":"2026-11-26T10:01:12Z","by":"u"}]',
}
for h in sorted(histories):
    write("history", h.encode())
