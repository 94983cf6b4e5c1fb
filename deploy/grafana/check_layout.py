"""Layout and query checks of a Grafana dashboard JSON (see check.sh). usage: check_layout.py FILE"""
import json
import re
import sys

ALLOWED_VARIABLES = {"$job", "$__rate_interval", "${datasource}"}


def main(path):
    d = json.load(open(path))
    errors = []
    if d.get("uid") != "imagesearch":
        errors.append(f"uid is {d.get('uid')!r}, not 'imagesearch' (links and provisioning use it)")
    names = {v["name"] for v in d["templating"]["list"]}
    if names != {"datasource", "job"}:
        errors.append(f"variables {sorted(names)}, expected datasource and job")
    ids, cells, queries = set(), {}, 0
    for p in d["panels"]:
        title = p.get("title", "?")
        if p["id"] in ids:
            errors.append(f"{title}: id {p['id']} used twice")
        ids.add(p["id"])
        g = p["gridPos"]
        if g["x"] < 0 or g["w"] <= 0 or g["x"] + g["w"] > 24 or g["h"] <= 0:
            errors.append(f"{title}: gridPos {g} outside the 24-column grid")
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                if (x, y) in cells:
                    errors.append(f"{title}: overlaps {cells[(x, y)]} at column {x}, row {y}")
                    break
                cells[(x, y)] = title
            else:
                continue
            break
        if p["type"] == "row":
            continue
        if p.get("datasource", {}).get("uid") != "${datasource}":
            errors.append(f"{title}: datasource is not the ${{datasource}} variable")
        if not p.get("targets"):
            errors.append(f"{title}: no queries")
        refs = [t.get("refId") for t in p.get("targets", [])]
        if len(set(refs)) != len(refs) or None in refs:
            errors.append(f"{title}: refIds {refs} missing or repeated")
        for t in p.get("targets", []):
            expr = t.get("expr", "")
            queries += 1
            if not expr.strip():
                errors.append(f"{title} {t.get('refId')}: empty expression")
            if "imagesearch_" not in expr and "up{" not in expr:
                errors.append(f"{title} {t.get('refId')}: queries no imagesearch metric: {expr}")
            for var in re.findall(r"\$\{?\w+\}?", expr):
                if var not in ALLOWED_VARIABLES:
                    errors.append(f"{title} {t.get('refId')}: unknown variable {var} in {expr}")
            if "imagesearch_" in expr and 'job=~"$job"' not in expr:
                errors.append(f"{title} {t.get('refId')}: not filtered by the job variable: {expr}")
    if errors:
        print("FAIL  " + "\n      ".join(errors))
        sys.exit(1)
    print(f"ok    imagesearch.json: {len(d['panels'])} panels, {queries} queries, grid and variables consistent")


if __name__ == "__main__":
    main(sys.argv[1])
